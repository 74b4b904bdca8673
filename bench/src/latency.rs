//! Phase 3 (and the latency rows of 4): commit-to-searchable latency at
//! fixed rates with a mixed stream of changes, both binaries running (also
//! used for Monstache, `peers/monstache.rs`).

use crate::{
    es, free_port, kafka, log, pct, procmon, rate, round, source_toml, spawn_es_sync, usage_json,
    workload, Child, Names, Opts,
};
use anyhow::{bail, Result};
use elasticsearch::http::Method;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Phase 3 + 4: end-to-end latency at fixed rates, both binaries running.
pub async fn phase_latency(o: &Opts, tag: &str) -> Result<Value> {
    let client = mongodb::Client::with_uri_str(&o.mongo_uri).await?;
    let names = Names {
        db: format!("bench_{tag}"),
        prefix: format!("b{tag}"),
    };
    kafka::create_topics(&o.kafka, &names.topics(), 3).await?;
    let db = client.database(&names.db);
    // The collections exist before the streams open.
    db.collection::<Document>("card")
        .insert_one(doc! {"_id": "warm-card"})
        .await?;
    db.collection::<Document>("reply")
        .insert_one(doc! {"_id": "warm-reply"})
        .await?;
    let sadmin = format!("127.0.0.1:{}", free_port()?);
    let scfg = o.work.join(format!("mongo-source-{tag}.toml"));
    std::fs::write(
        &scfg,
        source_toml(o, &o.mongo_uri, &names, &sadmin, "mode = \"now\""),
    )?;
    let mut src = Child::spawn(
        &o.bin_dir.join("mongo-source"),
        &scfg,
        sadmin,
        &o.work.join(format!("mongo-source-{tag}.log")),
    )
    .await?;
    let mut snk = spawn_es_sync(o, &names, &format!("{}-sync", names.prefix), tag).await?;
    src.wait_ready("mongo-source", Duration::from_secs(90))
        .await?;
    snk.wait_ready("es-sync", Duration::from_secs(90)).await?;
    let es = es::Es::new(&o.es)?;
    let alias = format!("{}-cards", names.prefix);
    let refresh = std::fs::read_to_string(o.repo.join("config/indices/cards.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["settings"]["refresh_interval"].as_str().map(String::from))
        .unwrap_or_else(|| "1s".into());
    let mut w = workload::Workload::new(o.seed + 1);
    let cards = db.collection::<Document>("card");
    let flowing = wait_flowing(&es, &alias, &cards, &mut w).await?;
    log(&format!("[{tag}] pipeline flowing after {flowing:.1} s"));
    let mut runs = vec![];
    for &r in &o.rates {
        let v = latency_run(o, &es, &alias, &cards, &mut w, r, &src, &snk).await?;
        runs.push(v);
    }
    let peak = |c: &Child| c.mon.samples().iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    let (src_peak, snk_peak) = (peak(&src), peak(&snk));
    src.stop().await?;
    snk.stop().await?;
    Ok(json!({
        "refresh_interval": refresh,
        "runs": runs,
        "mongo_source_peak_rss_mib": round(src_peak as f64 / 1024.0, 1),
        "es_sync_peak_rss_mib": round(snk_peak as f64 / 1024.0, 1),
        "method": METHOD,
        "mix": MIX
    }))
}

/// Warm-up: a card every 500 ms until one is searchable in `alias` (streams
/// open, index bootstrapped); returns the seconds it took.
pub async fn wait_flowing(
    es: &es::Es,
    alias: &str,
    cards: &mongodb::Collection<Document>,
    w: &mut workload::Workload,
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

/// How the latency runs measure (shown in the report).
pub const METHOD: &str = "a mixed stream of card changes, issued every 10 ms to keep the rate: 6 in 10 inserts \
(`insert_many`), 3 in 10 updates of a card already searchable (`update_many` on their ids setting `likes` to a \
value unique to the tick), 1 in 10 deletes of one (`delete_many`); commit time = the write's acknowledgement; \
searchable = first `_search` (terms on _id, `likes` from doc values, every 50 ms) that shows the change (the id \
present; with the new `likes`; or gone); latency includes up to 50 ms of polling granularity";

/// The share of each kind of change, out of 10.
pub const MIX: &str = "60% insert / 30% update / 10% delete";

/// What a change must look like in the index to count as searchable.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// The id is found.
    Present,
    /// The id is found with this `likes`.
    Likes(i64),
    /// The id is no longer found.
    Absent,
}

impl Expect {
    fn kind(self) -> &'static str {
        match self {
            Self::Present => "insert",
            Self::Likes(_) => "update",
            Self::Absent => "delete",
        }
    }

    /// Whether a search hit (`Some(likes)` when the id was found) shows it.
    fn met(self, hit: Option<Option<i64>>) -> bool {
        match self {
            Self::Present => hit.is_some(),
            Self::Likes(l) => hit == Some(Some(l)),
            Self::Absent => hit.is_none(),
        }
    }
}

/// The kind of the `n`-th change of a run: 6 in 10 inserts, 3 updates, 1 delete.
fn kind_of(n: u64) -> u8 {
    match n % 10 {
        0..=5 => 0,
        6..=8 => 1,
        _ => 2,
    }
}

type Pending = std::sync::Arc<std::sync::Mutex<HashMap<String, (Instant, Expect)>>>;

/// Polls Elasticsearch until `stop` and nothing pending: each change found
/// in the state it expects is timed, and a card inserted or updated goes
/// back to `settled` (free for the next update or delete).
fn spawn_poller(
    es: &es::Es,
    alias: &str,
    pending: Pending,
    lat: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, f64)>>>,
    settled: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (es, alias) = (es.clone(), alias.to_string());
    tokio::spawn(async move {
        loop {
            // At most index.max_result_window (10,000) per search.
            let ids: Vec<String> = pending
                .lock()
                .expect("p")
                .keys()
                .take(10_000)
                .cloned()
                .collect();
            if ids.is_empty() && stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if !ids.is_empty() {
                // `likes` from doc values: loading each hit's `_source` (bodies
                // up to ~6,000 words) every 50 ms slowed the node it measures.
                let body = json!({"size": ids.len(), "_source": false, "docvalue_fields": ["likes"], "query": {"terms": {"_id": ids}}});
                if let Ok((200, v)) = es
                    .call(
                        Method::Post,
                        &format!("/{alias}/_search"),
                        Some(body.to_string().into_bytes()),
                    )
                    .await
                {
                    let now = Instant::now();
                    let hits: HashMap<String, Option<i64>> = v["hits"]["hits"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|h| {
                                    let id = h["_id"].as_str()?.to_string();
                                    Some((id, h["fields"]["likes"][0].as_i64()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut p = pending.lock().expect("p");
                    let mut l = lat.lock().expect("l");
                    let mut s = settled.lock().expect("s");
                    for id in ids {
                        let Some(&(at, expect)) = p.get(&id) else {
                            continue;
                        };
                        if expect.met(hits.get(&id).copied()) {
                            p.remove(&id);
                            l.push((expect.kind(), now.duration_since(at).as_secs_f64() * 1000.0));
                            if expect != Expect::Absent {
                                s.push(id);
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Issues the `k` changes due now (numbered from `first`) and records them
/// as pending from their acknowledgement.
async fn write_changes(
    cards: &mongodb::Collection<Document>,
    w: &mut workload::Workload,
    first: u64,
    k: u64,
    pending: &Pending,
    settled: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<()> {
    let (mut inserts, mut updates, mut deletes) = (vec![], vec![], vec![]);
    {
        let mut s = settled.lock().expect("s");
        for n in first..first + k {
            let kind = if s.is_empty() { 0 } else { kind_of(n) };
            match kind {
                0 => inserts.push(w.card()),
                // A pseudo-random settled card, taken out until its change shows.
                k => {
                    let i = (n.wrapping_mul(2_654_435_761) % s.len() as u64) as usize;
                    let id = s.swap_remove(i);
                    if k == 1 {
                        updates.push(id);
                    } else {
                        deletes.push(id);
                    }
                }
            }
        }
    }
    let oids = |ids: &[String]| -> Vec<Bson> {
        ids.iter()
            .filter_map(|i| mongodb::bson::oid::ObjectId::parse_str(i).ok())
            .map(Bson::ObjectId)
            .collect()
    };
    if !inserts.is_empty() {
        let ids: Vec<String> = inserts
            .iter()
            .filter_map(|d| {
                d.get("_id")
                    .and_then(Bson::as_object_id)
                    .map(|i| i.to_hex())
            })
            .collect();
        cards.insert_many(inserts).await?;
        let now = Instant::now();
        let mut p = pending.lock().expect("p");
        for id in ids {
            p.insert(id, (now, Expect::Present));
        }
    }
    if !updates.is_empty() {
        // Unique to this tick, far from the workload's own 0..500.
        let likes = 1_000_000 + i64::try_from(first).unwrap_or(i64::MAX - 1_000_000);
        cards
            .update_many(
                doc! {"_id": {"$in": oids(&updates)}},
                doc! {"$set": {"likes": likes, "updated_at": mongodb::bson::DateTime::now()}},
            )
            .await?;
        let now = Instant::now();
        let mut p = pending.lock().expect("p");
        for id in updates {
            p.insert(id, (now, Expect::Likes(likes)));
        }
    }
    if !deletes.is_empty() {
        cards
            .delete_many(doc! {"_id": {"$in": oids(&deletes)}})
            .await?;
        let now = Instant::now();
        let mut p = pending.lock().expect("p");
        for id in deletes {
            p.insert(id, (now, Expect::Absent));
        }
    }
    Ok(())
}

fn summary(sorted: &[f64]) -> Value {
    json!({
        "count": sorted.len(),
        "p50": round(pct(sorted, 50.0), 0), "p95": round(pct(sorted, 95.0), 0),
        "p99": round(pct(sorted, 99.0), 0), "max": round(sorted.last().copied().unwrap_or(0.0), 0),
    })
}

/// One run at `rate_per_s` changes/s for `o.rate_secs`.
#[allow(clippy::too_many_arguments)]
pub async fn latency_run(
    o: &Opts,
    es: &es::Es,
    alias: &str,
    cards: &mongodb::Collection<Document>,
    w: &mut workload::Workload,
    rate_per_s: u64,
    src: &Child,
    snk: &Child,
) -> Result<Value> {
    use std::sync::{Arc, Mutex};
    let pending: Pending = Arc::default();
    let lat: Arc<Mutex<Vec<(&'static str, f64)>>> = Arc::default();
    let settled: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = spawn_poller(
        es,
        alias,
        pending.clone(),
        lat.clone(),
        settled.clone(),
        stop.clone(),
    );
    let dur = Duration::from_secs(o.rate_secs);
    let (s0, y0) = (src.mon.now(), snk.mon.now());
    let (m0, e0) = (
        src.metric("mongo_source_events_total").await,
        snk.metric("es_sync_documents_total").await,
    );
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while t0.elapsed() < dur {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * rate_per_s as f64) as u64;
        if due <= sent {
            continue;
        }
        let k = (due - sent).min(rate_per_s.max(100));
        write_changes(cards, w, sent, k, &pending, &settled).await?;
        sent += k;
    }
    let write_s = t0.elapsed().as_secs_f64();
    // Wait up to 60 s for the stragglers.
    let t1 = Instant::now();
    while !pending.lock().expect("p").is_empty() && t1.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let missing = pending.lock().expect("p").len();
    pending.lock().expect("p").clear();
    poller.await?;
    let (s1, y1) = (src.mon.now(), snk.mon.now());
    let (m1, e1) = (
        src.metric("mongo_source_events_total").await,
        snk.metric("es_sync_documents_total").await,
    );
    let timed = lat.lock().expect("l").clone();
    let sorted = |f: &dyn Fn(&str) -> bool| {
        let mut v: Vec<f64> = timed
            .iter()
            .filter(|(k, _)| f(k))
            .map(|(_, x)| *x)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let l = sorted(&|_| true);
    let by_kind: serde_json::Map<String, Value> = ["insert", "update", "delete"]
        .iter()
        .map(|k| ((*k).to_string(), summary(&sorted(&|x| x == *k))))
        .collect();
    let su = procmon::usage(&src.mon.samples(), s0, s1, (m1 - m0).max(0.0) as u64);
    let yu = procmon::usage(&snk.mon.samples(), y0, y1, (e1 - e0).max(0.0) as u64);
    let achieved = rate(sent, write_s);
    log(&format!(
        "[latency] target {rate_per_s}/s achieved {achieved:.0}/s: p50 {:.0} p95 {:.0} p99 {:.0} max {:.0} ms (p99 insert {} update {} delete {}), missing {missing}; RSS steady source {:.1} sync {:.1} MiB",
        pct(&l, 50.0), pct(&l, 95.0), pct(&l, 99.0), l.last().copied().unwrap_or(0.0),
        by_kind["insert"]["p99"], by_kind["update"]["p99"], by_kind["delete"]["p99"],
        su.steady_rss_mib, yu.steady_rss_mib
    ));
    Ok(json!({
        "target_per_s": rate_per_s,
        "achieved_per_s": round(achieved, 0),
        "seconds": o.rate_secs,
        "changes": sent,
        "measured": l.len(),
        "missing_after_60s": missing,
        "latency_ms": {
            "p50": round(pct(&l, 50.0), 0), "p95": round(pct(&l, 95.0), 0),
            "p99": round(pct(&l, 99.0), 0), "max": round(l.last().copied().unwrap_or(0.0), 0),
        },
        "latency_by_kind_ms": by_kind,
        // Latency CDF for the plot: the 0th..100th percentiles.
        "latency_cdf_ms": (0..=100).map(|p| round(pct(&l, f64::from(p)), 1)).collect::<Vec<_>>(),
        "mongo_source": usage_json(&su),
        "es_sync": usage_json(&yu),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_six_three_one() {
        let kinds: Vec<u8> = (0..1000).map(kind_of).collect();
        assert_eq!(kinds.iter().filter(|k| **k == 0).count(), 600);
        assert_eq!(kinds.iter().filter(|k| **k == 1).count(), 300);
        assert_eq!(kinds.iter().filter(|k| **k == 2).count(), 100);
    }

    #[test]
    fn a_change_counts_only_in_the_state_it_expects() {
        assert!(Expect::Present.met(Some(None)));
        assert!(!Expect::Present.met(None));
        assert!(Expect::Likes(7).met(Some(Some(7))));
        assert!(
            !Expect::Likes(7).met(Some(Some(3))),
            "old value still indexed"
        );
        assert!(!Expect::Likes(7).met(None));
        assert!(Expect::Absent.met(None));
        assert!(!Expect::Absent.met(Some(Some(1))), "not deleted yet");
    }
}
