//! es-sync against the real Kafka and Elasticsearch: what a version may
//! be, how ids are made, and updates that carry only what changed.
//!
//! - the MongoDB Kafka Connector's updates without `fullDocument` are
//!   applied to the indexed document (and a replay leaves it as it is);
//! - MongoDB `_id`s of different types never share a document;
//! - a version not made from its cluster time is dead-lettered;
//! - a record ahead of the clocks waits (and says so) until they catch up,
//!   and is never dead-lettered.

use e2e_tests::sync_support::*;
use serde_json::{json, Value};
use shared::wire::event::SCHEMA;
use shared::wire::version::Version;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(60);

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32
}

/// A connector update that carries only `updateDescription`.
fn connector_delta(id: &str, t: u32, i: u32, desc: Value, before: Option<Value>) -> String {
    let mut cs: Value =
        serde_json::from_str(&connector_doc("update", id, t, i, None)).expect("connector doc");
    cs["updateDescription"] = desc;
    if let Some(b) = before {
        cs["fullDocumentBeforeChange"] = b;
    }
    cs.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_updates_without_the_document_are_applied_and_replays_change_nothing() {
    let n = Names::new("delta");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let (x, y, z, w) = (oid(1), oid(2), oid(3), oid(4));
    let t = 1_700_000_000;
    let send = |id: String, text: String| {
        let p = p.clone();
        let topic = n.topic.clone();
        async move { produce(&p, &topic, &id, text.as_bytes(), None).await }
    };
    // x: inserted, then three deltas (nested field, array index, truncation,
    // removal); all in one batch before es-sync starts.
    send(
        x.clone(),
        connector_doc("insert", &x, t, 1, Some(card(&x, "원래 제목", 1))),
    )
    .await;
    send(
        x.clone(),
        connector_delta(&x, t, 2, json!({"updatedFields": {"likes": 5, "author.name": "이영희"}, "removedFields": ["mountain"]}), None),
    )
    .await;
    send(
        x.clone(),
        connector_delta(&x, t, 3, json!({"updatedFields": {"tags.1": "설악"}, "removedFields": [], "truncatedArrays": []}), None),
    )
    .await;
    // y: inserted; its delta comes after es-sync indexed it (read back).
    send(
        y.clone(),
        connector_doc("insert", &y, t, 4, Some(card(&y, "y", 1))),
    )
    .await;
    // z: never inserted in the topic, but its update carries the pre-image.
    send(
        z.clone(),
        connector_delta(
            &z,
            t,
            5,
            json!({"updatedFields": {"likes": 9}}),
            Some(card(&z, "z 이전", 2)),
        ),
    )
    .await;
    // w: never inserted, no pre-image: nothing to build, skipped.
    send(
        w.clone(),
        connector_delta(&w, t, 6, json!({"updatedFields": {"likes": 1}}), None),
    )
    .await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "y indexed", || async { get_doc(&alias, &y).await }).await;
    send(
        y.clone(),
        connector_delta(&y, t, 7, json!({"updatedFields": {"title": "y 고침", "tags.2": "new"}, "truncatedArrays": [{"field": "tags", "newSize": 1}]}), None),
    )
    .await;
    let (_, ys) = eventually(WAIT, "y patched", || async {
        get_doc(&alias, &y)
            .await
            .filter(|(_, s)| s["title"] == "y 고침")
    })
    .await;
    // [등산, 제주] truncated to [등산], then index 2 set: padded with null.
    assert_eq!(ys["tags"], json!(["등산", null, "new"]));
    assert_eq!(ys["likes"], 1, "untouched fields stay");
    assert_eq!(ys["_sync"]["version"], version(t, 7));

    let (xv, xs) = eventually(WAIT, "x patched", || async {
        get_doc(&alias, &x)
            .await
            .filter(|(_, s)| s["tags"][1] == "설악")
    })
    .await;
    assert_eq!(xv, version(t, 3));
    assert_eq!(xs["likes"], 5);
    assert_eq!(xs["author"], json!({"id": "u1", "name": "이영희"}));
    assert!(xs.get("mountain").is_none(), "removed field gone: {xs}");
    assert_eq!(xs["title"], "원래 제목");
    let (_, zs) = eventually(WAIT, "z from its pre-image", || async {
        get_doc(&alias, &z).await
    })
    .await;
    assert_eq!(
        (zs["title"].clone(), zs["likes"].clone()),
        (json!("z 이전"), json!(9))
    );
    assert!(
        get_doc(&alias, &w).await.is_none(),
        "no base, no pre-image: not indexed"
    );
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    run.stop().await;

    // Replay everything with a new group: the index already holds each
    // document at its newest version, so nothing changes.
    let before = all_docs(&n.alias).await;
    let mut again = config(&n);
    again.kafka.group_id = format!("{}-replay", n.group);
    let group = again.kafka.group_id.clone();
    let run = start(again);
    wait_caught_up(&group, &n.topic, WAIT).await;
    run.stop().await;
    assert_eq!(all_docs(&n.alias).await, before, "a replay changes nothing");
    assert!(
        read_topic_for(&n.dlq, Duration::from_secs(3))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
}

/// A native event of any `_id` (Extended JSON).
fn native_with_id(op: &str, id: Value, t: u32, i: u32, doc: Option<Value>) -> Vec<u8> {
    let mut ev = json!({
        "schema": SCHEMA, "op": op,
        "ns": {"db": "mountain", "coll": "card"},
        "key": {"_id": id},
        "cluster_time": {"t": t, "i": i},
        "version": version(t, i),
    });
    if let Some(d) = doc {
        ev["doc"] = d;
    }
    ev.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_different_types_are_different_documents() {
    let n = Names::new("ids");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let hex = oid(7);
    let ids = [
        json!("5"),
        json!(5),
        json!({"$oid": hex}),
        json!(hex),
        json!({"$date": "2024-01-02T03:04:05.678Z"}),
        json!("{\"$date\":\"2024-01-02T03:04:05.678Z\"}"),
    ];
    let t = 1_700_000_100;
    for (k, id) in ids.iter().enumerate() {
        let doc = json!({"_id": id, "title": format!("doc {k}")});
        let key = shared::ejson::canonical_key(&shared::ejson::json_to_bson(id).unwrap());
        produce(
            &p,
            &n.topic,
            &key,
            &native_with_id("insert", id.clone(), t, k as u32 + 1, Some(doc)),
            None,
        )
        .await;
    }
    // Deleting the number 5 leaves the string "5".
    let key = shared::ejson::canonical_key(&shared::ejson::json_to_bson(&json!(5)).unwrap());
    produce(
        &p,
        &n.topic,
        &key,
        &native_with_id("delete", json!(5), t, 50, None),
        None,
    )
    .await;
    let run = start(config(&n));
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    run.stop().await;
    let docs = all_docs(&n.alias).await;
    let titles: Vec<(String, Value)> = docs
        .iter()
        .map(|(k, (_, s))| (k.clone(), s["title"].clone()))
        .collect();
    assert_eq!(docs.len(), 5, "six ids, one deleted: {titles:?}");
    assert_eq!(docs["s:5"].1["title"], "doc 0");
    assert_eq!(docs[&hex].1["title"], "doc 2");
    assert_eq!(docs[&format!("s:{hex}")].1["title"], "doc 3");
    assert!(!docs.contains_key("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_versions_are_dead_lettered_and_good_records_flow() {
    let n = Names::new("forged");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let (a, b, c) = (oid(11), oid(12), oid(13));
    let t = 1_700_000_200;
    // A version far above its cluster time: indexed, no real change of the
    // document would ever win again.
    let mut forged: Value =
        serde_json::from_slice(&native("insert", &a, t, 1, Some(card(&a, "forged", 1)))).unwrap();
    forged["version"] = json!(1u64 << 62);
    produce(&p, &n.topic, &a, forged.to_string().as_bytes(), None).await;
    // A snapshot end whose snapshot version is far above its cluster time:
    // applied, it would delete every document of the namespace.
    let mut end: Value = serde_json::from_slice(&snapshot_end(t, 2)).unwrap();
    end["snapshot"]["version"] = json!((1u64 << 62) + 7);
    produce(&p, &n.topic, "", end.to_string().as_bytes(), Some(0)).await;
    produce(
        &p,
        &n.topic,
        &b,
        &native("insert", &b, t, 3, Some(card(&b, "good", 1))),
        None,
    )
    .await;
    // A transaction rank is a consistent version.
    let mut ranked: Value =
        serde_json::from_slice(&native("insert", &c, t, 4, Some(card(&c, "ranked", 1)))).unwrap();
    ranked["version"] = json!(Version::new(t, 4, 3).unwrap().as_u64());
    produce(&p, &n.topic, &c, ranked.to_string().as_bytes(), None).await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "good card", || async { get_doc(&alias, &b).await }).await;
    eventually(WAIT, "ranked card", || async { get_doc(&alias, &c).await }).await;
    let dlq = read_topic(&n.dlq, 2, WAIT).await;
    run.stop().await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    for r in &dlq {
        assert_eq!(
            r.headers["dlq.error.type"], "bad_version",
            "{:?}",
            r.headers
        );
        assert!(r.headers["dlq.error.reason"].contains("not made from cluster time"));
    }
    assert!(get_doc(&alias, &a).await.is_none());
    assert!(
        get_doc(&alias, &b).await.is_some(),
        "the forged end deleted nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_ahead_of_the_clocks_waits_for_them_and_is_never_dead_lettered() {
    let n = Names::new("clock");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let (a, b, c) = (oid(21), oid(22), oid(23));
    let now = now_secs();
    // c: its cluster time is ahead of this host's clock, but its producer's
    // clock (the record timestamp) is further ahead: accepted at once.
    let rec = native("insert", &c, now + 60, 1, Some(card(&c, "sender ahead", 1)));
    let ts = i64::from(now + 120) * 1000;
    p.send(
        rdkafka::producer::FutureRecord::to(&n.topic)
            .key(&c)
            .payload(&rec)
            .timestamp(ts),
        Duration::from_secs(10),
    )
    .await
    .expect("produce");
    // a: 8 s ahead of every clock, then b (normal) behind it in the partition.
    produce(
        &p,
        &n.topic,
        &a,
        &native("insert", &a, now + 8, 1, Some(card(&a, "ahead", 1))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &b,
        &native("insert", &b, now, 2, Some(card(&b, "behind it", 1))),
        None,
    )
    .await;
    let mut cfg = config(&n);
    cfg.consumer.max_future_seconds = 2;
    let status = Arc::new(es_sync::status::SyncStatus::new(&cfg.kafka.group_id));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(es_sync::run_with_status(
        cfg,
        shutdown.clone(),
        status.clone(),
    ));
    let alias = n.alias.clone();
    eventually(WAIT, "c indexed at once", || async {
        get_doc(&alias, &c).await
    })
    .await;
    let waiting = eventually(WAIT, "the partition says it waits", || async {
        status.partitions().into_iter().find_map(|p| p.waiting)
    })
    .await;
    assert!(waiting.contains("waiting for the clocks"), "{waiting}");
    assert!(get_doc(&alias, &a).await.is_none(), "held");
    assert!(
        get_doc(&alias, &b).await.is_none(),
        "held behind it, in order"
    );
    eventually(WAIT, "a indexed once the clocks caught up", || async {
        get_doc(&alias, &a).await
    })
    .await;
    eventually(WAIT, "b after it", || async { get_doc(&alias, &b).await }).await;
    eventually(WAIT, "the wait cleared", || async {
        status
            .partitions()
            .iter()
            .all(|p| p.waiting.is_none())
            .then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        read_topic_for(&n.dlq, Duration::from_secs(3))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
}
