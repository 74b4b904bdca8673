//! Faults an operator fixes, against the real Kafka and Elasticsearch: the
//! partition waits (and `/status` says why), nothing is dead-lettered, and
//! the work completes once the fault is gone.

use e2e_tests::sync_support::*;
use elasticsearch::http::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The concrete index behind `alias`.
async fn concrete(alias: &str) -> String {
    let (_, body) = es_call(Method::Get, &format!("/_alias/{alias}"), None).await;
    body.as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| panic!("no index behind {alias}: {body}"))
}

/// `POST /{index}/{action}` (`_close`, `_open`), which must answer 200.
async fn index_action(index: &str, action: &str) {
    let (s, body) = es_call(Method::Post, &format!("/{index}/{action}"), None).await;
    assert_eq!(s, 200, "{action} {index}: {body}");
}

async fn set_write_block(index: &str, on: bool) {
    let (s, body) = es_call(
        Method::Put,
        &format!("/{index}/_settings"),
        Some(json!({"index.blocks.write": on})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cleanup_refused_by_a_blocked_index_waits_and_completes() {
    let n = Names::new("cleanup");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let (kept, deleted) = (oid(1), oid(2));
    let t = 1_700_005_000;
    for (k, id) in [&kept, &deleted].into_iter().enumerate() {
        produce(
            &p,
            &n.topic,
            id,
            &native("insert", id, t, k as u32 + 1, Some(card(id, "x", 1))),
            None,
        )
        .await;
    }
    // A re-snapshot: `kept` is copied again, `deleted` was deleted in
    // MongoDB while the stream was away, so only the cleanup removes it.
    produce(&p, &n.topic, "", &snapshot_start(t + 10, 1), Some(0)).await;
    produce(
        &p,
        &n.topic,
        &kept,
        &native("snapshot", &kept, t + 10, 1, Some(card(&kept, "x", 1))),
        None,
    )
    .await;
    let cfg = config(&n);
    let status = Arc::new(es_sync::status::SyncStatus::new(&cfg.kafka.group_id));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(es_sync::run_with_status(
        cfg,
        shutdown.clone(),
        status.clone(),
    ));
    let alias = n.alias.clone();
    eventually(WAIT, "the snapshot copy indexed", || async {
        get_doc(&alias, &kept)
            .await
            .filter(|(v, _)| *v == version(t + 10, 1))
    })
    .await;
    let index = concrete(&alias).await;
    set_write_block(&index, true).await;
    produce(&p, &n.topic, "", &snapshot_end(t + 10, 1), Some(0)).await;
    let waiting = eventually(WAIT, "the partition says it waits", || async {
        status.partitions().into_iter().find_map(|p| p.waiting)
    })
    .await;
    assert!(waiting.contains("snapshot cleanup"), "{waiting}");
    assert!(waiting.contains("cluster_block_exception"), "{waiting}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get_doc(&alias, &deleted).await.is_some(),
        "not cleaned while blocked"
    );
    set_write_block(&index, false).await;
    eventually(WAIT, "the deleted document removed", || async {
        get_doc(&alias, &deleted).await.is_none().then_some(())
    })
    .await;
    eventually(WAIT, "the wait cleared", || async {
        status
            .partitions()
            .iter()
            .all(|p| p.waiting.is_none())
            .then_some(())
    })
    .await;
    assert!(get_doc(&alias, &kept).await.is_some());
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        read_topic_for(&n.dlq, Duration::from_secs(3))
            .await
            .is_empty(),
        "the marker is not dead-lettered"
    );
}

/// One operator fault on the index: applied before a record arrives, the
/// record waits (the partition says why, nothing is dead-lettered), and
/// lands once the fault is lifted.
#[allow(clippy::too_many_arguments)] // a test scene: the fault, its fix and the record
async fn fault_then_fix(
    label: &str,
    expect: &str,
    apply: impl std::future::Future<Output = ()>,
    lift: impl std::future::Future<Output = ()>,
    n: &Names,
    status: &es_sync::status::SyncStatus,
    id: &str,
    doc: serde_json::Value,
    t: u32,
) {
    let event = native("insert", id, t, 1, Some(doc.clone()));
    let title = doc["title"].clone();
    fault_then_fix_event(label, expect, apply, lift, n, status, id, &event, |d| {
        d["title"] == title
    })
    .await;
}

/// [`fault_then_fix`] with any `event` of document `id`; `landed` tells
/// the document as the index holds it once the event is applied.
#[allow(clippy::too_many_arguments)] // a test scene: the fault, its fix and the record
async fn fault_then_fix_event(
    label: &str,
    expect: &str,
    apply: impl std::future::Future<Output = ()>,
    lift: impl std::future::Future<Output = ()>,
    n: &Names,
    status: &es_sync::status::SyncStatus,
    id: &str,
    event: &[u8],
    landed: impl Fn(&serde_json::Value) -> bool,
) {
    apply.await;
    produce(&producer(), &n.topic, id, event, None).await;
    let waiting = eventually(WAIT, &format!("{label}: the partition waits"), || async {
        status.partitions().into_iter().find_map(|p| p.waiting)
    })
    .await;
    assert!(waiting.contains(expect), "{label}: {waiting}");
    // (A closed index answers 400 to a read: not found either way.)
    let (found, body) = es_call(Method::Get, &format!("/{}/_doc/{id}", n.alias), None).await;
    assert!(
        found != 200 || !landed(&body["_source"]),
        "{label}: not written yet: {body}"
    );
    lift.await;
    eventually(WAIT, &format!("{label}: written once fixed"), || async {
        get_doc(&n.alias, id).await.filter(|(_, d)| landed(d))
    })
    .await;
    eventually(WAIT, &format!("{label}: the wait cleared"), || async {
        status
            .partitions()
            .iter()
            .all(|p| p.waiting.is_none())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_faults_pause_the_partition_and_every_write_lands_once_fixed() {
    let n = Names::new("faults");
    create_topic(&n.topic, 1).await;
    let cfg = config(&n);
    let status = Arc::new(es_sync::status::SyncStatus::new(&cfg.kafka.group_id));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(es_sync::run_with_status(
        cfg,
        shutdown.clone(),
        status.clone(),
    ));
    let p = producer();
    let t = 1_700_006_000;
    let first = oid(100);
    produce(
        &p,
        &n.topic,
        &first,
        &native("insert", &first, t, 1, Some(card(&first, "x", 1))),
        None,
    )
    .await;
    let alias = n.alias.clone();
    eventually(WAIT, "bootstrap", || async {
        get_doc(&alias, &first).await
    })
    .await;
    let index = concrete(&alias).await;
    let settings = |body: serde_json::Value| {
        let index = index.clone();
        async move {
            let (s, b) = es_call(Method::Put, &format!("/{index}/_settings"), Some(body)).await;
            assert_eq!(s, 200, "{b}");
        }
    };

    // A write block (index.blocks.write).
    fault_then_fix(
        "write block",
        "cluster_block_exception",
        settings(json!({"index.blocks.write": true})),
        settings(json!({"index.blocks.write": false})),
        &n,
        &status,
        &oid(101),
        card(&oid(101), "x", 1),
        t + 1,
    )
    .await;
    // The flood-stage disk block, as the node sets it.
    fault_then_fix(
        "flood stage",
        "cluster_block_exception",
        settings(json!({"index.blocks.read_only_allow_delete": true})),
        settings(json!({"index.blocks.read_only_allow_delete": null})),
        &n,
        &status,
        &oid(102),
        card(&oid(102), "x", 1),
        t + 2,
    )
    .await;
    // A closed index.
    fault_then_fix(
        "closed index",
        "index_closed_exception",
        index_action(&index, "_close"),
        index_action(&index, "_open"),
        &n,
        &status,
        &oid(103),
        card(&oid(103), "x", 1),
        t + 3,
    )
    .await;
    // A closed index met by an update without its document (a patch,
    // applied to the document the index holds): the read of that document
    // fails first, and the partition says why as for a write.
    let mut patch: serde_json::Value =
        serde_json::from_slice(&native("update", &first, t + 3, 2, None)).unwrap();
    patch["update"] = json!({"updated_fields": {"title": "patched while closed"}});
    fault_then_fix_event(
        "closed index, a patch",
        "index_closed_exception",
        index_action(&index, "_close"),
        index_action(&index, "_open"),
        &n,
        &status,
        &first,
        patch.to_string().as_bytes(),
        |d| d["title"] == "patched while closed",
    )
    .await;
    // The mapping's field limit hit by a new field.
    let mut wide = card(&oid(104), "x", 1);
    for k in 0..40 {
        wide[format!("extra_{k}")] = json!(k);
    }
    fault_then_fix(
        "total fields limit",
        "Limit of total fields",
        {
            let (mapping, limit) = (
                format!("/{index}/_mapping"),
                settings(json!({"index.mapping.total_fields.limit": 1})),
            );
            async move {
                // The shipped mapping ignores unknown fields; a mapping
                // that takes new ones meets the limit.
                let (s, b) = es_call(Method::Put, &mapping, Some(json!({"dynamic": true}))).await;
                assert_eq!(s, 200, "{b}");
                limit.await;
            }
        },
        settings(json!({"index.mapping.total_fields.limit": 1000})),
        &n,
        &status,
        &oid(104),
        wide,
        t + 4,
    )
    .await;
    // The alias deleted, with auto-creation forbidden for its name.
    let (a1, a2, i2) = (alias.clone(), alias.clone(), index.clone());
    fault_then_fix(
        "alias deleted",
        "index_not_found_exception",
        async move {
            let (s, b) = es_call(
                Method::Put,
                "/_cluster/settings",
                Some(json!({"transient": {"action.auto_create_index": format!("-{a1},+*")}})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(es_call(Method::Delete, &format!("/{i2}/_alias/{a1}"), None).await.0, 200);
        },
        async move {
            let (s, _) = es_call(
                Method::Post,
                "/_aliases",
                Some(json!({"actions": [{"add": {"index": concrete_name(&a2), "alias": a2, "is_write_index": true}}]})),
            )
            .await;
            assert_eq!(s, 200);
            es_call(
                Method::Put,
                "/_cluster/settings",
                Some(json!({"transient": {"action.auto_create_index": null}})),
            )
            .await;
        },
        &n, &status, &oid(105), card(&oid(105), "x", 1), t + 5,
    )
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(
        read_topic_for(&n.dlq, Duration::from_secs(3))
            .await
            .is_empty(),
        "no good document dead-lettered"
    );
    assert_eq!(all_docs(&n.alias).await.len(), 6);
}

/// The first concrete index es-sync creates behind `alias`.
fn concrete_name(alias: &str) -> String {
    format!("{alias}-000001")
}
