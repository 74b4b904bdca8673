//! One chaos run: a fresh pipeline (unique database, topics, aliases,
//! group) with both binaries as child processes, the load, the fault at a
//! seeded random moment, the recovery measured, then the checks.

use super::load::{self, LoadStats};
use super::report::{Row, Verdict};
use super::stack::ChaosStack;
use super::Fault;
use crate::e2e::{compare, es_documents, Pipeline};
use crate::kafka::{read_all, Rec};
use crate::process::Proc;
use elasticsearch::http::Method;
use mongodb::bson::{doc, Bson, Document};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run may take to become equal after the load stopped.
const QUIESCENCE: Duration = Duration::from_secs(240);

/// What a fault sets before the binaries start.
pub struct Setup {
    /// The names of the run.
    pub p: Pipeline,
    /// The bench.
    pub stack: Arc<ChaosStack>,
    /// Environment of mongo-source (`MONGO_SOURCE__...` overrides, the
    /// test-only fault switch).
    pub source_env: Vec<(String, String)>,
    /// Environment of es-sync (`ES_SYNC__...` overrides, the fault switch).
    pub sync_env: Vec<(String, String)>,
    /// The short suite: faults last the short end of their ranges.
    pub short: bool,
    /// The run's random numbers (seeded).
    pub rng: StdRng,
}

/// Stops the load when dropped (also when a run fails half-way).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A pipeline running under load, handed to [`Fault::inject`].
pub struct Run {
    /// The bench.
    pub stack: Arc<ChaosStack>,
    /// The names.
    pub p: Pipeline,
    /// MongoDB.
    pub client: mongodb::Client,
    /// The run's database.
    pub db: mongodb::Database,
    /// The run's random numbers (seeded).
    pub rng: StdRng,
    /// Short suite.
    pub short: bool,
    source_cfg: String,
    sync_cfg: String,
    source_env: Vec<(String, String)>,
    sync_env: Vec<(String, String)>,
    /// The running mongo-source.
    pub source: Proc,
    /// The running es-sync.
    pub sync: Proc,
    /// What the fault says about itself in the report.
    pub note: String,
    /// Writes the fault made itself.
    pub extra_writes: u64,
    /// Keys (as on the topics) of the documents bad by themselves that the
    /// fault wrote: the only ones es-sync may dead-letter, each at least once.
    pub bad_keys: BTreeSet<String>,
    /// When the fault ended, if not when `inject` returned.
    pub fault_over: Option<Instant>,
    _stop: StopOnDrop,
}

impl Setup {
    /// A new pipeline on `stack`.
    pub fn new(stack: Arc<ChaosStack>, short: bool, seed: u64) -> Self {
        Self {
            p: Pipeline::new(),
            stack,
            source_env: Vec::new(),
            sync_env: Vec::new(),
            short,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Adds an environment variable of mongo-source.
    pub fn source(&mut self, k: &str, v: impl ToString) {
        self.source_env.push((k.to_string(), v.to_string()));
    }

    /// Adds an environment variable of es-sync.
    pub fn sync(&mut self, k: &str, v: impl ToString) {
        self.sync_env.push((k.to_string(), v.to_string()));
    }
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl Run {
    /// Creates es-sync's dead-letter topic (the broker creates none) and
    /// starts both binaries.
    pub async fn start(s: Setup, stop: Arc<AtomicBool>) -> Self {
        crate::kafka::create_topic(&s.p.sync_dlq(), 1, &[]).await;
        let source_cfg = s.p.source.write().to_string_lossy().into_owned();
        let sync_cfg = s.p.write_sync().to_string_lossy().into_owned();
        let client = crate::mongo().await;
        let db = client.database(&s.p.source.db);
        let source = Proc::start(
            "mongo-source",
            &["--config", &source_cfg],
            &env_refs(&s.source_env),
        );
        let sync = Proc::start("es-sync", &["--config", &sync_cfg], &env_refs(&s.sync_env));
        Self {
            stack: s.stack,
            p: s.p,
            client,
            db,
            rng: s.rng,
            short: s.short,
            source_cfg,
            sync_cfg,
            source_env: s.source_env,
            sync_env: s.sync_env,
            source,
            sync,
            note: String::new(),
            extra_writes: 0,
            bad_keys: BTreeSet::new(),
            fault_over: None,
            _stop: StopOnDrop(stop),
        }
    }

    /// A new mongo-source with the run's config and environment.
    pub fn start_source(&self) -> Proc {
        Proc::start(
            "mongo-source",
            &["--config", &self.source_cfg],
            &env_refs(&self.source_env),
        )
    }

    /// A new es-sync with the run's config and environment.
    pub fn start_sync(&self) -> Proc {
        Proc::start(
            "es-sync",
            &["--config", &self.sync_cfg],
            &env_refs(&self.sync_env),
        )
    }

    /// es-sync's config file.
    pub fn sync_cfg(&self) -> &str {
        &self.sync_cfg
    }

    /// es-sync's environment (config overrides).
    pub fn sync_env(&self) -> &[(String, String)] {
        &self.sync_env
    }

    /// A random duration in `short` (short suite) or `full` (ms).
    pub fn pick_ms(&mut self, short: Range<u64>, full: Range<u64>) -> Duration {
        let r = if self.short { short } else { full };
        Duration::from_millis(self.rng.random_range(r))
    }

    /// The cards' or the replies' alias, at random.
    pub fn pick_alias(&mut self) -> String {
        if self.rng.random_bool(0.5) {
            self.p.cards.clone()
        } else {
            self.p.replies.clone()
        }
    }

    /// The concrete index behind `alias`.
    pub async fn concrete(&self, alias: &str) -> String {
        let body = self
            .stack
            .es_ok(Method::Get, &format!("/_alias/{alias}"), None)
            .await;
        body.as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_else(|| panic!("no index behind {alias}: {body}"))
    }

    /// es-sync's `/status` (Null while it does not answer).
    pub async fn sync_status(&self) -> Value {
        crate::http_get(self.p.sync_admin_port, "/status")
            .await
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// A sample of es-sync's `/metrics` (0 when absent).
    pub async fn sync_metric(&self, name_and_labels: &str) -> f64 {
        metric(self.p.sync_admin_port, name_and_labels).await
    }

    /// A sample of mongo-source's `/metrics` (0 when absent).
    pub async fn source_metric(&self, name_and_labels: &str) -> f64 {
        metric(self.p.source.admin_port, name_and_labels).await
    }

    /// Waits until one of es-sync's partitions says it waits for a reason
    /// containing `needle`; returns that reason.
    pub async fn wait_sync_waiting(&self, needle: &str, timeout: Duration) -> String {
        crate::eventually(
            &format!("an es-sync partition waiting for `{needle}`"),
            timeout,
            || async {
                let s = self.sync_status().await;
                s["partitions"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| p["waiting"].as_str())
                    .find(|w| w.contains(needle))
                    .map(str::to_string)
            },
        )
        .await
    }

    /// Whether the process is stopped (state `T` in `/proc`).
    pub fn is_stopped(p: &Proc) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", p.child.id()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-TERM`) to `p`.
    pub fn signal(p: &Proc, sig: &str) {
        let pid = p.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
    }

    /// Inserts `doc` into `card`, counted as a write of the fault.
    pub async fn insert_card(&mut self, doc: Document) {
        let cards = self.db.collection::<Document>("card");
        crate::eventually("the fault's card written", Duration::from_secs(60), || {
            let (cards, doc) = (cards.clone(), doc.clone());
            async move { cards.insert_one(doc).await.ok() }
        })
        .await;
        self.extra_writes += 1;
    }

    /// Sets fields of card `id` (the application correcting a document).
    pub async fn update_card(&mut self, id: &Bson, set: Document) {
        let cards = self.db.collection::<Document>("card");
        let (id, set) = (id.clone(), set);
        crate::eventually(
            "the fault's update written",
            Duration::from_secs(60),
            || {
                let (cards, id, set) = (cards.clone(), id.clone(), set.clone());
                async move {
                    cards
                        .update_one(doc! {"_id": id}, doc! {"$set": set})
                        .await
                        .ok()
                }
            },
        )
        .await;
        self.extra_writes += 1;
    }

    /// Waits until a new card (`_id` `name`) is searchable.
    pub async fn probe(&mut self, name: &str, timeout: Duration) {
        let cards = self.db.collection::<Document>("card");
        let name = name.to_string();
        crate::eventually("the probe written", Duration::from_secs(120), || async {
            cards
                .insert_one(doc! { "_id": &name, "title": "probe 확인" })
                .await
                .ok()
        })
        .await;
        self.extra_writes += 1;
        crate::eventually("the probe searchable", timeout, || async {
            es_documents(&self.p.cards)
                .await
                .contains_key(&name)
                .then_some(())
        })
        .await;
    }
}

async fn metric(port: u16, name_and_labels: &str) -> f64 {
    let m = crate::http_get(port, "/metrics").await.unwrap_or_default();
    crate::metric_value(&m, name_and_labels).unwrap_or(0.0)
}

/// Runs `fault` once (round `round`, seed `seed`) and checks the outcome.
pub async fn run_fault(
    stack: Arc<ChaosStack>,
    fault: Fault,
    round: usize,
    seed: u64,
    short: bool,
) -> Row {
    let mut setup = Setup::new(stack, short, seed);
    fault.setup(&mut setup);
    let stop = Arc::new(AtomicBool::new(false));
    let mut run = Run::start(setup, stop.clone()).await;
    let load = load::spawn(run.client.clone(), &run.p.source.db, seed, stop.clone());
    // The pipeline is up (indices exist) before the fault's moment.
    run.probe("probe-start", Duration::from_secs(180)).await;
    let moment = run.pick_ms(500..3000, 500..5000);
    tokio::time::sleep(moment).await;
    fault.inject(&mut run).await;
    let over = run.fault_over.unwrap_or_else(Instant::now);
    run.probe(&format!("probe-{round}"), Duration::from_secs(300))
        .await;
    let recovery = over.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let stats = load.await.unwrap_or_default();
    check(run, fault, round, recovery, stats).await
}

/// Quiescence and the judges: equal document by document, the group done
/// with both topics, `es-sync verify` on both, duplicates, dead letters,
/// exit statuses.
pub async fn check(
    mut run: Run,
    fault: Fault,
    round: usize,
    recovery: Duration,
    stats: LoadStats,
) -> Row {
    let mut problems = Vec::new();
    if let Some(diffs) = wait_equal(&run).await {
        problems.push(format!(
            "not equal after {QUIESCENCE:?}: {} differences, e.g. {:?}",
            diffs.len(),
            &diffs[..diffs.len().min(5)]
        ));
    }
    for coll in ["card", "reply"] {
        let topic = run.p.source.topic(coll);
        if !caught_up(&run.p.group, &topic).await {
            problems.push(format!("es-sync's group not caught up on {topic}"));
        }
    }
    let mut verdict = Verdict::default();
    let mut samples = Vec::new();
    for coll in ["card", "reply"] {
        match verify(&run, coll).await {
            Ok(v) => {
                verdict.add(&v);
                if v["equal"] != Value::Bool(true) {
                    samples.push(format!("{coll}: {}", v["samples"]));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if !verdict.equal() {
        problems.push(format!("verify: {verdict}, samples {}", samples.join(", ")));
    }
    let mut events = 0;
    let mut duplicates = 0;
    for coll in ["card", "reply"] {
        let recs = read_all(&run.p.source.topic(coll)).await;
        let (e, d) = count_events(&recs);
        events += e;
        duplicates += d;
    }
    if duplicates > 0 {
        problems.push(format!("{duplicates} change events seen twice"));
    }
    let dlq_sync = read_all(&run.p.sync_dlq()).await;
    let dlq_sync: Vec<&Rec> = dlq_sync
        .iter()
        .filter(|r| !r.headers.contains_key("dlq.redriven"))
        .collect();
    let sync_keys: BTreeSet<String> = dlq_sync.iter().filter_map(|r| r.key.clone()).collect();
    if sync_keys != run.bad_keys {
        problems.push(format!(
            "es-sync dead-lettered {sync_keys:?}, expected exactly the bad documents {:?}",
            run.bad_keys
        ));
    }
    let dlq_source = read_all(&run.p.source.dlq()).await;
    let oversized: BTreeSet<String> = stats
        .oversized
        .iter()
        .map(|id| shared::ejson::canonical_key(&Bson::ObjectId(*id)))
        .collect();
    let source_keys: BTreeSet<String> = dlq_source.iter().filter_map(|r| r.key.clone()).collect();
    if !source_keys.is_subset(&oversized) {
        problems.push(format!(
            "mongo-source dead-lettered {:?}, which are not the oversized documents",
            source_keys.difference(&oversized).collect::<Vec<_>>()
        ));
    }
    for (name, p) in [
        ("mongo-source", &mut run.source),
        ("es-sync", &mut run.sync),
    ] {
        let st = p.terminate();
        if !st.success() {
            problems.push(format!(
                "{name} exited {st} on SIGTERM (log {})",
                p.log.display()
            ));
        }
    }
    Row {
        fault: fault.name(),
        note: std::mem::take(&mut run.note),
        round,
        writes: stats.writes + run.extra_writes,
        transactions: stats.transactions,
        large: stats.near_limit + stats.oversized.len() as u64,
        events,
        recovery,
        dlq_sync: dlq_sync.len(),
        dlq_source: dlq_source.len(),
        duplicates,
        verdict,
        problems,
    }
}

/// Change events on a topic (markers and snapshot copies left out), and
/// how many of them repeat a (key, version) seen before.
pub fn count_events(recs: &[Rec]) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut events = 0;
    let mut dups = 0;
    for r in recs {
        let op = r.value["op"].as_str().unwrap_or("");
        if op.starts_with("snapshot") {
            continue;
        }
        events += 1;
        if !seen.insert((r.key.clone(), r.value["version"].as_u64())) {
            dups += 1;
        }
    }
    (events, dups)
}

/// Waits until both aliases equal their collections; the differences
/// left if they do not within [`QUIESCENCE`].
async fn wait_equal(run: &Run) -> Option<Vec<String>> {
    let cards = run.db.collection::<Document>("card");
    let replies = run.db.collection::<Document>("reply");
    let deadline = Instant::now() + QUIESCENCE;
    loop {
        let d = [
            compare(&cards, &run.p.cards).await,
            compare(&replies, &run.p.replies).await,
        ]
        .concat();
        if d.is_empty() {
            return None;
        }
        if Instant::now() > deadline {
            return Some(d);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether `group` has committed everything of `topic` (within 120 s).
async fn caught_up(group: &str, topic: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (g, t) = (group.to_string(), topic.to_string());
        let lag = tokio::task::spawn_blocking(move || crate::sync_support::group_lag(&g, &t))
            .await
            .ok()
            .flatten();
        if lag == Some(0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// `es-sync verify --quiet` (the binary) of one collection's topic.
async fn verify(run: &Run, coll: &str) -> Result<Value, String> {
    let out = tokio::process::Command::new(crate::process::binary("es-sync"))
        .args([
            "--config",
            &run.sync_cfg,
            "verify",
            "--topic",
            &run.p.source.topic(coll),
            "--quiet",
        ])
        .env("MONGODB_URI", crate::mongodb_uri())
        .output()
        .await
        .map_err(|e| format!("verify {coll}: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "verify {coll} exited {} without a report ({e}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
