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
