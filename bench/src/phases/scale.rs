//! Measure 5, scale: how throughput and memory of our binaries change with
//! the number of documents (`--scale-docs`, 10k to 1M in a full run) and
//! with the number of partitions and es-sync instances
//! (`--scale-partitions`: one instance per partition, one group).
//!
//! These runs compare our binaries with themselves, so they run without
//! baselines, one trial a point. They read from the fastest
//! MongoDB-protocol server of the run (the Rust SecantusDB when
//! installed), and each point drops its database and indices afterwards so
//! that the servers start every point in the same state.

use crate::ctx::Ctx;
use crate::log::log;
use crate::ours;
use crate::phases::source::{self, Seeded};
use crate::phases::sync;
use crate::process::procmon;
use crate::stats::{rate, round};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Runs both scale measures; failures are recorded per point.
pub async fn run(cx: &Ctx, tag: &str) -> Value {
    let uri =
        cx.o.mongo_rs_uri
            .clone()
            .unwrap_or_else(|| cx.o.mongo_uri.clone());
    let mut docs_points = vec![];
    for &n in &cx.o.scale_docs {
        let t = format!("{tag}d{n}");
        let point = docs_point(cx, &uri, &t, n).await.unwrap_or_else(|e| {
            log(&format!("[{t}] scale point failed: {e:#}"));
            json!({"documents": n, "error": format!("{e:#}")})
        });
        docs_points.push(point);
    }
    let mut part_points = vec![];
    for &p in &cx.o.scale_partitions {
        let t = format!("{tag}p{p}");
        let point = partitions_point(cx, &uri, &t, p).await.unwrap_or_else(|e| {
            log(&format!("[{t}] scale point failed: {e:#}"));
            json!({"partitions": p, "error": format!("{e:#}")})
        });
        part_points.push(point);
    }
    json!({"server": uri, "documents": docs_points, "partitions": part_points})
}

fn strip_series(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("series");
        m.remove("profile");
    }
    v
}

/// One document count: mongo-source then one es-sync, `--partitions`.
async fn docs_point(cx: &Ctx, uri: &str, tag: &str, n: u64) -> Result<Value> {
    let (db, _) = source::seed_db(cx, uri, tag, n).await?;
    let src = source::trial(cx, &db, &db.names, tag, None).await;
    let alias = format!("{}-s", db.names.prefix);
    let snk = match &src {
        Ok(_) => Some(sync::trial(cx, &db.names, n, &alias, tag, None).await),
        Err(_) => None,
    };
    cleanup(cx, &db, &alias).await;
    Ok(json!({
        "documents": n,
        "mongo_source": strip_series(src?),
        "es_sync": strip_series(snk.transpose()?.unwrap_or(Value::Null)),
    }))
}

/// One partition count: mongo-source into `p` partitions, then `p`
/// es-sync instances in one group.
async fn partitions_point(cx: &Ctx, uri: &str, tag: &str, p: i32) -> Result<Value> {
    let n = cx.o.scale_partition_docs;
    let (db, _) = source::seed_db(cx, uri, tag, n).await?;
    let mut pcx_o = cx.o.clone();
    pcx_o.partitions = p;
    let pcx = Ctx::new(pcx_o)?;
    let src = source::trial(&pcx, &db, &db.names, tag, None).await;
    let alias = format!("{}-s", db.names.prefix);
    let snk = match &src {
        Ok(_) => Some(sync_instances(&pcx, &db, &alias, tag, usize::try_from(p)?).await),
        Err(_) => None,
    };
    cleanup(cx, &db, &alias).await;
    Ok(json!({
        "partitions": p,
        "documents": n,
        "mongo_source": strip_series(src?),
        "es_sync": snk.transpose()?.unwrap_or(Value::Null),
    }))
}

/// `k` es-sync instances in one group over the topics of `db`: documents/s
/// of the group (sum of their counters, first document to last) and each
/// instance's memory. The first instance starts alone and bootstraps the
/// aliases; the others join once it is ready.
async fn sync_instances(cx: &Ctx, db: &Seeded, alias: &str, tag: &str, k: usize) -> Result<Value> {
    let n = db.docs;
    let group = format!("{alias}-g");
    let t_spawn = Instant::now();
    let mut children = vec![];
    for i in 0..k {
        let mut child =
            ours::spawn_sync(cx, &db.names, &group, alias, &format!("{tag}-{i}"), None)?;
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
            ch.check_alive("es-sync")?;
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
        instances.push(u.json());
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
async fn cleanup(cx: &Ctx, db: &Seeded, alias: &str) {
    if let Ok(c) = mongodb::Client::with_uri_str(&db.uri).await {
        let _ = c.database(&db.names.db).drop().await;
    }
    cx.es.delete_indices(alias).await;
}
