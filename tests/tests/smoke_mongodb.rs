//! Smoke test of the MongoDB server of the test bench, through the Rust
//! driver: insert, change stream, resume from a token after reconnecting.

use e2e_tests::{mongo, unique};
use futures::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::FullDocumentType;
use std::time::Duration;

#[tokio::test]
async fn change_stream_sees_insert_and_resumes_after_reconnect() {
    let client = mongo().await;
    let coll = client
        .database("mountain")
        .collection::<Document>(&unique("card_"));
    coll.insert_one(doc! { "_id": "seed" })
        .await
        .expect("create collection");

    let mut stream = coll
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .expect("watch");
    coll.insert_one(doc! { "_id": "c1", "title": "지리산 종주" })
        .await
        .expect("insert");
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event");
    assert_eq!(
        ev.operation_type,
        mongodb::change_stream::event::OperationType::Insert
    );
    assert_eq!(
        ev.full_document
            .expect("full document")
            .get_str("title")
            .ok(),
        Some("지리산 종주")
    );
    let token = stream.resume_token().expect("token");
    drop(stream);
    drop(client);

    // A new client, as after a restart: resume after the token.
    let client = mongo().await;
    let coll = client
        .database("mountain")
        .collection::<Document>(coll.name());
    coll.insert_one(doc! { "_id": "c2" })
        .await
        .expect("insert 2");
    let mut stream = coll.watch().resume_after(token).await.expect("resume");
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event");
    assert_eq!(
        ev.document_key.expect("key").get_str("_id").ok(),
        Some("c2")
    );
}
