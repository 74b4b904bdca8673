//! Latency phase: MongoDB commit to searchable at fixed rates of a mixed
//! stream of card changes, both binaries running (also used for Monstache,
//! `peers/monstache.rs`). It runs on the Rust SecantusDB when the run has
//! one (the Python server cannot take 5,000 changes/s), with
//! `--rate-runs` runs of `--rate-secs` per rate, interleaved over the
//! rates; the report pools each rate's runs and shows the spread of their
//! p99, and what the load generator achieved.

pub mod poller;
pub mod track;
pub mod writer;

use crate::clients::metrics::{Sampler, ES_SYNC_COLUMNS, MONGO_SOURCE_COLUMNS};
use crate::clients::{es::Es, kafka};
use crate::ctx::Ctx;
use crate::log::log;
use crate::ours;
use crate::process::{procmon, Child};
use crate::stats::{cdf, latency_json, rate, round, sorted, summary_json};
use crate::templates::Names;
use anyhow::{bail, Result};
use e2e_tests::workload::Workload;
use elasticsearch::http::Method;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use track::{Kind, Track};

/// How the latency runs measure (shown in the report).
pub const METHOD: &str = "a mixed stream of card changes issued every 10 ms to keep the rate: 6 in 10 inserts \
(`insert_many`), 3 in 10 updates of a card already searchable (`update_many` setting `likes`), 1 in 10 deletes of \
one (`delete_many`), the three commands of a tick sent at once; every insert and update of a tick carries a `likes` \
value of its own; commit time = the command's acknowledgement; searchable = the send time of the first poll that \
shows the change: one `_msearch` every 50 ms, fixed whatever the searches take (each poll its own task, at most 2 \
at once), of a size-0 `terms` aggregation on `likes` over the values of the oldest pending groups (at most 600, the \
last 3 s of ticks) and an `ids` query without `_source` over the oldest pending deletes (at most 1,000); latency includes up to 50 ms of polling granularity; \
each run starts when the pipeline has finished the runs before it (es-sync: no record buffered and no lag for 2 s; Monstache: its done count still for 3 s; at most 600 s), so no run measures another's backlog";

/// The share of each kind of change, out of 10.
pub const MIX: &str = "60% insert / 30% update / 10% delete";

/// Ticks of the load generator.
const TICK: Duration = Duration::from_millis(10);

/// What a run writes to and watches.
pub struct Target<'a> {
    /// The alias searched.
    pub alias: &'a str,
    /// The collection written.
    pub cards: &'a mongodb::Collection<Document>,
    /// The processes whose resources are reported (name, process).
    pub procs: Vec<(&'static str, &'a Child)>,
    /// Changes issued and tracked (settled cards carry over between runs).
    pub track: Arc<Mutex<Track>>,
}

/// Warm-up: a card every 500 ms until one is searchable in `alias` (streams
/// open, index bootstrapped); returns the seconds it took.
pub async fn wait_flowing(
    es: &Es,
    alias: &str,
    cards: &mongodb::Collection<Document>,
    w: &mut Workload,
) -> Result<f64> {
    let t0 = Instant::now();
    loop {
        let d = w.card();
        let id = d.get_object_id("_id")?.to_hex();
        cards.insert_one(d).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, v) = es
            .call(Method::Get, &format!("/{alias}/_doc/{id}"), None)
            .await
            .unwrap_or((0, Value::Null));
        if s == 200 && v["found"].as_bool() == Some(true) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("pipeline not flowing after 120 s");
        }
    }
}

/// One run at `per_s` changes/s for `secs`; `tick` numbers the ticks over
/// the whole phase (their tags must stay unique). Returns the run's JSON
/// and its latencies.
pub async fn run_at_rate(
    cx: &Ctx,
    t: &Target<'_>,
    w: &mut Workload,
    per_s: u64,
    secs: u64,
    tick: &mut i64,
) -> Result<(Value, Vec<(Kind, f64)>)> {
    t.track.lock().expect("track").take_latencies();
    let drain = wait_drained(t).await;
    let poller = poller::Poller::start(&cx.es, t.alias, t.track.clone());
    let before: Vec<procmon::Sample> = t.procs.iter().map(|(_, c)| c.mon.now()).collect();
    let servers0 = cx.o.servers.mark();
    let dur = Duration::from_secs(secs);
    let t0 = Instant::now();
    // Each binary's counter of work done, sampled for the timeline.
    let samplers: Vec<(&str, &str, Sampler)> = t
        .procs
        .iter()
        .filter_map(|(name, c)| {
            let (cols, done) = match *name {
                "mongo_source" => (MONGO_SOURCE_COLUMNS, "events"),
                "es_sync" => (ES_SYNC_COLUMNS, "docs"),
                _ => return None,
            };
            Some((
                *name,
                done,
                Sampler::start(&c.admin, cols, TIMELINE_STEP, t0),
            ))
        })
        .collect();
    let mut sent_at: Vec<[f64; 2]> = vec![[0.0, 0.0]];
    let (mut sent, mut behind_max) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while t0.elapsed() < dur {
        ticker.tick().await;
        let due = (t0.elapsed().as_secs_f64() * per_s as f64) as u64;
        if due <= sent {
            continue;
        }
        behind_max = behind_max.max(due - sent);
        let k = (due - sent).min(per_s.max(100));
        writer::write(t.cards, w, &t.track, sent, k, *tick).await?;
        *tick += 1;
        sent += k;
        sent_at.push([t0.elapsed().as_secs_f64(), sent as f64]);
    }
    let write_s = t0.elapsed().as_secs_f64();
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    // Stragglers: up to 60 s.
    let t1 = Instant::now();
    while t.track.lock().expect("track").pending() > 0 && t1.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polls = poller.stop().await;
    let mut series = vec![("sent", sent_at)];
    for (name, done, s) in samplers {
        series.push((name, s.stop().await.column(done)));
    }
    let (missing, lat) = {
        let mut tr = t.track.lock().expect("track");
        let missing = tr.pending();
        tr.clear_pending();
        (missing, tr.take_latencies())
    };
    let mut res = serde_json::Map::new();
    for ((name, c), b) in t.procs.iter().zip(&before) {
        let u = procmon::usage(&c.mon.samples(), *b, c.mon.now(), sent);
        res.insert((*name).into(), u.json());
    }
    let all: Vec<f64> = sorted(&lat.iter().map(|l| l.1).collect::<Vec<_>>());
    let achieved = rate(sent, write_s);
    log(&format!(
        "[latency] target {per_s}/s achieved {achieved:.0}/s: p50 {} p99 {} max {} ms, missing {missing}, polls {}",
        latency_json(&all)["p50"], latency_json(&all)["p99"], latency_json(&all)["max"], polls
    ));
    Ok((
        json!({
            "target_per_s": per_s,
            "achieved_per_s": round(achieved, 0),
            "generator_behind_max_changes": behind_max,
            "seconds": secs,
            "changes": sent,
            "measured": lat.len(),
            "missing_after_60s": missing,
            "drained_before": drain,
            "latency_ms": latency_json(&all),
            "polls": polls,
            "timeline": timeline(&series, secs),
            "resources": res,
            "servers_cpu": servers,
        }),
        lat,
    ))
}

/// How long a run waits for the pipeline to finish the previous run's
/// changes before it starts (a run at 5,000/s on the bench's one server
/// core leaves a backlog of minutes).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Looks at the end of the pipeline this often while waiting for the drain.
const DRAIN_STEP: Duration = Duration::from_millis(500);

/// Consecutive drained looks es-sync needs: longer than its statistics
/// interval (1 s), from which its lag is computed.
const DRAIN_LOOKS: u32 = 4;

/// Consecutive looks with Monstache's done count unchanged: three times
/// its flush interval (1 s), since it shows no backlog of its own.
const MONSTACHE_STILL_LOOKS: u32 = 6;

/// The end of the pipeline a run's drain is judged by.
#[derive(Clone, Copy)]
enum End<'a> {
    /// es-sync: [`e2e_tests::es_sync_drained`] for [`DRAIN_LOOKS`] looks
    /// in a row.
    EsSync(&'a Child),
    /// Monstache: its done count unchanged for [`MONSTACHE_STILL_LOOKS`].
    Monstache(&'a Child),
}

impl<'a> End<'a> {
    /// es-sync or Monstache among the run's processes.
    fn of(t: &Target<'a>) -> Option<Self> {
        t.procs.iter().find_map(|(n, c)| match *n {
            "es_sync" => Some(End::EsSync(c)),
            "monstache" => Some(End::Monstache(c)),
            _ => None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            End::EsSync(_) => "es-sync",
            End::Monstache(_) => "Monstache",
        }
    }

    fn looks_needed(self) -> u32 {
        match self {
            End::EsSync(_) => DRAIN_LOOKS,
            End::Monstache(_) => MONSTACHE_STILL_LOOKS,
        }
    }

    /// One look: whether it seems done; `last` is Monstache's count at the
    /// look before.
    async fn looks_done(self, last: &mut Option<f64>) -> bool {
        match self {
            End::EsSync(c) => crate::clients::metrics::scrape(&c.admin)
                .await
                .as_deref()
                .is_some_and(e2e_tests::es_sync_drained),
            End::Monstache(c) => {
                let n = crate::peers::monstache::succeeded(&c.admin).await;
                last.replace(n) == Some(n)
            }
        }
    }
}

/// Before a run: waits until the pipeline has done the changes of the
/// runs before it, so a run never measures the backlog another left (a
/// 200/s run after a 5,000/s one measured 84 s); see [`End`]. Returns the
/// seconds waited and whether it drained within [`DRAIN_TIMEOUT`].
async fn wait_drained(t: &Target<'_>) -> Value {
    let Some(end) = End::of(t) else {
        return Value::Null;
    };
    let t0 = Instant::now();
    let (mut looks, mut last) = (0, None);
    let needed = end.looks_needed();
    while looks < needed && t0.elapsed() < DRAIN_TIMEOUT {
        looks = if end.looks_done(&mut last).await {
            looks + 1
        } else {
            0
        };
        tokio::time::sleep(DRAIN_STEP).await;
    }
    let secs = round(t0.elapsed().as_secs_f64(), 1);
    if looks < needed {
        log(&format!(
            "[latency] {} still had work after {secs} s: the run starts anyway",
            end.name()
        ));
    }
    json!({"seconds": secs, "drained": looks >= needed})
}

/// Longest warm-up run.
const WARM_UP_SECS: u64 = 15;

/// A warm-up run at the lowest rate, not counted: the servers' JVMs start
/// fresh for each phase, and their JIT compilers took a fifth of the
/// servers' core in the first run (measured per thread; the first run at
/// 200/s had twice the p99 of the second). Returns what it saw (reported
/// apart from the runs).
pub async fn warm_up(cx: &Ctx, t: &Target<'_>, w: &mut Workload, tick: &mut i64) -> Result<Value> {
    let per_s = cx.o.rates.iter().copied().min().unwrap_or(200);
    let secs = cx.o.rate_secs.min(WARM_UP_SECS);
    let (v, _) = run_at_rate(cx, t, w, per_s, secs, tick).await?;
    log(&format!(
        "[latency] warm-up at {per_s}/s for {secs} s done (not counted)"
    ));
    Ok(json!({
        "target_per_s": per_s,
        "seconds": secs,
        "latency_ms": v["latency_ms"],
    }))
}

/// Step of a run's timeline (and of its metric samples).
const TIMELINE_STEP: Duration = Duration::from_millis(500);

/// A run's progress by whole second from its start: for each named series
/// of `[t, cumulative count]`, the count at the last point at or before
/// each second (changes sent, mongo-source's events, es-sync's documents),
/// counted from the series' first point (the binaries' counters carry over
/// runs), from 0 to `secs` plus the stragglers' time. Where a stage falls behind
/// the one before it shows which one limits the latency.
pub fn timeline(series: &[(&str, Vec<[f64; 2]>)], secs: u64) -> Value {
    let end = series
        .iter()
        .filter_map(|(_, s)| s.last().map(|p| p[0].ceil() as u64))
        .max()
        .unwrap_or(secs)
        .max(secs);
    let mut out = serde_json::Map::new();
    out.insert("t".into(), json!((0..=end).collect::<Vec<_>>()));
    for (name, s) in series {
        let base = s.first().map_or(0.0, |p| p[1]);
        let at = |sec: u64| {
            s.iter()
                .take_while(|p| p[0] <= sec as f64)
                .last()
                .map_or(0.0, |p| p[1] - base)
        };
        out.insert((*name).into(), json!((0..=end).map(at).collect::<Vec<_>>()));
    }
    Value::Object(out)
}

/// Pools the runs of each rate: latencies, CDF, by kind, and the spread of
/// the runs' p99 and achieved rates.
pub fn pool(rates: &[u64], runs: &[(Value, Vec<(Kind, f64)>)]) -> Value {
    let mut out = vec![];
    for &r in rates {
        let mine: Vec<&(Value, Vec<(Kind, f64)>)> = runs
            .iter()
            .filter(|(v, _)| v["target_per_s"].as_u64() == Some(r))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let lat: Vec<(Kind, f64)> = mine.iter().flat_map(|(_, l)| l.iter().copied()).collect();
        let all = sorted(&lat.iter().map(|l| l.1).collect::<Vec<_>>());
        let by_kind: serde_json::Map<String, Value> = [Kind::Insert, Kind::Update, Kind::Delete]
            .iter()
            .map(|k| {
                let v: Vec<f64> = lat.iter().filter(|l| l.0 == *k).map(|l| l.1).collect();
                (k.name().to_string(), latency_json(&sorted(&v)))
            })
            .collect();
        let col = |f: &dyn Fn(&Value) -> Option<f64>| -> Vec<f64> {
            mine.iter().map(|(v, _)| f(v).unwrap_or(f64::NAN)).collect()
        };
        out.push(json!({
            "target_per_s": r,
            "runs": mine.len(),
            "achieved_per_s": summary_json(&col(&|v| v["achieved_per_s"].as_f64()), 0),
            "changes": mine.iter().map(|(v, _)| v["changes"].as_u64().unwrap_or(0)).sum::<u64>(),
            "missing_after_60s": mine.iter().map(|(v, _)| v["missing_after_60s"].as_u64().unwrap_or(0)).sum::<u64>(),
            "latency_ms": latency_json(&all),
            "p99_per_run_ms": summary_json(&col(&|v| v["latency_ms"]["p99"].as_f64()), 0),
            "latency_by_kind_ms": by_kind,
            "latency_cdf_ms": cdf(&all),
        }));
    }
    json!(out)
}

/// The refresh interval of `config/indices/cards.json`.
pub fn refresh_interval(cx: &Ctx) -> String {
    std::fs::read_to_string(cx.index_dir().join("cards.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["settings"]["refresh_interval"].as_str().map(String::from))
        .unwrap_or_else(|| "1s".into())
}

/// The phase: both binaries from now on a fresh database.
pub async fn run(cx: &Ctx, tag: &str) -> Result<Value> {
    let uri =
        cx.o.mongo_rs_uri
            .clone()
            .unwrap_or_else(|| cx.o.mongo_uri.clone());
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let names = Names {
        db: format!("bench_{tag}"),
        prefix: format!("b{tag}"),
    };
    kafka::create_topics(&cx.o.kafka, &names.topics(), cx.o.partitions).await?;
    let db = client.database(&names.db);
    // The collections exist before the streams open.
    for c in ["card", "reply"] {
        db.collection::<Document>(c)
            .insert_one(doc! {"_id": format!("warm-{c}")})
            .await?;
    }
    let mut src = ours::spawn_source(
        cx,
        &uri,
        &names,
        "mode = \"now\"".into(),
        "exactly_once",
        tag,
    )?;
    let mut snk = ours::spawn_sync(
        cx,
        &names,
        &format!("{}-sync", names.prefix),
        &names.prefix,
        tag,
        None,
    )?;
    src.wait_ready("mongo-source", Duration::from_secs(90))
        .await?;
    snk.wait_ready("es-sync", Duration::from_secs(90)).await?;
    let alias = format!("{}-cards", names.prefix);
    let cards = db.collection::<Document>("card");
    let mut w = Workload::new(cx.o.seed + 1);
    let flowing = wait_flowing(&cx.es, &alias, &cards, &mut w).await?;
    log(&format!("[{tag}] pipeline flowing after {flowing:.1} s"));
    let target = Target {
        alias: &alias,
        cards: &cards,
        procs: vec![("mongo_source", &src), ("es_sync", &snk)],
        track: Arc::default(),
    };
    let mut runs = vec![];
    let mut tick = 0i64;
    let warm = warm_up(cx, &target, &mut w, &mut tick).await?;
    for _ in 0..cx.o.rate_runs {
        for &r in &cx.o.rates {
            runs.push(run_at_rate(cx, &target, &mut w, r, cx.o.rate_secs, &mut tick).await?);
        }
    }
    drop(target);
    let peak = |c: &Child| c.mon.samples().iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    let (src_peak, snk_peak) = (peak(&src), peak(&snk));
    src.stop().await?;
    snk.stop().await?;
    Ok(json!({
        "server": uri,
        "refresh_interval": refresh_interval(cx),
        "method": METHOD,
        "mix": MIX,
        "rates": pool(&cx.o.rates, &runs),
        "warm_up": warm,
        "runs": runs.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
        "mongo_source_peak_rss_mib": round(src_peak as f64 / 1024.0, 1),
        "es_sync_peak_rss_mib": round(snk_peak as f64 / 1024.0, 1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_counts_each_series_at_whole_seconds_from_its_first_sample() {
        let sent = vec![[0.0, 0.0], [0.2, 10.0], [0.9, 20.0], [1.5, 30.0]];
        let events = vec![[0.0, 100.0], [1.0, 105.0], [2.4, 130.0]];
        let t = timeline(&[("sent", sent), ("mongo_source", events)], 1);
        assert_eq!(t["t"], json!([0, 1, 2, 3]));
        assert_eq!(t["sent"], json!([0.0, 20.0, 30.0, 30.0]));
        // Counted from the run's first sample (counters carry over runs).
        assert_eq!(t["mongo_source"], json!([0.0, 5.0, 5.0, 30.0]));
    }

    #[test]
    fn runs_of_a_rate_are_pooled_with_the_spread_of_their_p99() {
        let run = |r: u64, p99: f64, lat: Vec<f64>| {
            (
                json!({"target_per_s": r, "achieved_per_s": r as f64, "changes": lat.len(), "missing_after_60s": 0, "latency_ms": {"p99": p99}}),
                lat.into_iter()
                    .map(|l| (Kind::Insert, l))
                    .collect::<Vec<_>>(),
            )
        };
        let runs = vec![
            run(200, 10.0, vec![1.0, 2.0, 10.0]),
            run(1000, 50.0, vec![50.0]),
            run(200, 30.0, vec![3.0, 30.0]),
        ];
        let p = pool(&[200, 1000, 5000], &runs);
        let p = p.as_array().expect("array");
        assert_eq!(p.len(), 2, "no run at 5000");
        assert_eq!(p[0]["runs"], json!(2));
        assert_eq!(p[0]["changes"], json!(5));
        assert_eq!(p[0]["latency_ms"]["count"], json!(5));
        assert_eq!(p[0]["latency_ms"]["max"], json!(30.0));
        assert_eq!(p[0]["p99_per_run_ms"]["median"], json!(20.0));
        assert_eq!(p[0]["latency_by_kind_ms"]["insert"]["count"], json!(5));
        assert_eq!(p[0]["latency_cdf_ms"].as_array().map(Vec::len), Some(101));
    }
}
