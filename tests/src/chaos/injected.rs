//! Faults made on purpose inside the pipeline:
//!
//! - a panic: one es-sync bulk task of the card topic and one mongo-source
//!   change-stream task panic once each, at a seeded random bulk and event,
//!   through the test-only fault switch (`shared::faults`, armed by the
//!   environment of the binaries: `sync.bulk:{topic}`,
//!   `source.stream:{db}.{coll}`). Supervision must turn each into a logged
//!   error, a count (`es_sync_task_panics_total`, `mongo_source_errors_total
//!   {reason="task_died"}`) and a restart of that unit, losing nothing;
//! - clock skew of a sender: the suite writes, as a second producer would,
//!   `replace` events for cards of its own whose versions come from clocks
//!   that are wrong (docs/events.md#version, docs/sync.md "Versions es-sync
//!   refuses, and events from the future"; `consumer.max_future_seconds`
//!   is 5 s here):
//!   - versions ahead by 11-35 s from a host whose own clock is right (the
//!     records' timestamps are now): es-sync holds the partition until its
//!     clock reaches them (`/status` "waiting for the clocks"), then
//!     indexes them; never dead-lettered;
//!   - versions ahead from a host whose clock is as far ahead (timestamps
//!     ahead too): taken at once (the producer's clock vouches for them);
//!   - versions an hour behind, with other content: older than what the
//!     index holds, so they change nothing.
//!
//!   The cards carry the same content in MongoDB, and nothing else writes
//!   them afterwards (a version from a clock ahead freezes a document until
//!   the real clock passes it: that is the cost of such a sender).

use super::run::{Run, Setup};
use super::Fault;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `consumer.max_future_seconds` of the clock-skew runs.
const MAX_FUTURE: u64 = 5;

/// Arms the panics, or sets the clock limit.
pub fn setup(fault: Fault, s: &mut Setup) {
    match fault {
        Fault::TaskPanic => {
            // After this many bulks of the card topic and change events of
            // the card stream (past the snapshot in the full suite; the
            // short suite's come sooner).
            let (bulks, events) = if s.short {
                (10..40, 30..150)
            } else {
                (30..120, 100..600)
            };
            let bulk = s.rng.random_range(bulks);
            let event = s.rng.random_range(events);
            let topic = s.p.source.topic("card");
            s.sync(shared::faults::ENV, format!("sync.bulk:{topic}=1@{bulk}"));
            let stream = format!("{}.card", s.p.source.db);
            s.source(
                shared::faults::ENV,
                format!("source.stream:{stream}=1@{event}"),
            );
        }
        Fault::ClockSkew => s.sync("ES_SYNC__CONSUMER__MAX_FUTURE_SECONDS", MAX_FUTURE),
        other => unreachable!("{other:?} is not an injected fault"),
    }
}

/// Injects one of the injected faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    match fault {
        Fault::TaskPanic => panics(run).await,
        Fault::ClockSkew => clock_skew(run).await,
        other => unreachable!("{other:?} is not an injected fault"),
    }
}

async fn panics(run: &mut Run) {
    let stream = format!("{}.card", run.p.source.db);
    let died = format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"task_died\"}}");
    let t = Instant::now();
    crate::eventually(
        "both panics fired (the fault switch: build with `cargo build --workspace --bins`)",
        Duration::from_secs(240),
        || async {
            let sync = run.sync_metric("es_sync_task_panics_total").await;
            let source = run.source_metric(&died).await;
            (sync >= 1.0 && source >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(run.sync_metric("es_sync_task_panics_total").await, 1.0);
    assert_eq!(run.source_metric(&died).await, 1.0);
    run.note = format!(
        "both panicked within {:.0} s of the moment",
        t.elapsed().as_secs_f64()
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cards of the suite's own, written to MongoDB and waited for in the index.
async fn own_cards(run: &mut Run, n: usize, title: &str) -> Vec<(ObjectId, Document)> {
    let mut out = Vec::new();
    for k in 0..n {
        let id = ObjectId::new();
        let d = doc! {
            "_id": id, "title": format!("{title} {k}"), "body": "시계 오차 시험",
            "likes": k as i32, "mountain": "한라산", "created_at": DateTime::now(),
        };
        run.insert_card(d.clone()).await;
        out.push((id, d));
    }
    for (id, _) in &out {
        let key = crate::e2e::es_id(&Bson::ObjectId(*id));
        let alias = run.p.cards.clone();
        crate::eventually("an own card indexed", Duration::from_secs(120), || {
            let (alias, key) = (alias.clone(), key.clone());
            async move {
                crate::e2e::es_documents(&alias)
                    .await
                    .contains_key(&key)
                    .then_some(())
            }
        })
        .await;
    }
    out
}

/// Sends `replace` events of `cards` with cluster time `t` and record
/// timestamp `ts` (seconds), keyed and partitioned as mongo-source does.
async fn send(run: &Run, cards: &[(ObjectId, Document)], t: u64, ts: u64) {
    let producer: FutureProducer = crate::kafka::config()
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for (id, d) in cards {
        let t32 = u32::try_from(t).expect("a time before 2106");
        let ev = json!({
            "schema": shared::wire::event::SCHEMA,
            "op": "replace",
            "ns": {"db": run.p.source.db, "coll": "card"},
            "key": {"_id": shared::ejson::bson_to_json(&Bson::ObjectId(*id))},
            "doc": shared::ejson::document_to_json(d),
            "cluster_time": {"t": t32, "i": 1},
            "version": crate::sync_support::version(t32, 1),
        })
        .to_string();
        let key = shared::ejson::canonical_key(&Bson::ObjectId(*id));
        let topic = run.p.source.topic("card");
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&ev)
                    .timestamp((ts * 1000) as i64),
                Duration::from_secs(30),
            )
            .await
            .expect("send a skewed event");
    }
}

/// The `_sync.version` of card `id` in the index, if there.
async fn indexed_version(run: &Run, id: &ObjectId) -> Option<u64> {
    let key = crate::e2e::es_id(&Bson::ObjectId(*id));
    crate::e2e::es_documents(&run.p.cards).await.get(&key)?["_sync"]["version"].as_u64()
}

async fn clock_skew(run: &mut Run) {
    let skew = run.pick_ms(11_000..16_000, 11_000..35_000).as_secs();
    // A host whose clock is ahead as far as its versions: taken at once.
    let vouched = own_cards(run, 2, "시계가 앞선 보낸이").await;
    let t = now_secs() + skew;
    send(run, &vouched, t, t).await;
    let v = crate::sync_support::version(t as u32, 1);
    for (id, _) in &vouched {
        crate::eventually(
            "a version vouched for by its sender's clock taken at once",
            Duration::from_secs(MAX_FUTURE + 5),
            || async { (indexed_version(run, id).await == Some(v)).then_some(()) },
        )
        .await;
    }
    assert_eq!(run.sync_metric("es_sync_clock_holds_total").await, 0.0);

    // Versions ahead from a host whose clock is right: held until es-sync's
    // clock is within max_future_seconds of them.
    let ahead = own_cards(run, 3, "앞선 시계의 버전").await;
    let t = now_secs() + skew;
    send(run, &ahead, t, now_secs()).await;
    let sent = Instant::now();
    run.wait_sync_waiting("waiting for the clocks", Duration::from_secs(30))
        .await;
    let v = crate::sync_support::version(t as u32, 1);
    for (id, _) in &ahead {
        crate::eventually(
            "a held version indexed once the clock caught up",
            Duration::from_secs(skew + 60),
            || async { (indexed_version(run, id).await == Some(v)).then_some(()) },
        )
        .await;
    }
    let held = sent.elapsed();
    assert!(
        held + Duration::from_secs(MAX_FUTURE + 2) >= Duration::from_secs(skew),
        "released after {held:?}, before the clock reached the versions ({skew} s ahead)"
    );
    let holds = run.sync_metric("es_sync_clock_holds_total").await;
    assert!(holds >= 1.0, "holds counted: {holds}");

    // Versions an hour behind, with other content: nothing changes.
    let behind = own_cards(run, 2, "늦은 시계").await;
    let stale: Vec<(ObjectId, Document)> = behind
        .iter()
        .map(|(id, d)| {
            let mut d = d.clone();
            d.insert("title", "한 시간 전의 제목");
            (*id, d)
        })
        .collect();
    let t = now_secs() - 3600;
    send(run, &stale, t, t).await;
    run.note = format!(
        "versions {skew} s ahead: 2 vouched by their sender's clock taken at once, 3 held {:.1} s; 2 an hour behind ignored",
        held.as_secs_f64()
    );
}
