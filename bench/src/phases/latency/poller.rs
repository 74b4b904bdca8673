//! The searchable-side of a latency run: a poll every [`INTERVAL`], fixed
//! whatever the searches take (each poll runs as its own task, at most
//! [`MAX_IN_FLIGHT`] at once; a tick with that many still running is
//! skipped and counted), each one `_msearch` of two small searches: a
//! size-0 `terms` aggregation on `likes` over the pending tags, and an
//! `ids` query without `_source` over the pending deletes. A change counts
//! as searchable at the send time of the first poll that shows it.

use super::track::{Snapshot, Track};
use crate::clients::es::Es;
use crate::stats::{percentile, round, sorted};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between polls.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Polls running at once at most (two: the node's search pool on one
/// core has two threads, and more polls at once only take CPU from the
/// indexing being measured).
pub const MAX_IN_FLIGHT: usize = 2;

/// The body of one poll (`_msearch` NDJSON) for `snap` on `alias`.
pub fn body(alias: &str, snap: &Snapshot) -> String {
    let mut lines = vec![];
    if !snap.tags.is_empty() {
        lines.push(json!({"index": alias}).to_string());
        lines.push(
            json!({
                "size": 0,
                "query": {"terms": {"likes": snap.tags}},
                "aggs": {"tags": {"terms": {"field": "likes", "size": snap.tags.len()}}},
            })
            .to_string(),
        );
    }
    if !snap.deletes.is_empty() {
        lines.push(json!({"index": alias}).to_string());
        lines.push(
            json!({
                "size": snap.deletes.len(),
                "_source": false,
                "query": {"ids": {"values": snap.deletes}},
            })
            .to_string(),
        );
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Tag counts and present ids from an `_msearch` answer to [`body`];
/// `None` if a search failed.
pub fn parse(snap: &Snapshot, v: &Value) -> Option<(HashMap<i64, u64>, HashSet<String>)> {
    let responses = v["responses"].as_array()?;
    let mut it = responses.iter();
    let mut counts = HashMap::new();
    if !snap.tags.is_empty() {
        let r = it.next()?;
        for b in r["aggregations"]["tags"]["buckets"].as_array()? {
            counts.insert(b["key"].as_i64()?, b["doc_count"].as_u64()?);
        }
    }
    let mut present = HashSet::new();
    if !snap.deletes.is_empty() {
        let r = it.next()?;
        for h in r["hits"]["hits"].as_array()? {
            present.insert(h["_id"].as_str()?.to_string());
        }
    }
    Some((counts, present))
}

/// A running poller.
pub struct Poller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    polls: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    ms: Mutex<Vec<f64>>,
}

impl Poller {
    /// Starts polling `alias` for the changes in `track`.
    pub fn start(es: &Es, alias: &str, track: Arc<Mutex<Track>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (es, alias, flag, st) = (es.clone(), alias.to_string(), stop.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let running = Arc::new(AtomicUsize::new(0));
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let snap = track.lock().expect("track").snapshot();
                if snap.tags.is_empty() && snap.deletes.is_empty() {
                    continue;
                }
                if running.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    st.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                running.fetch_add(1, Ordering::Relaxed);
                let (es, alias, track, st, running) = (
                    es.clone(),
                    alias.clone(),
                    track.clone(),
                    st.clone(),
                    running.clone(),
                );
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = es
                        .call(
                            Method::Post,
                            "/_msearch",
                            Some(body(&alias, &snap).into_bytes()),
                        )
                        .await;
                    st.polls.fetch_add(1, Ordering::Relaxed);
                    st.ms
                        .lock()
                        .expect("ms")
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                    match r
                        .ok()
                        .and_then(|(s, v)| (s == 200).then(|| parse(&snap, &v)).flatten())
                    {
                        Some((counts, present)) => {
                            track
                                .lock()
                                .expect("track")
                                .observe(sent, &snap, &counts, &present);
                        }
                        None => {
                            st.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Self { stop, task, stats }
    }

    /// Stops polling; returns what the polls cost.
    pub async fn stop(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Let the last polls land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ms = sorted(&self.stats.ms.lock().expect("ms"));
        json!({
            "interval_ms": INTERVAL.as_millis() as u64,
            "polls": self.stats.polls.load(Ordering::Relaxed),
            "skipped_ticks": self.stats.skipped.load(Ordering::Relaxed),
            "failed": self.stats.failed.load(Ordering::Relaxed),
            "poll_ms_p50": round(percentile(&ms, 50.0), 1),
            "poll_ms_p99": round(percentile(&ms, 99.0), 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_poll_is_two_small_searches_and_its_answer_is_read_back() {
        let snap = Snapshot {
            tags: vec![1_000_003, 1_000_004],
            deletes: vec!["a".into(), "b".into()],
        };
        let b = body("x-cards", &snap);
        let lines: Vec<Value> = b
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1]["size"], json!(0));
        assert_eq!(lines[1]["aggs"]["tags"]["terms"]["size"], json!(2));
        assert_eq!(lines[3]["_source"], json!(false));
        let answer = json!({"responses": [
            {"aggregations": {"tags": {"buckets": [{"key": 1_000_003, "doc_count": 5}]}}},
            {"hits": {"hits": [{"_id": "b"}]}}
        ]});
        let (counts, present) = parse(&snap, &answer).expect("parsed");
        assert_eq!(counts.get(&1_000_003), Some(&5));
        assert!(present.contains("b") && !present.contains("a"));
        // Only deletes pending: one search.
        let only = Snapshot {
            tags: vec![],
            deletes: vec!["a".into()],
        };
        assert_eq!(body("x", &only).lines().count(), 2);
        let answer = json!({"responses": [{"hits": {"hits": []}}]});
        let (c, p) = parse(&only, &answer).expect("parsed");
        assert!(c.is_empty() && p.is_empty());
        assert!(parse(&snap, &json!({"error": "x"})).is_none());
    }
}
