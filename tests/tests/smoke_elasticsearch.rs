//! Smoke test of the Elasticsearch node of the test bench, through the
//! elasticsearch crate: mapping, bulk with external versions, a 409 for an
//! older version, refresh, search, and the `cjk` analyzer.

use e2e_tests::{elasticsearch_url, unique};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{IndicesCreateParts, IndicesRefreshParts};
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use serde_json::{json, Value};

fn client() -> Elasticsearch {
    Elasticsearch::new(Transport::single_node(&elasticsearch_url()).expect("transport"))
}

#[tokio::test]
async fn bulk_with_external_versions_rejects_older_and_searches() {
    let es = client();
    let index = unique("smoke-");
    let created = es
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .body(json!({
            "settings": { "number_of_shards": 1, "number_of_replicas": 0 },
            "mappings": { "properties": {
                "title": { "type": "text", "analyzer": "cjk" },
                "likes": { "type": "integer" }
            }}
        }))
        .send()
        .await
        .expect("create");
    assert!(
        created.status_code().is_success(),
        "{:?}",
        created.text().await
    );

    let body: Vec<JsonBody<Value>> = vec![
        json!({"index": {"_id": "1", "version": 5, "version_type": "external"}}).into(),
        json!({"title": "설악산 단풍 산행", "likes": 2}).into(),
        json!({"index": {"_id": "2", "version": 1, "version_type": "external"}}).into(),
        json!({"title": "hiking 한라산", "likes": 1}).into(),
    ];
    let r = es
        .bulk(BulkParts::Index(&index))
        .body(body)
        .send()
        .await
        .expect("bulk");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["errors"], false, "{v}");

    let older: Vec<JsonBody<Value>> = vec![
        json!({"index": {"_id": "1", "version": 4, "version_type": "external"}}).into(),
        json!({"title": "older", "likes": 0}).into(),
    ];
    let r = es
        .bulk(BulkParts::Index(&index))
        .body(older)
        .send()
        .await
        .expect("bulk");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["items"][0]["index"]["status"], 409, "{v}");
    assert_eq!(
        v["items"][0]["index"]["error"]["type"],
        "version_conflict_engine_exception"
    );

    es.indices()
        .refresh(IndicesRefreshParts::Index(&[&index]))
        .send()
        .await
        .expect("refresh");
    let r = es
        .search(SearchParts::Index(&[&index]))
        .body(json!({"query": {"match": {"title": "설악산"}}}))
        .send()
        .await
        .expect("search");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["hits"]["total"]["value"], 1, "{v}");
    assert_eq!(v["hits"]["hits"][0]["_id"], "1");
    assert_eq!(
        v["hits"]["hits"][0]["_source"]["likes"], 2,
        "newer version kept"
    );
}
