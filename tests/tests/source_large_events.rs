//! Change events over MongoDB's 16 MB BSON limit, on the bench.
//!
//! An update of a 9 MB document that sets a new 9 MB value makes an 18 MB
//! event (`fullDocument` from `updateLookup` plus `updateDescription`).
//! mongo-source opens its streams with `$changeStreamSplitLargeEvent` when
//! the server reports 7.0+ (SecantusDB reports 8.2): the event, whole or
//! reassembled from its fragments, is over the Kafka limit and becomes a
//! dead-letter pointer; the stream goes on and the next change is
//! delivered.
//!
//! What the bench cannot show: SecantusDB neither enforces the 16 MB limit
//! on change events nor splits them (it marks every event `fragment 1 of
//! 1`), so real fragments and the `BSONObjectTooLarge` (10334) fallback are
//! proven by the unit tests of `mongo_source::stream::large_event` on
//! canned server documents and errors only (docs/reliability.md).

use e2e_tests::kafka::read_all;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, metric_value, mongo};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const NINE_MB: usize = 9 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_event_over_16_mb_becomes_a_pointer_and_the_stream_goes_on() {
    // Policy `dlq`: pointers alone (the default cuts the event to fit).
    let mut fx = SourceFixture::new(&["card"]);
    fx.oversized = "policy = \"dlq\"".into();
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    cards
        .insert_one(doc! { "_id": "huge", "body": "a".repeat(NINE_MB) })
        .await
        .unwrap();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    cards
        .update_one(
            doc! { "_id": "huge" },
            doc! { "$set": { "body": "b".repeat(NINE_MB) } },
        )
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": "after", "title": "still flowing" })
        .await
        .unwrap();

    let recs = eventually("the change after the huge one", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        recs.iter()
            .any(|r| r.key.as_deref() == Some(r#""after""#))
            .then_some(recs)
    })
    .await;
    assert!(
        recs.iter()
            .all(|r| r.key.as_deref() != Some(r#""huge""#) || r.value["op"] != "update"),
        "the 18 MB update is not on the event topic"
    );
    let dlq = eventually("pointers", WAIT, || async {
        let d = read_all(&fx.dlq()).await;
        (d.len() >= 2).then_some(d)
    })
    .await;
    // The 9 MB snapshot copy and the 18 MB update: two pointers.
    assert_eq!(dlq.len(), 2, "{dlq:#?}");
    let update = dlq
        .iter()
        .map(|r| &r.value)
        .find(|v| v["op"] == "update")
        .unwrap_or_else(|| panic!("pointer of the update: {dlq:#?}"));
    assert_eq!(update["key"], r#""huge""#);
    assert_eq!(update["reason"], "record_too_large");
    assert!(
        update["size"].as_u64().unwrap() > 2 * NINE_MB as u64,
        "the whole event was read: {update}"
    );

    let stream = format!("{}.card", fx.db);
    let metrics = fx.admin_get("/metrics").await.expect("metrics");
    let label = format!(
        "mongo_source_dead_lettered_total{{stream=\"{stream}\",reason=\"record_too_large\"}}"
    );
    assert_eq!(metric_value(&metrics, &label), Some(2.0), "{metrics}");
    let status: Value = serde_json::from_str(&fx.admin_get("/status").await.unwrap()).unwrap();
    assert_eq!(status["streams"][0]["state"], "RUNNING", "{status}");

    stop.cancel();
    handle.await.unwrap().unwrap();
}
