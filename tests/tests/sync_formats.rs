//! es-sync against real Kafka and Elasticsearch: MongoDB Kafka Connector
//! records (raw, JsonConverter string, JsonConverter envelope) index like
//! native ones; bad records and mapping conflicts go to the dead-letter
//! topic with their reason while everything else is indexed.

use e2e_tests::sync_support::*;
use es_sync::dlq::headers;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_records_in_every_envelope_index_correctly() {
    let n = Names::new("conn");
    create_topic(&n.topic, 2).await;
    let p = producer();
    let (a, b, c) = (oid(21), oid(22), oid(23));
    let t = 1_700_000_200;
    // a: raw change stream document (StringConverter).
    let raw = connector_doc("insert", &a, t, 1, Some(card(&a, "raw", 1)));
    produce(&p, &n.topic, &a, raw.as_bytes(), None).await;
    // b: JsonConverter, schemas disabled: a JSON string.
    let s = Value::String(connector_doc(
        "insert",
        &b,
        t,
        2,
        Some(card(&b, "string", 2)),
    ))
    .to_string();
    produce(&p, &n.topic, &b, s.as_bytes(), None).await;
    // c: JsonConverter envelope, inserted then updated then deleted...
    let env = |doc: String| {
        json!({"schema": {"type": "string", "optional": false}, "payload": doc}).to_string()
    };
    produce(
        &p,
        &n.topic,
        &c,
        env(connector_doc("insert", &c, t, 3, Some(card(&c, "env", 3)))).as_bytes(),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &c,
        env(connector_doc(
            "update",
            &c,
            t + 1,
            3,
            Some(card(&c, "env2", 4)),
        ))
        .as_bytes(),
        None,
    )
    .await;
    // ...and b deleted through the envelope as well.
    produce(
        &p,
        &n.topic,
        &b,
        env(connector_doc("delete", &b, t + 1, 4, None)).as_bytes(),
        None,
    )
    .await;
    // A native record mixed in.
    let d = oid(24);
    produce(
        &p,
        &n.topic,
        &d,
        &native("insert", &d, t + 2, 0, Some(card(&d, "native", 5))),
        None,
    )
    .await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    let (va, sa) = eventually(WAIT, "a", || async { get_doc(&alias, &a).await }).await;
    assert_eq!((va, sa["title"].clone()), (version(t, 1), json!("raw")));
    let (vc, sc) = eventually(WAIT, "c updated", || async {
        get_doc(&alias, &c)
            .await
            .filter(|(v, _)| *v == version(t + 1, 3))
    })
    .await;
    assert_eq!(
        (vc, sc["title"].clone(), sc["likes"].clone()),
        (version(t + 1, 3), json!("env2"), json!(4))
    );
    assert_eq!(sc["_sync"]["cluster_time"], json!({"t": t + 1, "i": 3}));
    eventually(WAIT, "d", || async { get_doc(&alias, &d).await }).await;
    eventually(WAIT, "b deleted", || async {
        get_doc(&alias, &b).await.is_none().then_some(())
    })
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_and_mapping_conflicts_go_to_the_dlq_with_their_reason() {
    let n = Names::new("dlq");
    create_topic(&n.topic, 1).await;
    create_topic(&n.dlq, 1).await;
    let p = producer();
    let t = 1_700_000_300;
    let ids: Vec<String> = (30..37).map(oid).collect();
    produce(
        &p,
        &n.topic,
        &ids[0],
        &native("insert", &ids[0], t, 0, Some(card(&ids[0], "ok1", 1))),
        None,
    )
    .await;
    produce(&p, &n.topic, "k-garbage", b"this is not json {", None).await;
    let mut conflict = card(&ids[1], "conflict", 0);
    conflict["likes"] = json!("many");
    produce(
        &p,
        &n.topic,
        &ids[1],
        &native("insert", &ids[1], t, 1, Some(conflict)),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &ids[2],
        &native("insert", &ids[2], t, 2, Some(card(&ids[2], "ok2", 2))),
        None,
    )
    .await;
    produce(
        &p,
        &n.topic,
        &ids[3],
        &native("upsert", &ids[3], t, 3, Some(card(&ids[3], "x", 2))),
        None,
    )
    .await;
    let mut no_id: Value =
        serde_json::from_slice(&native("insert", &ids[4], t, 4, None)).expect("json");
    no_id["key"] = json!({});
    produce(&p, &n.topic, "k-noid", no_id.to_string().as_bytes(), None).await;
    produce(
        &p,
        &n.topic,
        &ids[5],
        &native("insert", &ids[5], t, 5, Some(card(&ids[5], "ok3", 3))),
        None,
    )
    .await;
    // A version not made from its cluster time would freeze the document.
    let mut forged: Value = serde_json::from_slice(&native(
        "insert",
        &ids[6],
        t,
        6,
        Some(card(&ids[6], "forged", 1)),
    ))
    .unwrap();
    forged["version"] = json!(1u64 << 62);
    produce(&p, &n.topic, &ids[6], forged.to_string().as_bytes(), None).await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    for (i, title) in [(0, "ok1"), (2, "ok2"), (5, "ok3")] {
        let (_, s) = eventually(WAIT, title, || async { get_doc(&alias, &ids[i]).await }).await;
        assert_eq!(s["title"], title);
    }
    assert!(
        get_doc(&alias, &ids[1]).await.is_none(),
        "the conflicting doc is not indexed"
    );

    let dlq = read_topic(&n.dlq, 5, WAIT).await;
    let by_type = |ty: &str| {
        dlq.iter()
            .find(|r| r.headers.get(headers::ERROR_TYPE).map(String::as_str) == Some(ty))
    };
    let garbage = by_type("not_json").expect("not_json record in DLQ");
    assert_eq!(
        garbage.payload.as_deref(),
        Some(&b"this is not json {"[..]),
        "original value kept"
    );
    assert_eq!(garbage.key.as_deref(), Some(&b"k-garbage"[..]));
    assert_eq!(garbage.headers[headers::TOPIC], n.topic);
    assert_eq!(garbage.headers[headers::PARTITION], "0");
    assert_eq!(garbage.headers[headers::OFFSET], "1");
    let mapping = dlq
        .iter()
        .find(|r| r.headers[headers::ERROR_TYPE].contains("parsing_exception"))
        .unwrap_or_else(|| panic!("mapping conflict in DLQ: {dlq:?}"));
    assert!(
        mapping.headers[headers::ERROR_REASON].contains("likes"),
        "{:?}",
        mapping.headers
    );
    assert_eq!(mapping.headers[headers::OFFSET], "2");
    assert_eq!(mapping.headers[headers::INDEX], n.alias);
    assert!(by_type("unknown_operation").is_some(), "{dlq:?}");
    assert!(by_type("missing_id").is_some(), "{dlq:?}");
    let forged = by_type("bad_version").unwrap_or_else(|| panic!("forged version: {dlq:?}"));
    assert!(
        forged.headers[headers::ERROR_REASON].contains("not made from cluster time"),
        "{:?}",
        forged.headers
    );
    assert!(
        get_doc(&alias, &ids[6]).await.is_none(),
        "the forged event is not indexed"
    );
    run.stop().await;

    // Everything, including the dead-lettered records, is committed: a
    // restart of the group dead-letters nothing again.
    let run = start(config(&n));
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.stop().await;
    let again = read_topic(&n.dlq, 5, WAIT).await;
    assert_eq!(again.len(), 5);
    let extra = read_topic_for(&n.dlq, Duration::from_secs(3)).await;
    assert_eq!(
        extra.len(),
        5,
        "no record dead-lettered twice after a clean restart"
    );
}
