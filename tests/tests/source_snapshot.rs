//! mongo-source snapshot of existing documents while writes go on: the
//! topic ends holding every document's latest state, and no snapshot
//! record carries a version above a later change of the same document.

use e2e_tests::kafka::read_all;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, mongo};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const DOCS: i32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_existing_documents_while_writes_continue() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.extra = "\n[start]\nmode = \"snapshot\"\nsnapshot_batch = 500\n".into();
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let docs: Vec<Document> = (0..DOCS)
        .map(|i| doc! { "_id": i, "title": format!("card {i}"), "rev": 0_i32 })
        .collect();
    for chunk in docs.chunks(1000) {
        cards.insert_many(chunk.to_vec()).await.unwrap();
    }

    let (stop, handle) = fx.spawn();
    // Writes during the copy: updates across the key range, inserts, deletes.
    let writer = {
        let cards = cards.clone();
        tokio::spawn(async move {
            for n in 1..=300_i32 {
                let id = (n * 7919) % DOCS;
                cards
                    .update_one(doc! { "_id": id }, doc! { "$set": { "rev": n } })
                    .await
                    .unwrap();
                if n % 10 == 0 {
                    cards
                        .insert_one(doc! { "_id": DOCS + n, "title": "new", "rev": n })
                        .await
                        .unwrap();
                }
                if n % 25 == 0 {
                    cards.delete_one(doc! { "_id": n }).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    writer.await.unwrap();
    let marker = cards
        .insert_one(doc! { "_id": -1, "title": "last" })
        .await
        .unwrap();
    let _ = marker;

    let topic = fx.topic("card");
    let recs = eventually(
        "the last write on the topic",
        Duration::from_secs(180),
        || async {
            let recs = read_all(&topic).await;
            recs.iter()
                .any(|r| r.key.as_deref() == Some(r#"{"$numberInt":"-1"}"#))
                .then_some(recs)
        },
    )
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    // Latest state per key, by version, as a consumer applying versions would.
    let mut latest: HashMap<String, (u64, Value)> = HashMap::new();
    let mut snapshot_versions: HashMap<String, u64> = HashMap::new();
    let mut snapshot_count = 0;
    for r in &recs {
        let op = r.value["op"].as_str().unwrap();
        if op == "snapshot_start" || op == "snapshot_end" {
            continue;
        }
        let key = r.key.clone().unwrap();
        let v = r.value["version"].as_u64().unwrap();
        if op == "snapshot" {
            snapshot_count += 1;
            snapshot_versions.insert(key.clone(), v);
        } else if let Some(sv) = snapshot_versions.get(&key) {
            // The stream starts at the snapshot's cluster time inclusive, so
            // the one change at exactly that time may share its version
            // (same state: a version conflict downstream, harmless).
            assert!(
                v >= *sv,
                "change of {key} after its snapshot record: v{v} < snapshot v{sv}"
            );
        }
        let state = if op == "delete" {
            Value::Null
        } else {
            r.value["doc"].clone()
        };
        match latest.get(&key) {
            Some((old, _)) if *old >= v => {}
            _ => {
                latest.insert(key, (v, state));
            }
        }
    }
    assert!(
        snapshot_count >= DOCS as usize - 20,
        "the copy sent the existing documents: {snapshot_count}"
    );

    let in_mongo: Vec<Document> = cards
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut expected: HashMap<String, Value> = HashMap::new();
    for d in &in_mongo {
        let key = shared::ejson::canonical_key(d.get("_id").unwrap());
        expected.insert(key, shared::ejson::document_to_json(d));
    }
    let mut wrong = vec![];
    for (key, doc) in &expected {
        match latest.get(key) {
            Some((_, state)) if state == doc => {}
            other => wrong.push(format!("{key}: mongo {doc} topic {other:?}")),
        }
    }
    for (key, (_, state)) in &latest {
        if !state.is_null() && !expected.contains_key(key) {
            wrong.push(format!("{key}: deleted in mongo, alive in topic"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} documents differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
