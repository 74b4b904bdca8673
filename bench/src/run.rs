//! A benchmark run: the phases in order, each failure recorded in the
//! result instead of ending the run, and the result as one JSON document
//! (turned into `docs/benchmarks.md` by `bench/report.py`).
//!
//! Order: the source phase on the Python SecantusDB (its warm-up topics
//! feed the sync phase), the source phase on the Rust SecantusDB (the
//! Kafka Connect worker is started once for both and stopped after them,
//! so that it is not idle on the measured core later), the sync phase, the
//! roll-up phase, the latency phase, Monstache, scale. Without the source
//! phase, the sync and roll-up phases get topics of their own
//! ([`source::feed`]).

use crate::cli::Opts;
use crate::ctx::Ctx;
use crate::log::{log, unix_now};
use crate::peers::{kafka_connect, monstache};
use crate::phases::source::Seeded;
use crate::phases::{latency, rollup, scale, source, sync};
use crate::stats::round;
use anyhow::Result;
use elasticsearch::http::Method;
use mongodb::bson::doc;
use serde_json::{json, Value};
use std::time::Instant;

fn or_error(phase: &str, r: Result<Value>) -> Value {
    r.unwrap_or_else(|e| {
        log(&format!("{phase} failed: {e:#}"));
        json!({"error": format!("{e:#}")})
    })
}

async fn server_versions(cx: &Ctx) -> Value {
    let mut v = json!({});
    if let Ok(c) = mongodb::Client::with_uri_str(&cx.o.mongo_uri).await {
        if let Ok(b) = c.database("admin").run_command(doc! {"buildInfo": 1}).await {
            v["mongodb_reports"] = json!(b.get_str("version").unwrap_or("?"));
        }
    }
    if let Ok(x) = cx.es.json(Method::Get, "/", None).await {
        v["elasticsearch"] = x["version"]["number"].clone();
        v["lucene"] = x["version"]["lucene_version"].clone();
    }
    v
}

/// Runs the selected phases; the result JSON.
pub async fn run(o: Opts) -> Result<Value> {
    std::fs::create_dir_all(&o.work)?;
    if let Some(d) = &o.profile_dir {
        std::fs::create_dir_all(d)?;
    }
    let started = Instant::now();
    let cx = Ctx::new(o)?;
    let o = &cx.o;
    let tag = format!("{}", unix_now());
    let mut result = json!({
        "quick": o.quick,
        "seed": o.seed,
        "command": o.command,
        "documents": o.docs,
        "trials": o.trials,
        "servers": server_versions(&cx).await,
        "pinning": {
            "measured": o.pin_measured,
            "servers": o.pin_servers,
            "harness": o.pin_harness,
        },
        "batching": cx.batching.json(),
        "peers_status": o.peers.statuses(),
        "phases": o.phases,
    });
    let mut worker = None;
    if let (Some(home), true) = (&o.peers.connect_home, o.runs("source") || o.runs("rust")) {
        match kafka_connect::Worker::start(&cx, home, &format!("{tag}kc")).await {
            Ok(w) => worker = Some(w),
            Err(e) => result["kafka_connect_error"] = json!(format!("{e:#}")),
        }
    }
    if worker.is_some() {
        result["kafka_connect_settings"] = kafka_connect::settings_json(&cx);
    }
    if o.runs("source") {
        let r = source::run(
            &cx,
            &o.mongo_uri,
            "python-secantus",
            &format!("{tag}s"),
            worker.as_mut(),
        )
        .await;
        result["source"] = or_error("source phase", r);
    }
    if let (true, Some(uri)) = (o.runs("rust"), o.mongo_rs_uri.clone()) {
        let r = source::run(
            &cx,
            &uri,
            "rust-secantus",
            &format!("{tag}r"),
            worker.as_mut(),
        )
        .await;
        result["source_rust_secantus"] = or_error("source phase (Rust SecantusDB)", r);
    }
    if let Some(w) = worker {
        w.stop().await?;
    }
    if (o.runs("sync") || o.runs("rollup")) && !o.runs("source") {
        // Topics of their own (the source phase is not run).
        let uri = o
            .mongo_rs_uri
            .clone()
            .unwrap_or_else(|| o.mongo_uri.clone());
        let r = source::feed(&cx, &uri, &format!("{tag}f")).await;
        result["sync_feed"] = or_error("topics for the sync phases", r);
    }
    let topics = if result["source"]["names"].is_object() {
        result["source"].clone()
    } else {
        result["sync_feed"].clone()
    };
    if o.runs("sync") {
        let r = if topics["names"].is_object() {
            sync::run(&cx, &topics, &format!("{tag}y")).await
        } else {
            Err(anyhow::anyhow!("needs the source phase's topics"))
        };
        result["sync"] = or_error("sync phase", r);
    }
    if o.runs("rollup") {
        let r = if topics["names"].is_object() {
            rollup::run(&cx, &topics, &format!("{tag}u")).await
        } else {
            Err(anyhow::anyhow!("needs the source phase's topics"))
        };
        result["rollup"] = or_error("roll-up phase", r);
    }
    if o.runs("latency") {
        result["latency"] = or_error("latency phase", latency::run(&cx, &format!("{tag}l")).await);
    }
    if o.runs("monstache") {
        result["monstache"] = match (
            &o.peers.monstache_bin,
            Seeded::from_json(&result["source"]["seeded"]),
        ) {
            (Some(bin), Some(db)) => or_error(
                "monstache",
                monstache::run(&cx, bin, &db, &result["latency"]).await,
            ),
            (Some(_), None) => {
                json!({"status": "not run", "reason": "the source phase did not run"})
            }
            (None, _) => json!({"status": "not run", "reason": o.peers.status("monstache")}),
        };
    }
    if o.runs("scale") {
        result["scale"] = scale::run(&cx, &format!("{tag}x")).await;
    }
    result["runtime_s"] = json!(round(started.elapsed().as_secs_f64(), 1));
    Ok(result)
}
