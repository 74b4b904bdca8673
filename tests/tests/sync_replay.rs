//! es-sync against real Kafka and Elasticsearch: replaying a whole topic
//! from the earliest offset leaves the index unchanged, and a snapshot-end
//! marker removes the documents of its partition older than the snapshot.

use e2e_tests::sync_support::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_whole_topic_leaves_the_index_unchanged() {
    let n = Names::new("replay");
    create_topic(&n.topic, 3).await;
    let p = producer();
    let t = 1_700_000_400;
    // 60 documents, each inserted and updated; every 3rd deleted; every 5th
    // deleted and inserted again.
    for k in 0..60u32 {
        let id = oid(1000 + u64::from(k));
        produce(
            &p,
            &n.topic,
            &id,
            &native("insert", &id, t, k, Some(card(&id, "v1", 1))),
            None,
        )
        .await;
        produce(
            &p,
            &n.topic,
            &id,
            &native("update", &id, t + 1, k, Some(card(&id, "v2", 2))),
            None,
        )
        .await;
        if k.is_multiple_of(3) {
            produce(
                &p,
                &n.topic,
                &id,
                &native("delete", &id, t + 2, k, None),
                None,
            )
            .await;
        }
        if k.is_multiple_of(5) {
            produce(
                &p,
                &n.topic,
                &id,
                &native("insert", &id, t + 3, k, Some(card(&id, "v3", 3))),
                None,
            )
            .await;
        }
    }
    let expected = (0..60u32)
        .filter(|k| !k.is_multiple_of(3) || k.is_multiple_of(5))
        .count();
    let run = start(config(&n));
    let alias = n.alias.clone();
    let before = eventually(WAIT, "all documents", || async {
        let docs = all_docs(&alias).await;
        (docs.len() == expected && docs.values().all(|(v, _)| *v >= version(t + 1, 0)))
            .then_some(docs)
    })
    .await;
    run.stop().await;
    for (id, (v, s)) in &before {
        let k = (u64::from_str_radix(&id[8..], 16).expect("hex") - 1000) as u32;
        let want = if k.is_multiple_of(5) {
            ("v3", version(t + 3, k))
        } else {
            ("v2", version(t + 1, k))
        };
        assert_eq!((s["title"].as_str(), *v), (Some(want.0), want.1), "{id}");
    }

    // A new group reads everything again from the earliest offset.
    let mut again = n.clone();
    again.group = format!("{}-again", n.group);
    let run = start(config(&again));
    wait_caught_up(&again.group, &n.topic, WAIT).await;
    run.stop().await;
    let after = all_docs(&alias).await;
    assert_eq!(after, before, "same documents, same versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_end_removes_older_documents_of_its_partition_only() {
    let n = Names::new("snap");
    create_topic(&n.topic, 2).await;
    let p = producer();
    let t = 1_700_000_500;
    let (old0, kept0, old1) = (oid(40), oid(41), oid(42));
    // Partition 0: a document from before the snapshot that the snapshot
    // did not copy (deleted meanwhile), and one it copied.
    produce(
        &p,
        &n.topic,
        &old0,
        &native("insert", &old0, t, 0, Some(card(&old0, "gone", 0))),
        Some(0),
    )
    .await;
    produce(
        &p,
        &n.topic,
        &kept0,
        &native("insert", &kept0, t, 1, Some(card(&kept0, "old", 0))),
        Some(0),
    )
    .await;
    // Partition 1: an old document; its partition gets no marker here.
    produce(
        &p,
        &n.topic,
        &old1,
        &native("insert", &old1, t, 2, Some(card(&old1, "p1", 0))),
        Some(1),
    )
    .await;
    // The snapshot (version t+10) copies kept0, then ends in partition 0.
    produce(
        &p,
        &n.topic,
        &kept0,
        &native(
            "snapshot",
            &kept0,
            t + 10,
            0,
            Some(card(&kept0, "copied", 1)),
        ),
        Some(0),
    )
    .await;
    produce(&p, &n.topic, "marker", &snapshot_end(t + 10, 0), Some(0)).await;
    // A change after the marker, to know it was processed.
    let after = oid(43);
    produce(
        &p,
        &n.topic,
        &after,
        &native("insert", &after, t + 11, 0, Some(card(&after, "after", 0))),
        Some(0),
    )
    .await;

    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "record after the marker", || async {
        get_doc(&alias, &after).await
    })
    .await;
    eventually(WAIT, "old0 removed", || async {
        get_doc(&alias, &old0).await.is_none().then_some(())
    })
    .await;
    let (_, k) = get_doc(&alias, &kept0).await.expect("kept0 stays");
    assert_eq!(k["title"], json!("copied"));
    assert!(
        get_doc(&alias, &old1).await.is_some(),
        "other partitions are untouched"
    );
    run.stop().await;
}
