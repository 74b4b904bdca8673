//! Benchmark harness of the pipeline (`scripts/bench`): runs `mongo-source`
//! and `es-sync` as processes against a private stack and measures each
//! against a raw baseline taken in the same run (see `docs/benchmarks.md`).

mod es;
mod kafka;
mod latency;
mod peers;
mod procmon;
mod scale;
mod series;
use e2e_tests::workload;

use anyhow::{bail, Context as _, Result};
use elasticsearch::http::Method;
use futures::StreamExt as _;
use mongodb::bson::{doc, Document, Timestamp};
use mongodb::options::FullDocumentType;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Command-line options (`key=value` free parsing, see `usage`).
#[derive(Clone, Debug)]
pub struct Opts {
    /// Quick mode (small N, short latency runs).
    pub quick: bool,
    /// Documents seeded.
    pub docs: u64,
    /// Fixed rates of the latency runs, changes/s.
    pub rates: Vec<u64>,
    /// Seconds per latency run.
    pub rate_secs: u64,
    /// MongoDB URI (the Python SecantusDB of scripts/stack).
    pub mongo_uri: String,
    /// Optional second MongoDB URI (the Rust SecantusDB) for the raw read rate.
    pub mongo_rs_uri: Option<String>,
    /// Kafka bootstrap.
    pub kafka: String,
    /// Elasticsearch URL.
    pub es: String,
    /// Directory of the release binaries.
    pub bin_dir: PathBuf,
    /// Repository root.
    pub repo: PathBuf,
    /// Work directory (configs, logs).
    pub work: PathBuf,
    /// Seed of the workload.
    pub seed: u64,
    /// The command as typed (for the report).
    pub command: String,
    /// Installed peers (`--peer-*`, from `scripts/bench.d/peers`).
    pub peers: peers::PeerOpts,
    /// Partitions of the event topics (3).
    pub partitions: i32,
    /// Whether the phases also measure their baselines (off in the scale
    /// runs, which compare our binaries with themselves at other sizes).
    pub baselines: bool,
    /// Document counts of the scale runs (measure 5).
    pub scale_docs: Vec<u64>,
    /// Partitions (= es-sync instances) of the scale runs.
    pub scale_partitions: Vec<i32>,
    /// Documents per partition-scale run.
    pub scale_partition_docs: u64,
}

fn usage() -> &'static str {
    "bench [--quick] [--docs N] [--rates 200,1000] [--rate-secs S] --mongo URI [--mongo-rs URI] --kafka HOST:PORT --es URL --bin-dir DIR --repo DIR --work DIR [--seed N] [--command TEXT] [--peer-connect DIR] [--peer-monstache BIN] [--peer-vector BIN] [--peer-status-dir DIR] [--partitions 3] [--scale-docs 10000,100000,1000000] [--scale-partitions 1,3,6] [--scale-partition-docs N]"
}

fn parse() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut m: HashMap<String, String> = HashMap::new();
    let mut quick = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--quick" {
            quick = true;
        } else if a == "--help" || a == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        } else if let Some(k) = a.strip_prefix("--") {
            let v = args.get(i + 1).context(usage())?;
            m.insert(k.to_string(), v.clone());
            i += 1;
        } else {
            bail!("unexpected argument {a}\n{}", usage());
        }
        i += 1;
    }
    let req = |k: &str| {
        m.get(k)
            .cloned()
            .with_context(|| format!("--{k} missing\n{}", usage()))
    };
    let docs = match m.get("docs") {
        Some(v) => v.parse()?,
        None if quick => 20_000,
        None => 200_000,
    };
    fn list<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, T::Err> {
        v.split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().parse())
            .collect()
    }
    let rates = match m.get("rates") {
        Some(v) => list(v)?,
        None if quick => vec![200, 1000],
        None => vec![200, 1000, 5000],
    };
    let scale_docs = match m.get("scale-docs") {
        Some(v) => list(v)?,
        None if quick => vec![10_000, 50_000],
        None => vec![10_000, 100_000, 1_000_000],
    };
    let scale_partitions = match m.get("scale-partitions") {
        Some(v) => list(v)?,
        None => vec![1, 3, 6],
    };
    let scale_partition_docs = match m.get("scale-partition-docs") {
        Some(v) => v.parse()?,
        None if quick => 20_000,
        None => 100_000,
    };
    let rate_secs = match m.get("rate-secs") {
        Some(v) => v.parse()?,
        None if quick => 20,
        None => 60,
    };
    Ok(Opts {
        quick,
        docs,
        rates,
        rate_secs,
        mongo_uri: req("mongo")?,
        mongo_rs_uri: m.get("mongo-rs").cloned(),
        kafka: req("kafka")?,
        es: req("es")?,
        bin_dir: req("bin-dir")?.into(),
        repo: req("repo")?.into(),
        work: req("work")?.into(),
        seed: m.get("seed").map(|s| s.parse()).transpose()?.unwrap_or(42),
        command: m.get("command").cloned().unwrap_or_default(),
        peers: peers::PeerOpts::from_args(&m),
        partitions: m
            .get("partitions")
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(3),
        baselines: true,
        scale_docs,
        scale_partitions,
        scale_partition_docs,
    })
}

fn log(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("[bench {}] {msg}", t % 86_400);
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// A running binary.
struct Child {
    child: tokio::process::Child,
    mon: procmon::Monitor,
    admin: String,
}

impl Child {
    async fn spawn(bin: &Path, config: &Path, admin: String, log_file: &Path) -> Result<Self> {
        let out = std::fs::File::create(log_file)?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id().context("pid")?;
        Ok(Self {
            child,
            mon: procmon::Monitor::start(pid, Duration::from_millis(200)),
            admin,
        })
    }

    async fn metric(&self, name: &str) -> f64 {
        match es::http_get(&self.admin, "/metrics").await {
            Ok((200, body)) => es::metric_sum(&body, name),
            _ => 0.0,
        }
    }

    async fn wait_ready(&mut self, what: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = es::http_get(&self.admin, "/readyz").await {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("{what} exited early: {st}");
            }
            if t0.elapsed() > timeout {
                bail!("{what} not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, wait for the exit (KILL after 30 s).
    async fn stop(mut self) -> Result<()> {
        let pid = self.mon.pid;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// Names of one scenario (unique per run and phase).
struct Names {
    db: String,
    prefix: String,
}

impl Names {
    fn topic(&self, coll: &str) -> String {
        format!("{}.{}.{}", self.prefix, self.db, coll)
    }
    fn topics(&self) -> Vec<String> {
        vec![self.topic("card"), self.topic("reply")]
    }
}

fn source_toml(o: &Opts, uri: &str, n: &Names, admin: &str, start: &str) -> String {
    format!(
        r#"[mongodb]
uri = "{uri}"
database = "{db}"

[kafka]
bootstrap_servers = "{kafka}"
delivery = "exactly_once"
transactional_id_prefix = "{prefix}"
compression = "zstd"

[topics]
prefix = "{prefix}"
partitions = 3

[[collections]]
name = "card"

[[collections]]
name = "reply"

[start]
{start}

[log]
level = "warn"

[admin]
listen = "{admin}"
"#,
        db = n.db,
        kafka = o.kafka,
        prefix = n.prefix,
    )
}

fn sync_toml(o: &Opts, n: &Names, group: &str, admin: &str) -> String {
    let idx = o.repo.join("config/indices");
    format!(
        r#"[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
auto_offset_reset = "earliest"

[elasticsearch]
url = "{es}"

[dlq]
prefix = "{prefix}"

[log]
level = "warn"

[admin]
listen = "{admin}"

[[topics]]
topic = "{card}"
alias = "{prefix}-cards"
index_file = "{idx}/cards.json"

[[topics]]
topic = "{reply}"
alias = "{prefix}-replies"
index_file = "{idx}/replies.json"
"#,
        kafka = o.kafka,
        es = o.es,
        prefix = n.prefix,
        card = n.topic("card"),
        reply = n.topic("reply"),
        idx = idx.display(),
    )
}

/// Seeds `n` documents (3 cards : 1 reply) in batches of 500 per
/// collection; returns (seconds, bytes of BSON).
async fn seed(db: &mongodb::Database, o: &Opts, n: u64) -> Result<(f64, u64)> {
    let mut w = workload::Workload::new(o.seed);
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let mut done = 0u64;
    let (mut cb, mut rb) = (vec![], vec![]);
    while done < n {
        let d = if done % 4 == 3 {
            w.reply().unwrap_or_else(|| w.card())
        } else {
            w.card()
        };
        bytes += mongodb::bson::to_vec(&d)
            .map(|v| v.len() as u64)
            .unwrap_or(0);
        if d.contains_key("card_id") {
            rb.push(d);
        } else {
            cb.push(d);
        }
        done += 1;
        if (cb.len() >= 500 || done == n) && !cb.is_empty() {
            cards.insert_many(std::mem::take(&mut cb)).await?;
        }
        if (rb.len() >= 500 || done == n) && !rb.is_empty() {
            replies.insert_many(std::mem::take(&mut rb)).await?;
        }
    }
    Ok((t0.elapsed().as_secs_f64(), bytes))
}

/// Raw change-stream read loop: one stream per collection (like
/// mongo-source), `fullDocument: updateLookup`, from `ts`, until `n` events
/// in all. Returns (first event, last event) times.
async fn raw_change_read(db: &mongodb::Database, ts: u32, n: u64) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
    let mut tasks = vec![];
    for coll in ["card", "reply"] {
        let c = db.collection::<Document>(coll);
        let counter = counter.clone();
        let first = first.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = c
                .watch()
                .full_document(FullDocumentType::UpdateLookup)
                .start_at_operation_time(Timestamp {
                    time: ts,
                    increment: 0,
                })
                .await?;
            let mut last = 0.0f64;
            while counter.load(std::sync::atomic::Ordering::Relaxed) < n {
                match tokio::time::timeout(Duration::from_millis(500), s.next()).await {
                    Ok(Some(ev)) => {
                        let ev = ev?;
                        std::hint::black_box(&ev);
                        let mut f = first.lock().expect("first");
                        if f.is_none() {
                            *f = Some(t0.elapsed().as_secs_f64());
                        }
                        drop(f);
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        last = t0.elapsed().as_secs_f64();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        if t0.elapsed() > Duration::from_secs(600) {
                            bail!("raw change stream: timeout");
                        }
                    }
                }
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = 0.0f64;
    for t in tasks {
        last = last.max(t.await??);
    }
    let got = counter.load(std::sync::atomic::Ordering::Relaxed);
    if got < n {
        bail!("raw change stream read {got} of {n}");
    }
    let f = first.lock().expect("first").unwrap_or(0.0);
    Ok((f, last))
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn usage_json(u: &procmon::Usage) -> Value {
    json!({
        "peak_rss_mib": round(u.peak_rss_mib, 1),
        "steady_rss_mib": round(u.steady_rss_mib, 1),
        "cpu_s": round(u.cpu_s, 2),
        "cpu_s_per_1k_events": round(u.cpu_s_per_1k, 3),
        "events": u.events,
    })
}

/// Rounds to `d` decimals.
pub fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// Phase 1: source throughput vs raw change-stream read and producer loop.
async fn phase_source(o: &Opts, uri: &str, tag: &str, run_source: bool) -> Result<Value> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let names = Names {
        db: format!("bench_{tag}"),
        prefix: format!("b{tag}"),
    };
    let db = client.database(&names.db);
    let ts = unix_now().saturating_sub(1);
    log(&format!("[{tag}] seeding {} documents", o.docs));
    let (seed_s, seed_bytes) = seed(&db, o, o.docs).await?;
    log(&format!(
        "[{tag}] seeded in {seed_s:.1} s ({:.0} docs/s, {:.1} MiB BSON)",
        rate(o.docs, seed_s),
        seed_bytes as f64 / 1048576.0
    ));
    // Baseline (a): raw change-stream read loop, twice (the first warms the
    // server's cache the same way for both), take the better.
    let mut raw_best = 0.0f64;
    let mut raw_runs = vec![];
    for _ in 0..(if o.baselines { 2 } else { 0 }) {
        let (f, l) = raw_change_read(&db, ts, o.docs).await?;
        let r = rate(o.docs.saturating_sub(1), l - f);
        raw_runs.push(json!({"first_event_s": round(f, 3), "last_event_s": round(l, 3), "events_per_s": round(r, 0)}));
        raw_best = raw_best.max(r);
        log(&format!(
            "[{tag}] raw change-stream read: {r:.0} events/s (first event {f:.2} s, all {l:.2} s)"
        ));
    }
    let mut out = json!({
        "server": uri,
        "start_ts": ts,
        "documents": o.docs,
        "seed_s": round(seed_s, 2),
        "seed_docs_per_s": round(rate(o.docs, seed_s), 0),
        "seed_bson_mib": round(seed_bytes as f64 / 1048576.0, 1),
        "raw_change_stream": {"runs": raw_runs, "events_per_s": round(raw_best, 0)},
    });
    if !run_source {
        return Ok(out);
    }
    // mongo-source from the seed's start time.
    kafka::create_topics(&o.kafka, &names.topics(), o.partitions).await?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let cfg = o.work.join(format!("mongo-source-{tag}.toml"));
    std::fs::write(
        &cfg,
        source_toml(
            o,
            uri,
            &names,
            &admin,
            &format!("mode = \"timestamp\"\ntimestamp = {ts}"),
        ),
    )?;
    let t_spawn = Instant::now();
    let mut child = Child::spawn(
        &o.bin_dir.join("mongo-source"),
        &cfg,
        admin,
        &o.work.join(format!("mongo-source-{tag}.log")),
    )
    .await?;
    let before = child.mon.now();
    let sampler = series::Sampler::start(&child.admin, "mongo_source_events_total", t_spawn);
    let (bootstrap, topics, n, parts) = (o.kafka.clone(), names.topics(), o.docs, o.partitions);
    let reader = tokio::task::spawn_blocking(move || {
        kafka::read_n(
            &bootstrap,
            &topics,
            parts,
            n,
            false,
            Duration::from_secs(1800),
        )
    });
    let read = reader.await??;
    let after = child.mon.now();
    let events_series = sampler.stop().await;
    let spawn_to_first = read.first.as_secs_f64();
    let steady_s = (read.last - read.first).as_secs_f64();
    let ours = rate(o.docs.saturating_sub(1), steady_s);
    let wall = rate(o.docs, t_spawn.elapsed().as_secs_f64());
    if let Some(st) = child.child.try_wait()? {
        bail!("mongo-source exited: {st}");
    }
    let samples = child.mon.samples();
    let u = procmon::usage(&samples, before, after, o.docs);
    child.stop().await?;
    log(&format!(
        "[{tag}] mongo-source: {ours:.0} events/s committed (first record {spawn_to_first:.2} s after spawn), RSS peak {:.1} MiB",
        u.peak_rss_mib
    ));
    out["mongo_source"] = json!({
        "events": o.docs,
        "events_per_s": round(ours, 0),
        "events_per_s_incl_startup": round(wall, 0),
        "first_record_after_spawn_s": round(spawn_to_first, 2),
        "resources": usage_json(&u),
        "series": events_series,
    });
    out["names"] = json!({"db": names.db, "prefix": names.prefix});
    if !o.baselines {
        return Ok(out);
    }
    // Baseline (b): the same records through a plain producer loop.
    let (bootstrap, topics, n) = (o.kafka.clone(), names.topics(), o.docs);
    let recs = tokio::task::spawn_blocking(move || {
        kafka::read_n(
            &bootstrap,
            &topics,
            parts,
            n,
            true,
            Duration::from_secs(300),
        )
    })
    .await??;
    let plain_topic = format!("{}.plain", names.prefix);
    kafka::create_topics(&o.kafka, std::slice::from_ref(&plain_topic), 3).await?;
    let bootstrap = o.kafka.clone();
    let records = recs.records;
    let record_bytes = recs.bytes;
    let pr =
        tokio::task::spawn_blocking(move || kafka::produce_all(&bootstrap, &plain_topic, &records))
            .await??;
    let prod = rate(pr.acked, pr.elapsed.as_secs_f64());
    log(&format!(
        "[{tag}] plain producer: {prod:.0} records/s ({} acked, {} failed)",
        pr.acked, pr.failed
    ));
    out["mongo_source"]["record_mib"] = json!(round(record_bytes as f64 / 1048576.0, 1));
    out["plain_producer"] = json!({
        "acked": pr.acked, "failed": pr.failed,
        "seconds": round(pr.elapsed.as_secs_f64(), 2),
        "records_per_s": round(prod, 0),
    });
    out["ratio_vs_raw_change_stream"] = json!(round(ours / raw_best.max(1e-9), 3));
    out["ratio_vs_plain_producer"] = json!(round(ours / prod.max(1e-9), 3));
    Ok(out)
}

/// Phase 2: es-sync from the topics of phase 1 vs `_bulk` and consume-only.
async fn phase_sync(o: &Opts, tag: &str, src: &Value) -> Result<Value> {
    let names = Names {
        db: src["names"]["db"].as_str().context("db")?.to_string(),
        prefix: src["names"]["prefix"]
            .as_str()
            .context("prefix")?
            .to_string(),
    };
    let n = o.docs;
    let es = es::Es::new(&o.es)?;
    // Baseline (b): consume only.
    let mut consume = 0.0;
    if o.baselines {
        let (bootstrap, topics, parts) = (o.kafka.clone(), names.topics(), o.partitions);
        let rd = tokio::task::spawn_blocking(move || {
            kafka::read_n(
                &bootstrap,
                &topics,
                parts,
                n,
                false,
                Duration::from_secs(300),
            )
        })
        .await??;
        consume = rate(n.saturating_sub(1), (rd.last - rd.first).as_secs_f64());
        log(&format!("[{tag}] consume only: {consume:.0} records/s"));
    }
    if o.baselines {
        warm_up_elasticsearch(o, tag, &names, &es).await?;
    }
    // es-sync.
    let t_spawn = Instant::now();
    let mut child = spawn_es_sync(o, &names, &format!("{}-sync", names.prefix), tag).await?;
    let before = child.mon.now();
    let mut first: Option<f64> = None;
    let mut first_count = 0.0;
    let mut docs_series: Vec<[f64; 2]> = vec![];
    let done_at;
    loop {
        let c = child.metric("es_sync_documents_total").await;
        let t = t_spawn.elapsed().as_secs_f64();
        docs_series.push([round(t, 2), c]);
        if c > 0.0 && first.is_none() {
            first = Some(t);
            first_count = c;
        }
        if c >= n as f64 {
            done_at = t;
            break;
        }
        if let Some(st) = child.child.try_wait()? {
            bail!("es-sync exited: {st}");
        }
        if t > 1800.0 {
            bail!("es-sync: {c} of {n} after 1800 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = child.mon.now();
    let samples = child.mon.samples();
    let u = procmon::usage(&samples, before, after, n);
    let f = first.unwrap_or(0.0);
    let ours = rate((n as f64 - first_count) as u64, done_at - f);
    let wall = rate(n, done_at);
    child.stop().await?;
    log(&format!(
        "[{tag}] es-sync: {ours:.0} docs/s (first documents {f:.2} s after spawn), RSS peak {:.1} MiB",
        u.peak_rss_mib
    ));
    let es_sync = json!({
        "docs_per_s": round(ours, 0),
        "docs_per_s_incl_startup": round(wall, 0),
        "first_documents_after_spawn_s": round(f, 2),
        "resources": usage_json(&u),
        "series": series::thin(&docs_series),
    });
    if !o.baselines {
        return Ok(json!({"documents": n, "es_sync": es_sync}));
    }
    // Baseline (a): the documents es-sync wrote, read back, sent as _bulk.
    let mut docs: Vec<(String, String, u64, Value)> = vec![];
    for (alias, file) in [("cards", "cards.json"), ("replies", "replies.json")] {
        let index = format!("{}-{alias}", names.prefix);
        es.json(Method::Post, &format!("/{index}/_refresh"), None)
            .await?;
        let mut v = es
            .json(
                Method::Post,
                &format!("/{index}/_search?scroll=1m"),
                Some(json!({"size": 5000, "version": true, "query": {"match_all": {}}})),
            )
            .await?;
        loop {
            let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            for h in hits {
                docs.push((
                    file.to_string(),
                    h["_id"].as_str().unwrap_or_default().to_string(),
                    h["_version"].as_u64().unwrap_or(1),
                    h["_source"].clone(),
                ));
            }
            let sid = v["_scroll_id"].as_str().unwrap_or_default().to_string();
            v = es
                .json(
                    Method::Post,
                    "/_search/scroll",
                    Some(json!({"scroll": "1m", "scroll_id": sid})),
                )
                .await?;
        }
    }
    if (docs.len() as u64) < n {
        bail!("read back {} of {n} documents", docs.len());
    }
    let mut trials = vec![];
    let mut best = (0usize, 0.0f64);
    for batch in [500usize, 1000, 2000] {
        let r = bulk_trial(
            o,
            &es,
            &docs,
            &format!("{}-bulk{batch}", names.prefix),
            batch,
            4,
        )
        .await?;
        log(&format!(
            "[{tag}] _bulk batch {batch}, 4 in flight: {r:.0} docs/s"
        ));
        trials.push(json!({"batch": batch, "in_flight": 4, "docs_per_s": round(r, 0)}));
        if r > best.1 {
            best = (batch, r);
        }
    }
    Ok(json!({
        "documents": n,
        "es_sync": es_sync,
        "consume_only": {"records_per_s": round(consume, 0)},
        "bulk": {"trials": trials, "best_batch": best.0, "docs_per_s": round(best.1, 0)},
        "ratio_vs_bulk": round(ours / best.1.max(1e-9), 3),
        "ratio_vs_consume_only": round(ours / consume.max(1e-9), 3),
    }))
}

/// Spawns es-sync in `group` over the topics of `names`, with its config
/// and log named after `name` in the work directory.
async fn spawn_es_sync(o: &Opts, names: &Names, group: &str, name: &str) -> Result<Child> {
    let admin = format!("127.0.0.1:{}", free_port()?);
    let cfg = o.work.join(format!("es-sync-{name}.toml"));
    std::fs::write(&cfg, sync_toml(o, names, group, &admin))?;
    Child::spawn(
        &o.bin_dir.join("es-sync"),
        &cfg,
        admin,
        &o.work.join(format!("es-sync-{name}.log")),
    )
    .await
}

/// A first, unmeasured es-sync pass over the same topics (own group), then
/// its indices dropped: the node's JIT and caches are as warm for the
/// measured es-sync as for the `_bulk` trials that follow it (measured
/// first on a cold node, es-sync ran at a third of its warm rate).
async fn warm_up_elasticsearch(o: &Opts, tag: &str, names: &Names, es: &es::Es) -> Result<()> {
    let child = spawn_es_sync(
        o,
        names,
        &format!("{}-warm", names.prefix),
        &format!("{tag}-warm"),
    )
    .await?;
    let t0 = Instant::now();
    while child.metric("es_sync_documents_total").await < o.docs as f64 {
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("warm-up es-sync did not finish");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.stop().await?;
    es.call(Method::Delete, &format!("/{}-*", names.prefix), None)
        .await?;
    log(&format!(
        "[{tag}] Elasticsearch warmed up by an unmeasured es-sync pass ({:.1} s)",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// One `_bulk` trial into fresh indices made from the same index files:
/// `index` with the same external versions, `in_flight` requests at a time.
async fn bulk_trial(
    o: &Opts,
    es: &es::Es,
    docs: &[(String, String, u64, Value)],
    prefix: &str,
    batch: usize,
    in_flight: usize,
) -> Result<f64> {
    for file in ["cards.json", "replies.json"] {
        let body = std::fs::read(o.repo.join("config/indices").join(file))?;
        let index = format!("{prefix}-{}", file.trim_end_matches(".json"));
        let (s, v) = es
            .call(Method::Put, &format!("/{index}"), Some(body))
            .await?;
        if s >= 300 {
            bail!("create {index}: {s} {v}");
        }
    }
    es.json(
        Method::Get,
        &format!("/_cluster/health/{prefix}-*?wait_for_status=green&timeout=30s"),
        None,
    )
    .await?;
    // Bodies are built before the clock starts.
    let mut bodies: Vec<Vec<u8>> = vec![];
    let mut cur = Vec::new();
    let mut count = 0;
    for (file, id, version, src) in docs {
        let index = format!("{prefix}-{}", file.trim_end_matches(".json"));
        let meta = json!({"index": {"_index": index, "_id": id, "version": version, "version_type": "external"}});
        cur.extend_from_slice(meta.to_string().as_bytes());
        cur.push(b'\n');
        cur.extend_from_slice(src.to_string().as_bytes());
        cur.push(b'\n');
        count += 1;
        if count == batch || cur.len() > 5 * 1024 * 1024 {
            bodies.push(std::mem::take(&mut cur));
            count = 0;
        }
    }
    if !cur.is_empty() {
        bodies.push(cur);
    }
    let t0 = Instant::now();
    let results: Vec<Result<u64>> = futures::stream::iter(bodies.into_iter().map(|b| {
        let es = es.clone();
        async move {
            let (s, v) = es.call(Method::Post, "/_bulk", Some(b)).await?;
            if s >= 300 || v["errors"].as_bool() == Some(true) {
                let first_err = v["items"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| i["index"]["error"].is_object()).cloned());
                bail!("_bulk: {s} {first_err:?}");
            }
            Ok(v["items"].as_array().map(|a| a.len() as u64).unwrap_or(0))
        }
    }))
    .buffer_unordered(in_flight)
    .collect()
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut total = 0;
    for r in results {
        total += r?;
    }
    let _ = es.call(Method::Delete, &format!("/{prefix}-*"), None).await;
    Ok(rate(total, secs))
}

/// Percentile (nearest rank) of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

async fn server_versions(o: &Opts) -> Value {
    let mut v = json!({});
    if let Ok(c) = mongodb::Client::with_uri_str(&o.mongo_uri).await {
        if let Ok(b) = c.database("admin").run_command(doc! {"buildInfo": 1}).await {
            v["mongodb_reports"] = json!(b.get_str("version").unwrap_or("?"));
        }
    }
    if let Ok(es) = es::Es::new(&o.es) {
        if let Ok(x) = es.json(Method::Get, "/", None).await {
            v["elasticsearch"] = x["version"]["number"].clone();
            v["lucene"] = x["version"]["lucene_version"].clone();
        }
    }
    v
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse()?;
    std::fs::create_dir_all(&o.work)?;
    let started = Instant::now();
    let tag = format!("{}", unix_now());
    let mut result = json!({
        "quick": o.quick,
        "seed": o.seed,
        "command": o.command,
        "servers": server_versions(&o).await,
    });
    let src = phase_source(&o, &o.mongo_uri, &format!("{tag}s"), true).await?;
    result["source"] = src.clone();
    match phase_sync(&o, &format!("{tag}s"), &src).await {
        Ok(v) => result["sync"] = v,
        Err(e) => {
            log(&format!("sync phase failed: {e:#}"));
            result["sync"] = json!({"error": format!("{e:#}")});
        }
    }
    match latency::phase_latency(&o, &format!("{tag}l")).await {
        Ok(v) => result["latency"] = v,
        Err(e) => {
            log(&format!("latency phase failed: {e:#}"));
            result["latency"] = json!({"error": format!("{e:#}")});
        }
    }
    // Before the peers: Kafka Connect runs on this phase's database too.
    if let Some(uri) = o.mongo_rs_uri.clone() {
        match phase_source(&o, &uri, &format!("{tag}r"), true).await {
            Ok(v) => result["source_rust_secantus"] = v,
            Err(e) => {
                log(&format!("Rust SecantusDB phase failed: {e:#}"));
                result["source_rust_secantus"] = json!({"error": format!("{e:#}")});
            }
        }
    }
    result["peers"] = peers::run(&o, &result).await;
    result["scale"] = scale::run(&o, &format!("{tag}x")).await;
    result["runtime_s"] = json!(round(started.elapsed().as_secs_f64(), 1));
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
