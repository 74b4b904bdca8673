//! Freshness as a searcher sees it (issue 16, section 4), checked against
//! an independent measurement on the real bench: cards written to MongoDB
//! through the whole pipeline (mongo-source -> Kafka -> es-sync ->
//! Elasticsearch), and a searcher that asks `_search` for them every
//! [`SEARCH_EVERY`] (never a `_refresh`: documents appear when
//! Elasticsearch refreshes by itself, `refresh_interval: 1s` in the shipped
//! index files). For each card the test knows:
//!
//! - its commit: between the start and the return of its `insert_one`
//!   (the middle is taken; MongoDB's `wallTime`, which es-sync uses, lies
//!   in that span, so the middle is off by at most half of it);
//! - when it became searchable: after the sending of the last search that
//!   did not find it (`lo`) and before the answer of the first one that
//!   did (`hi`).
//!
//! So its true freshness lies in `[lo - commit, hi - commit]`, whatever the
//! scheduling of this test. es-sync's `es_sync_freshness_seconds` must then
//! give, for the same cards (the delta of its `_sum` / `_count` after a
//! first card), a mean inside:
//!
//! - **below**: `mean(lo) - max half insert span`. The metric reads the
//!   end after Elasticsearch's refresh statistics showed the refresh, so
//!   it is never below the truth (same host: no clock skew).
//! - **above**: `mean(hi) + poll interval + 50 ms + 0.3 x refresh
//!   interval`. The metric notices a refresh at its next statistics read
//!   (at most one poll interval, 100 ms, plus the read itself); and a card
//!   indexed shortly before a refresh but acknowledged or read after it is
//!   counted at the following refresh (es-sync cannot tell the order; see
//!   `sync/src/freshness/mod.rs`): expected for about `(bulk latency + poll
//!   interval / 2) / refresh interval` of the cards, ~6-15 % here, so 30 %
//!   leaves room for a slow machine while a metric that waits one refresh
//!   too many (+1 s on every card) or ignores the refresh (-0.5 s on
//!   average) fails.
//!
//! The median and 99th percentile of `/status` (the window holds every
//! card, the first one included) are checked the same way against the
//! quantiles of the measured bounds, plus the 0.8 % precision of its bins
//! (details at the assertion).

use e2e_tests::e2e::Pipeline;
use e2e_tests::{elasticsearch_url, eventually, http_get, http_json_client, metric_value, mongo};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cards measured after the first one.
const N: usize = 60;
/// Pace of the writes: not a divisor of the 1 s refresh interval, so the
/// commits fall at every phase of it.
const WRITE_EVERY: Duration = Duration::from_millis(170);
/// Pace of the searcher.
const SEARCH_EVERY: Duration = Duration::from_millis(25);
/// Elasticsearch's refresh interval of the shipped index files.
const REFRESH_INTERVAL_S: f64 = 1.0;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the test measured of one card (ms since the epoch).
#[derive(Debug, Clone, Default)]
struct Card {
    /// `insert_one` started and returned.
    written: Option<(i64, i64)>,
    /// Sending time of the last search that did not find it.
    missed: Option<i64>,
    /// `(lo, hi)` once found.
    found: Option<(i64, i64)>,
}

impl Card {
    fn commit(&self) -> f64 {
        let (a, b) = self.written.expect("written");
        (a + b) as f64 / 2.0
    }

    /// `(lo, hi)` freshness, seconds.
    fn bounds(&self) -> (f64, f64) {
        let (lo, hi) = self.found.expect("found");
        let c = self.commit();
        ((lo as f64 - c) / 1000.0, (hi as f64 - c) / 1000.0)
    }
}

type Cards = Arc<Mutex<BTreeMap<String, Card>>>;

fn lock(cards: &Cards) -> std::sync::MutexGuard<'_, BTreeMap<String, Card>> {
    cards.lock().unwrap_or_else(|e| e.into_inner())
}

/// Searches for every written, not yet found card every [`SEARCH_EVERY`]
/// until `stop`.
fn spawn_searcher(alias: String, cards: Cards, stop: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        let client = http_json_client();
        let url = format!("{}/{alias}/_search", elasticsearch_url());
        let mut tick = tokio::time::interval(SEARCH_EVERY);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            let ids: Vec<String> = {
                let g = lock(&cards);
                g.iter()
                    .filter(|(_, c)| c.written.is_some() && c.found.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            if ids.is_empty() {
                continue;
            }
            let body =
                json!({"query": {"ids": {"values": ids}}, "size": ids.len(), "_source": false});
            let sent = now_ms();
            let answer = client.post(&url, Some(body)).await;
            let received = now_ms();
            let hits: Vec<String> = answer
                .as_ref()
                .and_then(|v| v["hits"]["hits"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|h| h["_id"].as_str().map(String::from))
                .collect();
            if answer.as_ref().is_none_or(|v| v.get("hits").is_none()) {
                continue; // no answer (the index is not there yet): says nothing
            }
            let mut g = lock(&cards);
            for id in ids {
                let Some(c) = g.get_mut(&id) else { continue };
                if hits.contains(&id) {
                    let lo = c.missed.unwrap_or(c.written.map_or(sent, |w| w.1));
                    c.found = Some((lo, received));
                } else {
                    c.missed = Some(sent);
                }
            }
        }
    });
}

async fn write_card(coll: &mongodb::Collection<Document>, cards: &Cards, id: &str) {
    let before = now_ms();
    coll.insert_one(doc! {"_id": id, "title": format!("신선도 {id}"), "likes": 1_i32})
        .await
        .expect("insert");
    let after = now_ms();
    lock(cards).entry(id.to_string()).or_default().written = Some((before, after));
}

async fn metrics(p: &Pipeline) -> (f64, f64) {
    let text = http_get(p.sync_admin_port, "/metrics")
        .await
        .unwrap_or_default();
    let get = |s: &str| {
        metric_value(
            &text,
            &format!("es_sync_freshness_seconds_{s}{{index=\"{}\"}}", p.cards),
        )
        .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The `ceil(q * n)`-th smallest, like the metric's quantiles.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freshness_metric_matches_when_searches_find_the_documents() {
    let poll_s = es_sync::freshness::FreshnessConfig::default().poll_interval_ms as f64 / 1000.0;
    let p = Pipeline::new();
    let started = std::time::Instant::now();
    let coll = mongo()
        .await
        .database(&p.source.db)
        .collection::<Document>("card");
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();
    let cards: Cards = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    spawn_searcher(p.cards.clone(), cards.clone(), stop.clone());

    // Past the snapshot (a copy has no commit of its own and is not
    // measured), a first card: the pipeline is up (group joined, alias
    // created).
    p.source.wait_snapshot_done("card").await;
    write_card(&coll, &cards, "first").await;
    let first_seen = || {
        let cards = cards.clone();
        async move { lock(&cards)["first"].found.map(|_| ()) }
    };
    eventually(
        "the first card searchable",
        Duration::from_secs(120),
        first_seen,
    )
    .await;
    let (sum0, count0) = eventually(
        "the first card measured",
        Duration::from_secs(30),
        || async {
            let (s, c) = metrics(&p).await;
            (c >= 1.0).then_some((s, c))
        },
    )
    .await;
    assert_eq!(count0, 1.0, "one card so far");

    let ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    let mut pace = tokio::time::interval(WRITE_EVERY);
    for id in &ids {
        pace.tick().await;
        write_card(&coll, &cards, id).await;
    }
    eventually("every card searchable", Duration::from_secs(60), || async {
        let g = lock(&cards);
        g.values().all(|c| c.found.is_some()).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sum1, count1) = eventually("every card measured", Duration::from_secs(30), || async {
        let (s, c) = metrics(&p).await;
        (c >= count0 + N as f64).then_some((s, c))
    })
    .await;
    assert_eq!(count1, count0 + N as f64, "one observation per card");
    let metric_mean = (sum1 - sum0) / N as f64;

    let g = lock(&cards).clone();
    let measured: Vec<(f64, f64)> = ids.iter().map(|id| g[id].bounds()).collect();
    let lo: Vec<f64> = measured.iter().map(|b| b.0).collect();
    let hi: Vec<f64> = measured.iter().map(|b| b.1).collect();
    let half_insert = g
        .values()
        .map(|c| c.written.map_or(0, |(a, b)| b - a))
        .max()
        .unwrap_or(0) as f64
        / 2000.0;
    let below = half_insert + 0.005;
    let above = poll_s + 0.05 + 0.3 * REFRESH_INTERVAL_S;

    // /status: every card, the first one included.
    let all: Vec<(f64, f64)> = g.values().map(Card::bounds).collect();
    let all_lo: Vec<f64> = all.iter().map(|b| b.0).collect();
    let all_hi: Vec<f64> = all.iter().map(|b| b.1).collect();
    let status = eventually(
        "/status shows every card",
        Duration::from_secs(10),
        || async {
            let text = http_get(p.sync_admin_port, "/status").await?;
            let v: Value = serde_json::from_str(&text).ok()?;
            let f = v["freshness"][&p.cards].clone();
            (f["documents"].as_u64() == Some(N as u64 + 1)).then_some(f)
        },
    )
    .await;
    let p50 = status["p50_seconds"].as_f64().expect("p50");
    let p99 = status["p99_seconds"].as_f64().expect("p99");
    assert_eq!(status["pending_documents"], 0);

    eprintln!(
        "freshness of {N} cards (s): measured mean in [{:.3}, {:.3}], metric mean {metric_mean:.3} \
         (allowed [{:.3}, {:.3}]); median measured in [{:.3}, {:.3}], /status p50 {p50:.3}; \
         p99 measured in [{:.3}, {:.3}], /status p99 {p99:.3}; search every {:?}, half insert {half_insert:.3}",
        mean(&lo),
        mean(&hi),
        mean(&lo) - below,
        mean(&hi) + above,
        quantile(&all_lo, 0.5),
        quantile(&all_hi, 0.5),
        quantile(&all_lo, 0.99),
        quantile(&all_hi, 0.99),
        SEARCH_EVERY,
    );
    assert!(
        metric_mean >= mean(&lo) - below && metric_mean <= mean(&hi) + above,
        "metric mean {metric_mean:.3} s outside [{:.3}, {:.3}]",
        mean(&lo) - below,
        mean(&hi) + above
    );
    // The q-quantile of the true values lies between those of `lo` and
    // `hi`. Cards counted one refresh late (up to 30 %) can lift the
    // median up to the 0.8-quantile; the 99th percentile (here the
    // largest of 61) can be such a card itself: one refresh more.
    let detect = poll_s + 0.05;
    for (q, got, upper) in [
        (
            0.5,
            p50,
            quantile(&all_hi, 0.8) * (1.0 + 1.0 / 128.0) + detect,
        ),
        (
            0.99,
            p99,
            quantile(&all_hi, 0.99) * (1.0 + 1.0 / 128.0) + detect + REFRESH_INTERVAL_S,
        ),
    ] {
        let (min, max) = (quantile(&all_lo, q) * (1.0 - 1.0 / 128.0) - below, upper);
        assert!(
            got >= min && got <= max,
            "/status q{q} {got:.3} s outside [{min:.3}, {max:.3}]"
        );
    }

    // Its cost: at most one statistics read per poll interval (and one
    // settings read per 30 s) while documents wait, none once none do.
    let polled = freshness_requests(&p).await;
    let bound =
        started.elapsed().as_secs_f64() / poll_s + started.elapsed().as_secs_f64() / 30.0 + 2.0;
    assert!(
        polled >= 1.0 && polled <= bound,
        "{polled} freshness requests in {:?} (at most {bound:.0})",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        freshness_requests(&p).await,
        polled,
        "a quiet alias is not polled"
    );
    eprintln!(
        "freshness requests: {polled} in {:.1} s (poll interval {poll_s} s)",
        started.elapsed().as_secs_f64()
    );

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}

/// `es_sync_freshness_requests_total` of the cards' alias.
async fn freshness_requests(p: &Pipeline) -> f64 {
    let text = http_get(p.sync_admin_port, "/metrics")
        .await
        .unwrap_or_default();
    metric_value(
        &text,
        &format!("es_sync_freshness_requests_total{{index=\"{}\"}}", p.cards),
    )
    .unwrap_or(0.0)
}
