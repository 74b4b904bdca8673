//! Multi-document transactions through both binaries (MongoDB ->
//! mongo-source -> Kafka -> es-sync -> Elasticsearch). Every change of a
//! transaction carries the transaction's cluster time (on MongoDB and on
//! the Python SecantusDB of the bench), so before issue 14 two changes of
//! one document in one transaction shared a version and the index kept the
//! first. Each scenario ends with the verifier.

use e2e_tests::e2e::{es_documents, wait_equal, Pipeline};
use e2e_tests::mongo;
use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::{ClientSession, Collection};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

async fn in_txn<F>(client: &mongodb::Client, body: F)
where
    F: for<'a> AsyncFnOnce(&'a mut ClientSession),
{
    let mut s = client.start_session().await.expect("session");
    s.start_transaction().await.expect("start transaction");
    body(&mut s).await;
    s.commit_transaction().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_shape_ends_equal_to_mongodb() {
    let p = Pipeline::new();
    let client = mongo().await;
    let db = client.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    // A card that exists before, to delete and insert again in one transaction.
    let again = ObjectId::new();
    cards
        .insert_one(doc! { "_id": again, "title": "before", "likes": 1_i32 })
        .await
        .unwrap();
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();
    // Transactions after the snapshot, so they arrive as change events.
    p.source.wait_snapshot_done("card").await;
    p.source.wait_snapshot_done("reply").await;

    // 1. insert, then update, in one transaction.
    let a = ObjectId::new();
    in_txn(&client, async |s| {
        cards
            .insert_one(doc! { "_id": a, "title": "설악산 첫 글", "likes": 0_i32 })
            .session(&mut *s)
            .await
            .unwrap();
        cards
            .update_one(
                doc! { "_id": a },
                doc! { "$set": { "likes": 7_i32, "title": "설악산 고친 글" } },
            )
            .session(&mut *s)
            .await
            .unwrap();
    })
    .await;
    // 2. insert, then delete.
    let b = ObjectId::new();
    in_txn(&client, async |s| {
        cards
            .insert_one(doc! { "_id": b, "title": "곧 지울 글" })
            .session(&mut *s)
            .await
            .unwrap();
        cards
            .delete_one(doc! { "_id": b })
            .session(&mut *s)
            .await
            .unwrap();
    })
    .await;
    // 3. delete, then insert again with the same _id.
    in_txn(&client, async |s| {
        cards
            .delete_one(doc! { "_id": again })
            .session(&mut *s)
            .await
            .unwrap();
        cards
            .insert_one(doc! { "_id": again, "title": "다시 쓴 글", "likes": 2_i32 })
            .session(&mut *s)
            .await
            .unwrap();
    })
    .await;
    // 4. several updates of one document.
    let d = ObjectId::new();
    cards
        .insert_one(doc! { "_id": d, "title": "카운터", "likes": 0_i32 })
        .await
        .unwrap();
    in_txn(&client, async |s| {
        for k in 1..=6_i32 {
            cards
                .update_one(doc! { "_id": d }, doc! { "$set": { "likes": k } })
                .session(&mut *s)
                .await
                .unwrap();
        }
    })
    .await;
    // 5. a card and its replies together.
    let e = ObjectId::new();
    in_txn(&client, async |s| {
        cards
            .insert_one(doc! { "_id": e, "title": "댓글 달린 글", "likes": 0_i32 })
            .session(&mut *s)
            .await
            .unwrap();
        replies
            .insert_one(doc! { "_id": "re1", "card_id": e, "body": "첫 댓글" })
            .session(&mut *s)
            .await
            .unwrap();
        replies
            .update_one(
                doc! { "_id": "re1" },
                doc! { "$set": { "body": "고친 댓글" } },
            )
            .session(&mut *s)
            .await
            .unwrap();
        cards
            .update_one(doc! { "_id": e }, doc! { "$inc": { "likes": 1_i32 } })
            .session(&mut *s)
            .await
            .unwrap();
    })
    .await;
    // 6. a large transaction: 800 inserts, 800 updates of them, 400 deletes
    //    (2,000 operations), spread over both collections.
    let many: Vec<ObjectId> = (0..800).map(|_| ObjectId::new()).collect();
    in_txn(&client, async |s| {
        for (k, id) in many.iter().enumerate() {
            let coll = if k % 4 == 0 { &replies } else { &cards };
            coll.insert_one(doc! { "_id": id, "title": format!("대량 {k}"), "likes": 0_i32 })
                .session(&mut *s)
                .await
                .unwrap();
        }
        for (k, id) in many.iter().enumerate() {
            let coll = if k % 4 == 0 { &replies } else { &cards };
            coll.update_one(doc! { "_id": id }, doc! { "$set": { "likes": k as i32 } })
                .session(&mut *s)
                .await
                .unwrap();
        }
        for (k, id) in many.iter().enumerate().filter(|(k, _)| k % 2 == 1) {
            let coll = if k % 4 == 0 { &replies } else { &cards };
            coll.delete_one(doc! { "_id": id })
                .session(&mut *s)
                .await
                .unwrap();
        }
    })
    .await;

    wait_equal(&p, &db, WAIT).await;
    let es = es_documents(&p.cards).await;
    assert_eq!(
        es[&a.to_hex()]["likes"],
        7,
        "insert+update: the update wins"
    );
    assert!(!es.contains_key(&b.to_hex()), "insert+delete: gone");
    assert_eq!(
        es[&again.to_hex()]["title"],
        "다시 쓴 글",
        "delete+insert: there"
    );
    assert_eq!(es[&d.to_hex()]["likes"], 6, "the last of six updates");
    assert_eq!(es[&e.to_hex()]["likes"], 1);
    let replies_es = es_documents(&p.replies).await;
    assert_eq!(replies_es["re1"]["body"], "고친 댓글");
    let ranked = es[&d.to_hex()]["_sync"]["version"].as_u64().unwrap();
    assert_eq!(
        shared::wire::version::Version::from_u64(ranked).parts().n,
        5,
        "the sixth change of the card in its transaction has rank 5"
    );
    p.assert_verified().await;

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}
