//! Measure 5, scale: how throughput and memory of our binaries change with
//! the number of documents (`--scale-docs`, 10k to 1M in a full run) and
//! with the number of partitions and es-sync instances
//! (`--scale-partitions`, 1, 3, 6: one instance per partition, one group).
//!
//! These runs compare our binaries with themselves, so the phases run
//! without their baselines. They read from the fastest MongoDB-protocol
//! server of the run (the Rust SecantusDB when installed), and each point
//! drops its database and indices afterwards so that the servers start
//! every point in the same state.

use crate::{
    log, phase_source, phase_sync, procmon, rate, round, spawn_es_sync, usage_json, Names, Opts,
};
use anyhow::{bail, Context as _, Result};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Runs both scale measures; failures are recorded per point.
pub async fn run(o: &Opts, tag: &str) -> Value {
    let uri = o
        .mongo_rs_uri
        .clone()
        .unwrap_or_else(|| o.mongo_uri.clone());
    let mut docs_points = vec![];
    for &n in &o.scale_docs {
        let mut o2 = o.clone();
        o2.docs = n;
        o2.baselines = false;
        let t = format!("{tag}d{n}");
        let point = match docs_point(&o2, &uri, &t).await {
            Ok(v) => v,
            Err(e) => {
                log(&format!("[{t}] scale point failed: {e:#}"));
                json!({"documents": n, "error": format!("{e:#}")})
            }
        };
        docs_points.push(point);
    }
    let mut part_points = vec![];
    for &p in &o.scale_partitions {
        let mut o2 = o.clone();
        o2.docs = o.scale_partition_docs;
        o2.partitions = p;
        o2.baselines = false;
        let t = format!("{tag}p{p}");
        let point = match partitions_point(&o2, &uri, &t).await {
            Ok(v) => v,
            Err(e) => {
                log(&format!("[{t}] scale point failed: {e:#}"));
                json!({"partitions": p, "error": format!("{e:#}")})
            }
        };
        part_points.push(point);
    }
    json!({"server": uri, "documents": docs_points, "partitions": part_points})
}

/// One document count: mongo-source then one es-sync, 3 partitions.
async fn docs_point(o: &Opts, uri: &str, tag: &str) -> Result<Value> {
    let src = phase_source(o, uri, tag, true).await?;
    let snk = phase_sync(o, tag, &src).await;
    cleanup(o, uri, &src).await;
    let snk = snk?;
    Ok(json!({
        "documents": o.docs,
        "mongo_source": strip_series(&src["mongo_source"]),
        "es_sync": strip_series(&snk["es_sync"]),
    }))
}

/// One partition count: mongo-source into `p` partitions, then `p`
/// es-sync instances in one group.
async fn partitions_point(o: &Opts, uri: &str, tag: &str) -> Result<Value> {
    let src = phase_source(o, uri, tag, true).await?;
    let snk = sync_instances(o, tag, &src, usize::try_from(o.partitions)?).await;
    cleanup(o, uri, &src).await;
    Ok(json!({
        "partitions": o.partitions,
        "documents": o.docs,
        "mongo_source": strip_series(&src["mongo_source"]),
        "es_sync": snk?,
    }))
}

fn strip_series(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("series");
    }
    v
}

fn names_of(src: &Value) -> Result<Names> {
    Ok(Names {
        db: src["names"]["db"].as_str().context("db")?.to_string(),
        prefix: src["names"]["prefix"]
            .as_str()
            .context("prefix")?
            .to_string(),
    })
}

/// `k` es-sync instances in one group over the topics of `src`: documents/s
/// of the group (sum of their counters, first document to last) and each
/// instance's memory. The first instance starts alone and bootstraps the
/// aliases; the others join once it is ready.
async fn sync_instances(o: &Opts, tag: &str, src: &Value, k: usize) -> Result<Value> {
    let names = names_of(src)?;
    let n = o.docs;
    let group = format!("{}-sync", names.prefix);
    let t_spawn = Instant::now();
    let mut children = vec![];
    for i in 0..k {
        let mut child = spawn_es_sync(o, &names, &group, &format!("{tag}-{i}")).await?;
        if i == 0 {
            child
                .wait_ready("es-sync", Duration::from_secs(120))
                .await?;
        }
        children.push(child);
    }
    let before: Vec<procmon::Sample> = children.iter().map(|c| c.mon.now()).collect();
    let (mut first, mut first_count) = (None, 0.0);
    let done_at;
    loop {
        let mut c = 0.0;
        for ch in &children {
            c += ch.metric("es_sync_documents_total").await;
        }
        let t = t_spawn.elapsed().as_secs_f64();
        if c > 0.0 && first.is_none() {
            first = Some(t);
            first_count = c;
        }
        if c >= n as f64 {
            done_at = t;
            break;
        }
        for ch in &mut children {
            if let Some(st) = ch.child.try_wait()? {
                bail!("es-sync exited: {st}");
            }
        }
        if t > 1800.0 {
            bail!("es-sync group: {c} of {n} after 1800 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = first.unwrap_or(0.0);
    let ours = rate((n as f64 - first_count) as u64, done_at - f);
    let mut instances = vec![];
    for (ch, b) in children.iter().zip(&before) {
        let done = ch.metric("es_sync_documents_total").await as u64;
        let u = procmon::usage(&ch.mon.samples(), *b, ch.mon.now(), done);
        instances.push(usage_json(&u));
    }
    for ch in children {
        ch.stop().await?;
    }
    let peak = instances
        .iter()
        .filter_map(|u| u["peak_rss_mib"].as_f64())
        .fold(0.0, f64::max);
    log(&format!(
        "[{tag}] {k} es-sync instances: {ours:.0} docs/s, highest peak RSS {peak:.1} MiB"
    ));
    Ok(json!({
        "instances": k,
        "docs_per_s": round(ours, 0),
        "highest_peak_rss_mib": round(peak, 1),
        "per_instance": instances,
    }))
}

/// Drops the point's database and indices (best effort).
async fn cleanup(o: &Opts, uri: &str, src: &Value) {
    let Ok(names) = names_of(src) else { return };
    if let Ok(c) = mongodb::Client::with_uri_str(uri).await {
        let _ = c.database(&names.db).drop().await;
    }
    if let Ok(es) = crate::es::Es::new(&o.es) {
        let _ = es
            .call(Method::Delete, &format!("/{}-*", names.prefix), None)
            .await;
    }
}
