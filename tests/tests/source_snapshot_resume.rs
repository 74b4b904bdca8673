//! The resume query of an interrupted snapshot, against the real server:
//! after a `_id` of one BSON type it must return every later document in
//! `_id` order, of every later type. `{_id: {$gt: last}}` alone matches only
//! `last`'s own type (type bracketing): the chaos run lost a collection's
//! ObjectId documents when a snapshot resumed after a string `_id`.

use e2e_tests::mongo;
use futures::TryStreamExt;
use mongo_source::stream::snapshot::resume_filter;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};

#[allow(clippy::unwrap_used)] // test helper: a failed query fails the test
async fn ids_after(coll: &mongodb::Collection<Document>, filter: Document) -> Vec<Bson> {
    coll.find(filter)
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.get("_id").cloned())
        .collect()
}

#[tokio::test]
async fn resume_after_a_string_id_keeps_the_object_ids() {
    let db = mongo().await.database(&e2e_tests::unique("resume_"));
    let coll = db.collection::<Document>("card");
    let oids: Vec<ObjectId> = (0..5).map(|_| ObjectId::new()).collect();
    let mut docs = vec![
        doc! { "_id": 7_i32 },
        doc! { "_id": "probe-1" },
        doc! { "_id": "probe-2" },
        doc! { "_id": "zz" },
    ];
    docs.extend(oids.iter().map(|o| doc! { "_id": *o }));
    coll.insert_many(docs).await.unwrap();

    // What the plain query does on this server: the ObjectIds are skipped.
    let plain = ids_after(&coll, doc! { "_id": { "$gt": "probe-2" } }).await;
    assert_eq!(plain, vec![Bson::String("zz".into())], "type bracketing");

    let got = ids_after(&coll, resume_filter(Bson::String("probe-2".into()))).await;
    let mut want = vec![Bson::String("zz".into())];
    want.extend(oids.iter().map(|o| Bson::ObjectId(*o)));
    assert_eq!(got, want, "every later document, of every later type");

    // After a number: the strings and the ObjectIds.
    let got = ids_after(&coll, resume_filter(Bson::Int32(7))).await;
    assert_eq!(got.len(), 3 + oids.len(), "{got:?}");
    db.drop().await.unwrap();
}
