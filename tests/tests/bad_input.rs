//! Documents that are legal in MongoDB but hard downstream, through the
//! whole pipeline (mongo-source and es-sync on the real bench): deep
//! nesting, a huge array, field names with dots and dollars. Each ends
//! indexed or in the sync dead-letter topic with its reason, nothing else
//! is lost, and a normal document written after them is indexed.
//!
//! Both index kinds are exercised: `card` goes to the project's index
//! (`dynamic: false`: unmapped fields are kept in `_source`, not mapped),
//! `reply` to a copy of the replies index with `dynamic: true`, where
//! Elasticsearch maps every new field and so applies
//! `index.mapping.depth.limit` (20).

use e2e_tests::e2e::{es_documents, Pipeline};
use e2e_tests::kafka::read_all;
use e2e_tests::{eventually, mongo};
use es_sync::dlq::headers;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// `{"a": {"a": ... {"leaf": 1}}}`, `levels` objects deep.
fn nested(levels: usize) -> Document {
    let mut d = doc! { "leaf": 1 };
    for _ in 1..levels {
        d = doc! { "a": d };
    }
    d
}

/// The documents of the test, by `_id`.
fn bad_documents() -> Vec<Document> {
    let mut dotted = doc! { "_id": "dots", "title": "dotted names" };
    dotted.insert("a.b", "dot inside");
    let mut dollar = doc! { "_id": "dollar", "title": "dollar names" };
    dollar.insert("$x", "leading dollar");
    dollar.insert("x$", "trailing dollar");
    let mut dotdot = doc! { "_id": "dotdot" };
    dotdot.insert("a..b", 1);
    let mut leading_dot = doc! { "_id": "leading_dot" };
    leading_dot.insert(".a", 1);
    let mut under_text = doc! { "_id": "under_text" };
    under_text.insert("body.x", "a field under the text field body");
    vec![
        doc! { "_id": "deep25", "d": nested(25) },
        doc! { "_id": "deep100", "d": nested(100) },
        doc! { "_id": "deep150", "d": nested(150) },
        doc! { "_id": "array", "arr": (0..100_000).map(Bson::Int32).collect::<Vec<_>>() },
        dotted,
        dollar,
        dotdot,
        leading_dot,
        under_text,
    ]
}

/// The replies index with `dynamic: true`.
fn dynamic_replies_index() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/indices/replies.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(base).expect("index file")).expect("json");
    v["mappings"]["dynamic"] = json!(true);
    let path = std::env::temp_dir().join(format!("{}.json", e2e_tests::unique("replies-dyn-")));
    std::fs::write(&path, v.to_string()).expect("write index file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_huge_and_oddly_named_documents_end_indexed_or_dead_lettered_and_the_rest_flows() {
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let (stop_source, source) = p.source.spawn();
    // Written after the snapshot, the documents travel as change events.
    p.source.wait_snapshot_done("card").await;
    p.source.wait_snapshot_done("reply").await;
    let sync_toml = p.sync_toml().replace(
        &format!(
            "{}/replies.json",
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../config/indices")
                .display()
        ),
        &dynamic_replies_index().display().to_string(),
    );
    assert!(sync_toml.contains("replies-dyn-"), "{sync_toml}");
    let sync_path = std::env::temp_dir().join(format!("{}.toml", e2e_tests::unique("es-sync-")));
    std::fs::write(&sync_path, sync_toml).expect("config");
    let cfg = es_sync::config::SyncConfig::load(&sync_path).expect("es-sync config");
    let stop_sync = shared::shutdown::CancellationToken::new();
    let sync = tokio::spawn(es_sync::run(cfg, stop_sync.clone()));

    for coll in ["card", "reply"] {
        let c = db.collection::<Document>(coll);
        for d in bad_documents() {
            let id = d.get_str("_id").unwrap().to_string();
            c.insert_one(d)
                .await
                .unwrap_or_else(|e| panic!("MongoDB refused {coll} {id}: {e}"));
        }
        c.insert_one(doc! { "_id": "after", "title": "a normal document after them" })
            .await
            .unwrap();
    }

    // es-sync: each bad record ends indexed or dead-lettered with its reason.
    let indexed_card = ["deep25", "deep100", "array", "dots", "dollar", "after"];
    let indexed_reply = ["array", "dots", "dollar", "after"];
    let dead: BTreeMap<(&str, &str), &str> = [
        (("card", "deep150"), "not_json"),
        (("card", "dotdot"), "mapper_parsing_exception"),
        (("card", "leading_dot"), "mapper_parsing_exception"),
        (("card", "under_text"), "mapper_parsing_exception"),
        (("reply", "deep25"), "illegal_argument_exception"),
        (("reply", "deep100"), "illegal_argument_exception"),
        (("reply", "deep150"), "not_json"),
        (("reply", "dotdot"), "mapper_parsing_exception"),
        (("reply", "leading_dot"), "mapper_parsing_exception"),
        (("reply", "under_text"), "mapper_parsing_exception"),
    ]
    .into_iter()
    .collect();
    let dlq = eventually("every bad record dead-lettered", WAIT, || async {
        let recs = read_all(&p.sync_dlq()).await;
        (recs.len() >= dead.len()).then_some(recs)
    })
    .await;
    for (alias, want) in [
        (&p.cards, &indexed_card[..]),
        (&p.replies, &indexed_reply[..]),
    ] {
        let docs = eventually("the normal document indexed", WAIT, || async {
            let d = es_documents(alias).await;
            d.contains_key("after").then_some(d)
        })
        .await;
        let ids: BTreeSet<&str> = docs.keys().map(String::as_str).collect();
        assert_eq!(ids, want.iter().copied().collect(), "{alias}");
        if alias == &p.cards {
            assert_eq!(
                docs["dots"]["a.b"], "dot inside",
                "kept as given in _source"
            );
            assert_eq!(docs["dollar"]["$x"], "leading dollar");
            assert_eq!(docs["array"]["arr"].as_array().map(Vec::len), Some(100_000));
            let mut depth = 0;
            let mut v = &docs["deep100"]["d"];
            while let Some(inner) = v.get("a") {
                depth += 1;
                v = inner;
            }
            assert_eq!(
                (depth, v["leaf"].clone()),
                (99, json!(1)),
                "whole depth kept"
            );
        }
    }
    assert_eq!(dlq.len(), dead.len(), "nothing dead-lettered twice or more");
    for r in &dlq {
        let topic = &r.headers[headers::TOPIC];
        let coll = if topic == &p.source.topic("card") {
            "card"
        } else {
            "reply"
        };
        let key: String = serde_json::from_str(r.key.as_deref().unwrap_or("")).expect("key");
        let want = dead
            .get(&(coll, key.as_str()))
            .unwrap_or_else(|| panic!("unexpected dead letter {coll} {key}: {r:?}"));
        let ty = &r.headers[headers::ERROR_TYPE];
        let reason = &r.headers[headers::ERROR_REASON];
        assert_eq!(ty, want, "{coll} {key}: {reason}");
        match key.as_str() {
            "deep150" => assert!(reason.contains("recursion limit"), "{reason}"),
            "deep25" | "deep100" => assert!(reason.contains("mapping depth"), "{reason}"),
            _ => assert!(!reason.is_empty()),
        }
    }

    // mongo-source delivered everything: nothing in its dead-letter topic,
    // both streams running.
    assert!(read_all(&p.source.dlq()).await.is_empty());
    let status = p.source.status().await;
    for s in status["streams"].as_array().expect("streams") {
        assert_eq!(s["state"], "RUNNING", "{status}");
        assert_eq!(s["dead_lettered"], 0, "{status}");
        assert_eq!(s["restarts"], 0, "{status}");
    }

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}
