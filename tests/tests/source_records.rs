//! mongo-source against real MongoDB and Kafka: the records each kind of
//! change produces, the oversized-record dead letter, a quiet stream's
//! fresh token, and configuration errors.

use e2e_tests::kafka::{read_all, Rec};
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, metric_value, mongo};
use mongodb::bson::{doc, oid::ObjectId, Document};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn changes(recs: &[Rec]) -> Vec<&Rec> {
    recs.iter()
        .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
        .collect()
}

#[tokio::test]
async fn every_operation_becomes_the_expected_record() {
    let fx = SourceFixture::new(&["card", "reply"]);
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    fx.wait_snapshot_done("reply").await;

    let db = mongo().await.database(&fx.db);
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    let oid = ObjectId::new();
    cards
        .insert_one(doc! { "_id": oid, "title": "북한산 야간 산행", "likes": 1_i32 })
        .await
        .unwrap();
    cards
        .update_one(
            doc! { "_id": oid },
            doc! { "$set": { "likes": 2_i32 }, "$unset": { "x": "" } },
        )
        .await
        .unwrap();
    cards
        .replace_one(
            doc! { "_id": oid },
            doc! { "title": "replaced", "likes": 9_i32 },
        )
        .await
        .unwrap();
    cards.delete_one(doc! { "_id": oid }).await.unwrap();
    replies
        .insert_one(doc! { "_id": "r1", "card_id": oid, "body": "좋아요" })
        .await
        .unwrap();
    replies.delete_one(doc! { "_id": "r1" }).await.unwrap();

    let card_recs = eventually("4 card changes", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        (changes(&recs).len() >= 4).then_some(recs)
    })
    .await;
    let card = changes(&card_recs);
    assert_eq!(card.len(), 4, "exactly the four changes: {card:#?}");
    let ops: Vec<&str> = card
        .iter()
        .map(|r| r.value["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["insert", "update", "replace", "delete"]);
    let key = format!(r#"{{"$oid":"{}"}}"#, oid.to_hex());
    let mut last_version = 0;
    for r in &card {
        assert_eq!(
            r.key.as_deref(),
            Some(key.as_str()),
            "key is the canonical _id"
        );
        assert_eq!(
            r.partition, card[0].partition,
            "one document, one partition"
        );
        let v = r.value["version"].as_u64().unwrap();
        assert!(v > last_version, "versions strictly increase");
        last_version = v;
        assert_eq!(r.headers["version"], v.to_string());
        assert_eq!(r.headers["op"], r.value["op"].as_str().unwrap());
        assert_eq!(r.value["schema"], "mongo-source.change.v1");
        assert_eq!(r.value["ns"], json!({"db": fx.db, "coll": "card"}));
        assert_eq!(r.value["key"], json!({"_id": {"$oid": oid.to_hex()}}));
        let ct = &r.value["cluster_time"];
        let expect = shared::wire::version::Version::of_cluster_time(
            u32::try_from(ct["t"].as_u64().unwrap()).unwrap(),
            u32::try_from(ct["i"].as_u64().unwrap()).unwrap(),
        );
        assert_eq!(v, expect.as_u64(), "version derives from the cluster time");
    }
    assert_eq!(card[0].value["doc"]["title"], "북한산 야간 산행");
    assert_eq!(
        card[1].value["update"]["updated_fields"],
        json!({"likes": 2})
    );
    // `fullDocument: updateLookup` reads the document when the event is
    // read, so it may already show the later replace (MongoDB documents
    // this; a loaded machine showed it): either state, never another.
    let looked_up = &card[1].value["doc"]["likes"];
    assert!(*looked_up == 2 || *looked_up == 9, "{looked_up}");
    assert_eq!(
        card[2].value["doc"],
        json!({"_id": {"$oid": oid.to_hex()}, "title": "replaced", "likes": 9})
    );
    assert!(
        card[3].value.get("doc").is_none(),
        "a delete carries no document"
    );

    let reply_recs = eventually("2 reply changes", WAIT, || async {
        let recs = read_all(&fx.topic("reply")).await;
        (changes(&recs).len() >= 2).then_some(recs)
    })
    .await;
    let reply = changes(&reply_recs);
    assert_eq!(reply.len(), 2);
    assert_eq!(reply[0].key.as_deref(), Some(r#""r1""#));
    assert_eq!(
        reply[0].value["doc"]["card_id"],
        json!({"$oid": oid.to_hex()})
    );
    assert_eq!(reply[1].value["op"], "delete");

    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// mongo-source writes a change's record straight from its raw BSON
/// (`shared::wire::change_stream::raw`); the bytes must be those of the
/// event tree the change stream's document makes (`read_raw`, `decode`,
/// the transaction rank), for every BSON type a real server stores and
/// every kind of change. A change stream of the test's own, opened before
/// the writes, gives the same documents to build the trees from.
#[tokio::test]
async fn records_are_byte_for_byte_the_event_tree_of_each_change() {
    use futures::StreamExt as _;
    use mongo_source::change::{decode, read_raw, Decoded, TxnRanks};
    use mongodb::bson::{Bson, RawDocumentBuf};
    use mongodb::options::FullDocumentType;
    use std::collections::HashMap;
    use std::str::FromStr;

    let fx = SourceFixture::new(&["card"]);
    let client = mongo().await;
    let cards = client.database(&fx.db).collection::<Document>("card");
    // Copied by the snapshot.
    let copied = (0..3)
        .map(|i| doc! { "_id": format!("pre{i}"), "title": "한라산 \"눈꽃\"", "at": mongodb::bson::DateTime::from_millis(i), "n": [i, { "x": null }] })
        .collect::<Vec<_>>();
    cards.insert_many(copied.clone()).await.unwrap();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    let mut own = cards
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .expect("watch")
        .with_type::<RawDocumentBuf>();

    let oid = ObjectId::new();
    let every_type = doc! {
        "_id": oid,
        "title": "설악산 \"단풍\" 산행\n\t\u{1} ☃ 𝄞", "empty": "", "yes": true, "none": null,
        "i32": -7_i32, "i64": 42_i64, "big": i64::MAX, "f": 1.5, "whole": 2.0, "neg0": -0.0,
        "nan": f64::NAN, "inf": f64::NEG_INFINITY,
        "dec": Bson::Decimal128(mongodb::bson::Decimal128::from_str("12.50").unwrap()),
        "at": mongodb::bson::DateTime::from_millis(1_704_164_645_000),
        "old": mongodb::bson::DateTime::from_millis(-1000),
        "bin": mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "ts": mongodb::bson::Timestamp { time: 1_700_000_000, increment: 9 },
        "re": mongodb::bson::Regex { pattern: "^산".into(), options: "i".into() },
        "code": Bson::JavaScriptCode("x".into()),
        "min": Bson::MinKey, "max": Bson::MaxKey,
        "nested": { "arr": [1_i32, "x", { "y": 2.5 }, [], {}], "한글 키": { "깊이": [null] } },
    };
    cards.insert_one(every_type).await.unwrap();
    cards
        .insert_many(
            (0..5).map(|i| doc! { "_id": format!("s{i}"), "likes": i, "tags": ["a", "b", "c"] }),
        )
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": { "region": "kr", "n": 7_i64 }, "likes": 0_i32 })
        .await
        .unwrap();
    cards
        .update_one(
            doc! { "_id": "s0" },
            doc! { "$set": { "likes": 10_i32, "a.b": "dotted" }, "$unset": { "tags": "" } },
        )
        .await
        .unwrap();
    cards
        .update_one(doc! { "_id": "s1" }, doc! { "$pop": { "tags": 1_i32 } })
        .await
        .unwrap();
    cards
        .replace_one(
            doc! { "_id": "s2" },
            doc! { "title": "replaced", "likes": 9_i32 },
        )
        .await
        .unwrap();
    cards.delete_one(doc! { "_id": "s3" }).await.unwrap();
    // A transaction: several changes of one document, ranked.
    let mut s = client.start_session().await.expect("session");
    s.start_transaction().await.expect("start transaction");
    cards
        .insert_one(doc! { "_id": "t1", "likes": 1_i32 })
        .session(&mut s)
        .await
        .unwrap();
    cards
        .update_one(doc! { "_id": "t1" }, doc! { "$inc": { "likes": 1_i32 } })
        .session(&mut s)
        .await
        .unwrap();
    cards
        .update_one(doc! { "_id": "s4" }, doc! { "$set": { "likes": 40_i32 } })
        .session(&mut s)
        .await
        .unwrap();
    cards
        .update_one(doc! { "_id": "t1" }, doc! { "$inc": { "likes": 1_i32 } })
        .session(&mut s)
        .await
        .unwrap();
    s.commit_transaction().await.expect("commit");
    const CHANGES: usize = 1 + 5 + 1 + 2 + 1 + 1 + 4;

    // The trees, from the test's own stream.
    let ns = shared::wire::event::Namespace {
        db: fx.db.clone(),
        coll: "card".into(),
    };
    let mut ranks = TxnRanks::default();
    let mut want: HashMap<(String, String), Vec<u8>> = HashMap::new();
    while want.len() < CHANGES {
        let raw = tokio::time::timeout(WAIT, own.next())
            .await
            .expect("own change stream")
            .expect("stream open")
            .expect("event");
        let (doc, lossy) = read_raw(&raw).unwrap();
        assert!(!lossy);
        let Decoded::Change { key, mut event } = decode(&doc, &ns).unwrap() else {
            continue;
        };
        ranks.assign(&key, &mut *event);
        want.insert(
            (key, event.version.to_string()),
            serde_json::to_vec(&*event).unwrap(),
        );
    }

    let recs = eventually("every change written", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        (changes(&recs).len() >= CHANGES).then_some(recs)
    })
    .await;
    let got = changes(&recs);
    assert_eq!(got.len(), CHANGES, "{got:#?}");
    for r in got {
        let id = (r.key.clone().unwrap(), r.headers["version"].clone());
        let tree = want
            .get(&id)
            .unwrap_or_else(|| panic!("no change {id:?} in the test's stream"));
        assert_eq!(
            String::from_utf8_lossy(r.raw.as_deref().unwrap()),
            String::from_utf8_lossy(tree),
            "record of {id:?}"
        );
    }
    // The snapshot's copies too.
    let snaps: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.value["op"] == "snapshot")
        .collect();
    assert_eq!(snaps.len(), copied.len(), "{snaps:#?}");
    for r in snaps {
        let info: shared::wire::event::SnapshotInfo =
            serde_json::from_value(r.value["snapshot"].clone()).unwrap();
        let id = r.value["key"]["_id"].as_str().unwrap();
        let doc = copied.iter().find(|d| d.get_str("_id") == Ok(id)).unwrap();
        let (key, ev) = shared::wire::change_stream::snapshot_record(doc, &ns, &info).unwrap();
        assert_eq!(r.key.as_deref(), Some(key.as_str()));
        assert_eq!(
            String::from_utf8_lossy(r.raw.as_deref().unwrap()),
            String::from_utf8_lossy(&serde_json::to_vec(&ev).unwrap()),
            "snapshot record of {id}"
        );
    }
    // Every one of them written straight from its BSON.
    let metrics = fx.admin_get("/metrics").await.expect("metrics");
    let label = format!(
        "mongo_source_tree_path_events_total{{stream=\"{}.card\"}}",
        fx.db
    );
    assert_eq!(metric_value(&metrics, &label), Some(0.0), "{metrics}");

    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversized_document_goes_to_the_dlq_and_the_stream_goes_on() {
    // Policy `dlq`: the pointer alone (the default, `truncate`, is tested
    // end to end in e2e_pipeline).
    let mut fx = SourceFixture::new(&["card"]);
    fx.oversized = "policy = \"dlq\"".into();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    // The production incident: a record just over 1 MiB.
    let body = "가".repeat(1_100_000 / 3 + 1000);
    cards
        .insert_one(doc! { "_id": "big", "body": body })
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": "after", "title": "still flowing" })
        .await
        .unwrap();

    let recs = eventually("the change after the big one", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        changes(&recs)
            .iter()
            .any(|r| r.key.as_deref() == Some(r#""after""#))
            .then_some(recs)
    })
    .await;
    assert!(
        changes(&recs)
            .iter()
            .all(|r| r.key.as_deref() != Some(r#""big""#)),
        "the oversized record is not on the event topic"
    );
    // Same transaction as "after", but the coordinator writes the commit
    // markers to each partition asynchronously: the DLQ partition may turn
    // visible to read_committed a moment after the event topic's.
    let dlq = eventually("the pointer visible on the DLQ", WAIT, || async {
        let dlq = read_all(&fx.dlq()).await;
        (!dlq.is_empty()).then_some(dlq)
    })
    .await;
    assert_eq!(dlq.len(), 1, "one pointer: {dlq:#?}");
    let p = &dlq[0].value;
    assert_eq!(p["reason"], "record_too_large");
    assert_eq!(p["key"], r#""big""#);
    assert_eq!(p["topic"], fx.topic("card"));
    assert_eq!(p["op"], "insert");
    assert!(p["size"].as_u64().unwrap() > 1_100_000, "{p}");
    assert_eq!(p["limit"], 1_048_576);
    assert!(
        p["message"].as_str().unwrap().contains("exceeds the limit"),
        "{p}"
    );

    let stream = format!("{}.card", fx.db);
    let metrics = fx.admin_get("/metrics").await.expect("metrics");
    let label = format!("mongo_source_oversized_records_total{{stream=\"{stream}\"}}");
    assert_eq!(metric_value(&metrics, &label), Some(1.0), "{metrics}");
    let status: Value = serde_json::from_str(&fx.admin_get("/status").await.unwrap()).unwrap();
    assert_eq!(status["streams"][0]["dead_lettered"], 1, "{status}");
    assert_eq!(status["streams"][0]["state"], "RUNNING", "{status}");

    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_quiet_collection_keeps_a_fresh_token() {
    let mut fx = SourceFixture::new(&["card", "reply"]);
    fx.batch = "idle_commit_ms = 300".into();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("reply").await;
    let quiet = format!("{}.reply", fx.db);
    let tokens = |recs: &[Rec]| -> Vec<Value> {
        recs.iter()
            .filter(|r| r.key.as_deref() == Some(quiet.as_str()))
            .filter_map(|r| r.value.get("token").cloned())
            .filter(|t| !t.is_null())
            .collect()
    };
    let before = tokens(&read_all(&fx.positions()).await);
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    for i in 0..30 {
        cards.insert_one(doc! { "n": i }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = eventually("the quiet stream's token to advance", WAIT, || async {
        let t = tokens(&read_all(&fx.positions()).await);
        let distinct: std::collections::HashSet<String> = t.iter().map(Value::to_string).collect();
        (distinct.len() >= 2 && t.len() > before.len()).then_some(t)
    })
    .await;
    assert_ne!(
        after.first(),
        after.last(),
        "the stored token moved while the collection was quiet"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[test]
fn bad_config_value_exits_non_zero_naming_the_key() {
    let fx = SourceFixture::new(&["card"]);
    let path = fx.write();
    let out = std::process::Command::new(e2e_tests::process::binary("mongo-source"))
        .args(["--config", path.to_str().unwrap()])
        .env("MONGO_SOURCE__BATCH__MAX_WAIT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch.max_wait_ms"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = std::process::Command::new(e2e_tests::process::binary("mongo-source"))
        .args(["--config", "/nonexistent/mongo-source.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mongo-source.toml"));
}

#[test]
fn unreachable_kafka_at_start_up_exits_non_zero_naming_it() {
    let fx = SourceFixture::new(&["card"]);
    let path = fx.write();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(e2e_tests::process::binary("mongo-source"))
        .args(["--config", path.to_str().unwrap()])
        .env("MONGO_SOURCE__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("MONGO_SOURCE__KAFKA__OPERATION_TIMEOUT_MS", "1000")
        .env("MONGO_SOURCE__STARTUP_TIMEOUT_MS", "3000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Kafka at 127.0.0.1:1"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
