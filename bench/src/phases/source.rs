//! Source phase: `mongo-source` against the raw change-stream read (and
//! Kafka Connect with the MongoDB connector, when installed) on the same
//! seeded documents of one server.
//!
//! The documents are seeded once; every trial reads all their insert
//! events from the seed's start time: mongo-source into fresh topics
//! (exactly once, the rate of the records a read_committed consumer sees,
//! first to last), the raw read as a child process, Kafka Connect into
//! topics of its own. The warm-up round's topics are the input of the sync
//! phase.

use crate::clients::kafka;
use crate::clients::metrics::{self, MONGO_SOURCE_COLUMNS};
use crate::ctx::Ctx;
use crate::log::{log, unix_now};
use crate::ours;
use crate::peers::kafka_connect;
use crate::phases::watch::{trial_timeout, Watch};
use crate::phases::{compare, failed, merge, resources, servers_cpu};
use crate::stats::{rate, round};
use crate::templates::{start_at, Names};
use crate::{baseline, seed};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A seeded database: its names and the start time of its events.
#[derive(Clone, Debug)]
pub struct Seeded {
    /// Server URI.
    pub uri: String,
    /// Database (and the base prefix of its topics).
    pub names: Names,
    /// Seconds; every insert event is at or after it.
    pub ts: u32,
    /// Documents.
    pub docs: u64,
}

impl Seeded {
    /// As JSON (kept in the phase's result for the phases after it).
    pub fn json(&self) -> Value {
        json!({"uri": self.uri, "db": self.names.db, "prefix": self.names.prefix, "ts": self.ts, "docs": self.docs})
    }

    /// From [`Seeded::json`].
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            uri: v["uri"].as_str()?.to_string(),
            names: Names {
                db: v["db"].as_str()?.to_string(),
                prefix: v["prefix"].as_str()?.to_string(),
            },
            ts: u32::try_from(v["ts"].as_u64()?).ok()?,
            docs: v["docs"].as_u64()?,
        })
    }
}

/// Seeds `docs` documents into a fresh database `bench_{tag}`.
pub async fn seed_db(cx: &Ctx, uri: &str, tag: &str, docs: u64) -> Result<(Seeded, Value)> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let names = Names {
        db: format!("bench_{tag}"),
        prefix: format!("b{tag}"),
    };
    let ts = unix_now().saturating_sub(1);
    log(&format!("[{tag}] seeding {docs} documents"));
    let s = seed::seed(&client.database(&names.db), cx.o.seed, docs).await?;
    log(&format!(
        "[{tag}] seeded in {:.1} s ({:.0} docs/s, {:.1} MiB BSON)",
        s.secs,
        rate(docs, s.secs),
        s.bytes as f64 / 1048576.0
    ));
    let info = json!({
        "seconds": round(s.secs, 2),
        "docs_per_s": round(rate(docs, s.secs), 0),
        "bson_mib": round(s.bytes as f64 / 1048576.0, 1),
    });
    Ok((
        Seeded {
            uri: uri.to_string(),
            names,
            ts,
            docs,
        },
        info,
    ))
}

/// The phase on server `uri` (`label` names its profile); `connect` is a
/// running Kafka Connect worker, if installed.
pub async fn run(
    cx: &Ctx,
    uri: &str,
    label: &str,
    tag: &str,
    mut connect: Option<&mut kafka_connect::Worker>,
) -> Result<Value> {
    let (db, seed_info) = seed_db(cx, uri, tag, cx.o.docs).await?;
    let d = &db;
    // Warm-up round (unmeasured): the server's cache, the broker, the JVM.
    let t = format!("{tag}w");
    let warm_names = d.names.with_prefix(format!("{}w", d.names.prefix));
    let warm_ours = trial(cx, d, &warm_names, &t, None).await?;
    let warm_raw = baseline::raw_read::trial(cx, uri, &d.names.db, d.ts, &t).await?;
    let warm_kc = match connect.as_deref_mut() {
        Some(w) => Some(
            w.trial(cx, d, &format!("{}kcw", d.names.prefix))
                .await
                .unwrap_or_else(|e| failed(&e)),
        ),
        None => None,
    };
    log(&format!(
        "[{tag}] warm-up: mongo-source {} events/s, raw read {} events/s",
        warm_ours["events_per_s"], warm_raw["events_per_s"]
    ));
    let mut trials = vec![];
    for i in 0..cx.o.trials {
        let t = format!("{tag}t{i}");
        let names = d.names.with_prefix(format!("{}t{i}", d.names.prefix));
        let mut row = json!({});
        row["ours"] = trial(cx, d, &names, &t, None).await?;
        row["raw"] = baseline::raw_read::trial(cx, uri, &d.names.db, d.ts, &t)
            .await
            .unwrap_or_else(|e| failed(&e));
        if let Some(w) = connect.as_deref_mut() {
            row["kafka_connect"] = w
                .trial(cx, d, &format!("{}kc{i}", d.names.prefix))
                .await
                .unwrap_or_else(|e| failed(&e));
        }
        log(&format!(
            "[{tag}] trial {i}: mongo-source {} events/s, raw read {}, Kafka Connect {}",
            row["ours"]["events_per_s"],
            row["raw"]["events_per_s"],
            row["kafka_connect"]["events_per_s"]
        ));
        trials.push(row);
    }
    let mut profile = Value::Null;
    if let Some(dir) = &cx.o.profile_dir {
        let t = format!("{tag}p");
        let names = d.names.with_prefix(format!("{}p", d.names.prefix));
        let v = trial(cx, d, &names, &t, Some((dir, label))).await?;
        profile = v["profile"].clone();
    }
    let mut out = json!({
        "server": uri,
        "start_ts": db.ts,
        "documents": db.docs,
        "seed": seed_info,
        "seeded": db.json(),
        // The sync phase reads the warm-up round's topics.
        "names": {"db": db.names.db, "prefix": warm_names.prefix},
        "warmup": {"ours": warm_ours, "raw": warm_raw, "kafka_connect": warm_kc},
        "vs_raw": compare(&trials, "ours", "raw", "events_per_s"),
        "ours_resources": resources(&trials, "ours"),
        "raw_resources": resources(&trials, "raw"),
        "servers_cpu": {"ours": servers_cpu(&trials, "ours"), "raw": servers_cpu(&trials, "raw"), "kafka_connect": servers_cpu(&trials, "kafka_connect")},
        "profile": profile,
    });
    if connect.is_some() {
        out["vs_kafka_connect"] = compare(&trials, "ours", "kafka_connect", "events_per_s");
        out["kafka_connect_resources"] = resources(&trials, "kafka_connect");
    }
    out["trials"] = json!(trials);
    Ok(out)
}

/// The topics of the sync phases when the source phase is not run (`--phases
/// sync`): `cx.o.docs` documents seeded on `uri` and written by one
/// unmeasured mongo-source pass into fresh topics; the same keys as the
/// source phase's result (`names`, `documents`, `seeded`).
pub async fn feed(cx: &Ctx, uri: &str, tag: &str) -> Result<Value> {
    let (db, seed_info) = seed_db(cx, uri, tag, cx.o.docs).await?;
    let names = db.names.with_prefix(format!("{}w", db.names.prefix));
    let pass = trial(cx, &db, &names, &format!("{tag}w"), None).await?;
    log(&format!(
        "[{tag}] topics written for the sync phases: mongo-source {} events/s",
        pass["events_per_s"]
    ));
    Ok(json!({
        "server": uri,
        "documents": db.docs,
        "seed": seed_info,
        "seeded": db.json(),
        "names": {"db": db.names.db, "prefix": names.prefix},
        "events_per_s": pass["events_per_s"],
    }))
}

/// One mongo-source trial: all `db.docs` events from `db.ts` into the
/// topics of `names`; with `profile` (directory, label), perf records it
/// into `mongo-source-{label}.*` there.
pub async fn trial(
    cx: &Ctx,
    db: &Seeded,
    names: &Names,
    tag: &str,
    profile: Option<(&std::path::Path, &str)>,
) -> Result<Value> {
    let n = db.docs;
    kafka::create_topics(&cx.o.kafka, &names.topics(), cx.o.partitions).await?;
    let t_spawn = Instant::now();
    let mut child = ours::spawn_source(cx, &db.uri, names, start_at(db.ts), "exactly_once", tag)?;
    let watch = Watch::start(
        cx,
        &child,
        t_spawn,
        MONGO_SOURCE_COLUMNS,
        Duration::from_millis(200),
        profile.map(|(dir, label)| (dir, format!("mongo-source-{label}"))),
    )?;
    let topics = names.topics();
    let read = tokio::select! {
        r = kafka::read_n_async(&cx.o.kafka, &topics, cx.o.partitions, n, trial_timeout(n)) => r?,
        st = child.child.wait() => bail!("mongo-source exited before {n} records: {st:?}"),
    };
    let w = watch.finish(cx, &child, n).await?;
    let stages = stage_split(&child.admin, n).await;
    child.stop().await?;
    let mut out = json!({
        "stages_ms_per_1k": stages,
        "events_per_s": round(rate(n.saturating_sub(1), (read.last - read.first).as_secs_f64()), 0),
        "events_per_s_incl_startup": round(rate(n, t_spawn.elapsed().as_secs_f64()), 0),
        "first_record_after_spawn_s": round(read.first.as_secs_f64(), 2),
        "record_mib": round(read.bytes as f64 / 1048576.0, 1),
        "series": w.samples.json(),
    });
    merge(&mut out, w.json);
    Ok(out)
}

/// Where mongo-source's stream tasks spent the trial, from its `/metrics`
/// at the end: milliseconds of each stage (`read`, `commit_wait`,
/// `convert`, summed over streams) per 1,000 of the `n` events (`null` if
/// it did not answer).
async fn stage_split(admin: &str, n: u64) -> Value {
    let Some(text) = metrics::scrape(admin).await else {
        return Value::Null;
    };
    let per_1k = |stage: &str| {
        let secs = metrics::metric_sum(
            &text,
            &format!("mongo_source_stage_seconds_total{{stage=\"{stage}\"}}"),
        );
        round(secs * 1000.0 * 1000.0 / n.max(1) as f64, 1)
    };
    json!({
        "read": per_1k("read"),
        "commit_wait": per_1k("commit_wait"),
        "convert": per_1k("convert"),
    })
}
