//! A change event the source cannot decode is dead-lettered with a reason
//! and the stream goes on (it used to fail on it, fatally, forever).
//!
//! The poison events are real server output: a collections `pipeline`
//! (`$set` with `$cond`, allowed by MongoDB 6+ as by SecantusDB) removes
//! `documentKey` from one insert and turns `operationType` into a number
//! in another, as a reshaping pipeline or a future server's new event
//! shape can.

use e2e_tests::kafka::read_all;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, metric_value, mongo};
use mongodb::bson::{doc, Document};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

const PIPELINE: &str = r#"pipeline = [
  { "$set" = { "documentKey" = { "$cond" = [ { "$eq" = ["$fullDocument.poison", "no-key"] }, "$$REMOVE", "$documentKey" ] } } },
  { "$set" = { "operationType" = { "$cond" = [ { "$eq" = ["$fullDocument.poison", "bad-op"] }, 42, "$operationType" ] } } },
]"#;

/// The keys of the inserts among `recs`, sorted (partitions interleave).
fn inserts(recs: &[e2e_tests::kafka::Rec]) -> Vec<String> {
    let mut keys: Vec<String> = recs
        .iter()
        .filter(|r| r.value["op"] == "insert")
        .filter_map(|r| r.key.clone())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_events_are_dead_lettered_and_the_stream_goes_on() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.collection_extra
        .insert("card".into(), PIPELINE.to_string());
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    for (id, poison) in [
        ("a1", ""),
        ("p1", "no-key"),
        ("a2", ""),
        ("p2", "bad-op"),
        ("a3", "설악산"),
    ] {
        cards
            .insert_one(doc! { "_id": id, "poison": poison })
            .await
            .unwrap();
    }
    let topic = fx.topic("card");
    let recs = eventually("the good inserts around the poison ones", WAIT, || async {
        let recs = read_all(&topic).await;
        (inserts(&recs).len() >= 3).then_some(recs)
    })
    .await;
    assert_eq!(
        inserts(&recs),
        vec![r#""a1""#, r#""a2""#, r#""a3""#],
        "every decodable change once, and nothing of the poison ones"
    );
    let dlq = eventually("two pointers", WAIT, || async {
        let d = read_all(&fx.dlq()).await;
        (d.len() >= 2).then_some(d)
    })
    .await;
    assert_eq!(dlq.len(), 2, "{dlq:#?}");
    for p in &dlq {
        assert_eq!(p.value["reason"], "undecodable_event", "{}", p.value);
        assert_eq!(p.value["topic"], topic.as_str());
        assert!(
            p.value["cluster_time"]["t"].as_u64().is_some(),
            "{}",
            p.value
        );
        assert!(p.value["resume_token"].is_object(), "{}", p.value);
    }
    let by_op = |op: serde_json::Value| {
        dlq.iter()
            .find(|p| p.value["op"] == op)
            .unwrap_or_else(|| panic!("a pointer with op {op}: {dlq:#?}"))
    };
    let no_key = &by_op("insert".into()).value;
    assert_eq!(no_key["key"], serde_json::Value::Null);
    assert_eq!(no_key["op"], "insert");
    assert!(
        no_key["message"].as_str().unwrap().contains("documentKey"),
        "{no_key}"
    );
    assert_eq!(no_key["event"]["fullDocument"]["_id"], "p1");
    let bad_op_rec = by_op(serde_json::Value::Null);
    let bad_op = &bad_op_rec.value;
    assert_eq!(bad_op_rec.key.as_deref(), Some(r#""p2""#));
    assert_eq!(bad_op["key"], r#""p2""#);
    assert_eq!(bad_op["op"], serde_json::Value::Null);
    assert!(
        bad_op["message"]
            .as_str()
            .unwrap()
            .contains("operationType"),
        "{bad_op}"
    );

    let stream = format!("{}.card", fx.db);
    let status = fx.status().await;
    assert_eq!(status["streams"][0]["state"], "RUNNING", "{status}");
    assert_eq!(status["streams"][0]["restarts"], 0, "{status}");
    assert_eq!(status["streams"][0]["dead_lettered"], 2, "{status}");
    let metrics = fx.admin_get("/metrics").await.unwrap();
    let counted = format!(
        "mongo_source_dead_lettered_total{{stream=\"{stream}\",reason=\"undecodable_event\"}}"
    );
    assert_eq!(metric_value(&metrics, &counted), Some(2.0), "{metrics}");
    stop.cancel();
    handle.await.unwrap().unwrap();

    // The committed position is past the poison events: a new life neither
    // fails on them nor dead-letters them again.
    let (stop, handle) = fx.spawn();
    cards
        .insert_one(doc! { "_id": "a4", "poison": "" })
        .await
        .unwrap();
    eventually("the insert after the restart", WAIT, || async {
        let recs = read_all(&topic).await;
        inserts(&recs)
            .contains(&r#""a4""#.to_string())
            .then_some(())
    })
    .await;
    assert_eq!(read_all(&fx.dlq()).await.len(), 2, "no pointer twice");
    stop.cancel();
    handle.await.unwrap().unwrap();
}
