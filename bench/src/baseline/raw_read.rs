//! Baseline of mongo-source: the raw change-stream read. One stream per
//! collection (as mongo-source opens), `fullDocument: updateLookup`, from
//! the seed's start time, with mongo-source's cursor batch size
//! (`batch.max_events`) and `maxAwaitTimeMS` (`batch.max_wait_ms`), events
//! taken as raw BSON (as mongo-source takes them) and counted until `n` in
//! all. Rate = events after the first / seconds from the first to the last,
//! the same count mongo-source's rate takes from its committed records.
//!
//! Runs as a child process (`bench raw-read`), pinned where mongo-source
//! runs; writes its result as JSON to `--out`.

use crate::cli;
use crate::ctx::Ctx;
use crate::process::Child;
use crate::stats::{rate, round};
use anyhow::{bail, Result};
use futures::StreamExt as _;
use mongodb::bson::{RawDocumentBuf, Timestamp};
use mongodb::options::FullDocumentType;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Arguments of `bench raw-read`.
#[derive(Clone, Debug)]
pub struct Args {
    /// MongoDB URI.
    pub uri: String,
    /// Database with `card` and `reply`.
    pub db: String,
    /// Start time (seconds).
    pub ts: u32,
    /// Events to read.
    pub n: u64,
    /// Cursor batch size.
    pub batch_size: u32,
    /// `maxAwaitTimeMS`.
    pub max_await_ms: u64,
    /// Where the result goes (stdout when absent).
    pub out: Option<PathBuf>,
}

impl Args {
    /// From `--key value` pairs.
    pub fn parse(a: &cli::Args) -> Result<Self> {
        a.only(&["uri", "db", "ts", "n", "batch-size", "max-await-ms", "out"])?;
        Ok(Self {
            uri: a.req("uri")?,
            db: a.req("db")?,
            ts: a.req("ts")?.parse()?,
            n: a.req("n")?.parse()?,
            batch_size: a.req("batch-size")?.parse()?,
            max_await_ms: a.req("max-await-ms")?.parse()?,
            out: a.get("out").map(PathBuf::from),
        })
    }
}

/// The child: reads, then writes `{"first_s", "last_s", "events"}`.
pub async fn main(a: Args) -> Result<()> {
    let client = mongodb::Client::with_uri_str(&a.uri).await?;
    let db = client.database(&a.db);
    let t0 = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<f64>));
    let mut tasks = vec![];
    for coll in ["card", "reply"] {
        let c = db.collection::<RawDocumentBuf>(coll);
        let (counter, first, a) = (counter.clone(), first.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = c
                .watch()
                .full_document(FullDocumentType::UpdateLookup)
                .start_at_operation_time(Timestamp {
                    time: a.ts,
                    increment: 0,
                })
                .batch_size(a.batch_size)
                .max_await_time(Duration::from_millis(a.max_await_ms))
                .await?
                .with_type::<RawDocumentBuf>();
            let mut last = 0.0f64;
            while counter.load(Ordering::Relaxed) < a.n {
                match tokio::time::timeout(Duration::from_millis(500), s.next()).await {
                    Ok(Some(ev)) => {
                        std::hint::black_box(&ev?);
                        let now = t0.elapsed().as_secs_f64();
                        first.lock().expect("first").get_or_insert(now);
                        counter.fetch_add(1, Ordering::Relaxed);
                        last = now;
                    }
                    Ok(None) => break,
                    Err(_) if t0.elapsed() > Duration::from_secs(1800) => {
                        bail!("raw change stream: no event for too long")
                    }
                    Err(_) => {}
                }
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = 0.0f64;
    for t in tasks {
        last = last.max(t.await??);
    }
    let got = counter.load(Ordering::Relaxed);
    if got < a.n {
        bail!("raw change stream read {got} of {}", a.n);
    }
    let f = first.lock().expect("first").unwrap_or(0.0);
    let out = json!({"first_s": f, "last_s": last, "events": got, "self": crate::process::procmon::self_report()}).to_string();
    match &a.out {
        Some(p) => std::fs::write(p, out)?,
        None => println!("{out}"),
    }
    Ok(())
}

/// One trial: `bench raw-read` as a pinned child over `db` of `uri`.
pub async fn trial(cx: &Ctx, uri: &str, db: &str, ts: u32, tag: &str) -> Result<Value> {
    let out = cx.work(&format!("raw-read-{tag}.json"));
    let _ = std::fs::remove_file(&out);
    let b = &cx.batching;
    let mut cmd = cx.pin.command(std::env::current_exe()?);
    cmd.arg("raw-read")
        .args(["--uri", uri, "--db", db])
        .args(["--ts", &ts.to_string(), "--n", &cx.o.docs.to_string()])
        .args(["--batch-size", &b.source_max_events.to_string()])
        .args(["--max-await-ms", &b.source_max_wait_ms.to_string()])
        .arg("--out")
        .arg(&out);
    let child = Child::spawn(cmd, String::new(), &cx.work(&format!("raw-read-{tag}.log")))?;
    let mon = child.mon.clone();
    let before = mon.now();
    let servers0 = cx.o.servers.mark();
    child
        .wait_exit("raw-read", Duration::from_secs(1800))
        .await?;
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    let samples = mon.samples();
    let v: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let after = crate::process::procmon::end_sample(&v["self"], &samples, before);
    let (f, l) = (
        v["first_s"].as_f64().unwrap_or(0.0),
        v["last_s"].as_f64().unwrap_or(0.0),
    );
    let r = rate(cx.o.docs.saturating_sub(1), l - f);
    let u = crate::process::procmon::usage(&samples, before, after, cx.o.docs);
    Ok(json!({
        "events_per_s": round(r, 0),
        "first_event_s": round(f, 3),
        "last_event_s": round(l, 3),
        "resources": u.json(),
        "servers_cpu": servers,
    }))
}
