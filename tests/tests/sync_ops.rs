//! es-sync against real Kafka and Elasticsearch: every operation type ends
//! in the right document state, and out-of-order delivery never makes a
//! document older.

use e2e_tests::sync_support::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_ends_in_the_right_state() {
    let n = Names::new("ops");
    create_topic(&n.topic, 3).await;
    let p = producer();
    let (a, b, c, d, e) = (oid(1), oid(2), oid(3), oid(4), oid(5));
    let t = 1_700_000_000;
    // a: insert then update; b: insert then replace; c: insert then delete;
    // d: snapshot copy; e: update without a document (deleted before lookup).
    produce(
        &p,
        &n.topic,
        &a,
        &native("insert", &a, t, 1, Some(card(&a, "백두산", 1))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &b,
        &native("insert", &b, t, 2, Some(card(&b, "지리산", 1))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &c,
        &native("insert", &c, t, 3, Some(card(&c, "설악산", 1))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &d,
        &native("snapshot", &d, t, 4, Some(card(&d, "북한산", 7))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &a,
        &native("update", &a, t + 1, 1, Some(card(&a, "백두산 천지", 2))),
        None,
    )
    .await;
    let mut replaced = card(&b, "지리산 천왕봉", 9);
    replaced.as_object_mut().expect("obj").remove("tags");
    produce(
        &p,
        &n.topic,
        &b,
        &native("replace", &b, t + 1, 2, Some(replaced)),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &c,
        &native("delete", &c, t + 1, 3, None),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &e,
        &native("update", &e, t + 1, 4, None),
        None,
    )
    .await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    let (va, sa) = eventually(WAIT, "update of a", || async {
        get_doc(&alias, &a)
            .await
            .filter(|(v, _)| *v == version(t + 1, 1))
    })
    .await;
    assert_eq!(va, version(t + 1, 1));
    assert_eq!(sa["title"], "백두산 천지");
    assert_eq!(sa["likes"], 2);
    assert_eq!(sa["created_at"], "2024-01-02T03:04:05.678Z");
    assert!(sa.get("_id").is_none());
    assert_eq!(sa["_sync"]["op"], "update");
    assert_eq!(sa["_sync"]["ns"], "mountain.card");
    assert_eq!(sa["_sync"]["version"], json!(version(t + 1, 1)));

    let (_, sb) = eventually(WAIT, "replace of b", || async {
        get_doc(&alias, &b)
            .await
            .filter(|(v, _)| *v == version(t + 1, 2))
    })
    .await;
    assert_eq!(sb["title"], "지리산 천왕봉");
    assert!(sb.get("tags").is_none(), "replace drops removed fields");

    let (vd, sd) = eventually(WAIT, "snapshot d", || async { get_doc(&alias, &d).await }).await;
    assert_eq!(
        (vd, sd["likes"].clone(), sd["_sync"]["op"].clone()),
        (version(t, 4), json!(7), json!("snapshot"))
    );

    eventually(WAIT, "delete of c", || async {
        get_doc(&alias, &c).await.is_none().then_some(())
    })
    .await;
    assert!(
        get_doc(&alias, &e).await.is_none(),
        "update without a doc creates nothing"
    );

    // The alias points at the bootstrapped concrete index.
    let (status, body) = es_call(
        elasticsearch::http::Method::Get,
        &format!("/_alias/{alias}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get(format!("{alias}-000001")).is_some(), "{body}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_never_make_a_document_older() {
    let n = Names::new("order");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let (a, b) = (oid(10), oid(11));
    let t = 1_700_000_100;
    // a: the newer update arrives before the older insert.
    produce(
        &p,
        &n.topic,
        &a,
        &native("update", &a, t + 5, 0, Some(card(&a, "new", 5))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &a,
        &native("insert", &a, t, 0, Some(card(&a, "old", 1))),
        None,
    )
    .await;
    // b: insert, delete, then an older insert redelivered after the delete.
    produce(
        &p,
        &n.topic,
        &b,
        &native("insert", &b, t, 1, Some(card(&b, "first", 1))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &b,
        &native("delete", &b, t + 5, 1, None),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &b,
        &native("replace", &b, t + 2, 1, Some(card(&b, "stale", 2))),
        None,
    )
    .await;
    // A marker record after everything, to know when all are processed.
    let z = oid(12);
    produce(
        &p,
        &n.topic,
        &z,
        &native("insert", &z, t + 9, 0, Some(card(&z, "last", 0))),
        None,
    )
    .await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "last record", || async { get_doc(&alias, &z).await }).await;
    let (va, sa) = get_doc(&alias, &a).await.expect("a exists");
    assert_eq!((va, sa["title"].clone()), (version(t + 5, 0), json!("new")));
    assert!(
        get_doc(&alias, &b).await.is_none(),
        "an older insert after a delete must not resurrect"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_alias_and_its_mapping_are_left_unchanged() {
    use elasticsearch::http::Method;
    let n = Names::new("keep");
    create_topic(&n.topic, 1).await;
    let concrete = format!("{}-custom", n.alias);
    let (s, body) = es_call(
        Method::Put,
        &format!("/{concrete}"),
        Some(json!({
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"title": {"type": "keyword"}}},
            "aliases": {n.alias.clone(): {"is_write_index": true}}
        })),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let p = producer();
    let a = oid(50);
    produce(
        &p,
        &n.topic,
        &a,
        &native("insert", &a, 1_700_000_600, 0, Some(card(&a, "그대로", 1))),
        None,
    )
    .await;
    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "doc in the existing index", || async {
        get_doc(&alias, &a).await
    })
    .await;
    run.stop().await;
    let (_, m) = es_call(Method::Get, &format!("/{concrete}/_mapping"), None).await;
    assert_eq!(
        m[&concrete]["mappings"]["properties"]["title"]["type"], "keyword",
        "{m}"
    );
    let (s, _) = es_call(Method::Head, &format!("/{}-000001", n.alias), None).await;
    assert_eq!(s, 404, "no new index created behind an existing alias");
}
