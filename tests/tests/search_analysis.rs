//! Korean analysis of the shipped mappings, against real engines: es-sync
//! (the binary) creates the index from `config/indices/cards.json`; on the
//! bench (nori loaded) the text is analysed into morphemes, every sub-field
//! (bigram, prefix, raw) answers its kind of query and `/status` says
//! `nori`; on a node without nori (`ES_NORI=0`) the index falls back to
//! bigrams, and `/status` and the log say so; a changed user dictionary is
//! a new index version, built by `es-sync reindex` and swapped by alias.

use e2e_tests::private_stack::PrivateElasticsearch;
use e2e_tests::process::{binary, Proc};
use e2e_tests::sync_support::*;
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// Korean cards: `(key, title)`; the body repeats the title.
const CARDS: [(u64, &str); 6] = [
    (1, "설악산에서 단풍이 들었다"),
    (2, "무등산 입석대 사진"),
    (3, "등산 초보 코스 추천"),
    (4, "한라산 백록담 눈꽃"),
    (5, "大韓民國 산악회 모임"),
    (6, "가지산 억새 산행"),
];

/// An es-sync config for `n` with `index_file`, the Elasticsearch at
/// `es`, admin on `port`.
fn config_file(n: &Names, port: u16, es: &str, index_file: &Path) -> PathBuf {
    let path = write_config_file(n, port);
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace(
            &format!("url = \"{}\"", es_url()),
            &format!("url = \"{es}\""),
        )
        .replace(
            &cards_index_file().display().to_string(),
            &index_file.display().to_string(),
        );
    std::fs::write(&path, text).expect("write config");
    path
}

async fn produce_cards(n: &Names) {
    create_topic(&n.topic, 1).await;
    let p = producer();
    for (k, title) in CARDS {
        let id = oid(9000 + k);
        let mut doc = card(&id, title, 1);
        doc["body"] = json!(title);
        produce(
            &p,
            &n.topic,
            &id,
            &native("insert", &id, 1_700_009_000, k as u32, Some(doc)),
            None,
        )
        .await;
    }
}

/// The `/status` entry of `alias` once es-sync has bootstrapped it.
async fn analysis_status(port: u16, alias: &str) -> Value {
    eventually(WAIT, "the alias's analysis on /status", || async {
        let text = e2e_tests::http_get(port, "/status").await?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["indices"]
            .as_array()?
            .iter()
            .find(|i| i["alias"] == alias)
            .cloned()
    })
    .await
}

/// Titles of the cards `query` finds through `call`.
async fn titles<F, Fut>(call: F, alias: &str, query: Value) -> Vec<String>
where
    F: Fn(Method, String, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let (s, body) = call(
        Method::Post,
        format!("/{alias}/_search"),
        Some(json!({"size": 20, "query": query})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let mut t: Vec<String> = body["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["_source"]["title"].as_str().unwrap_or("").to_string())
        .collect();
    t.sort();
    t
}

async fn bench_call(m: Method, path: String, body: Option<Value>) -> (u16, Value) {
    es_call(m, &path, body).await
}

async fn tokens(alias: &str, analyzer: &str, text: &str) -> Vec<String> {
    let (s, body) = es_call(
        Method::Post,
        &format!("/{alias}/_analyze"),
        Some(json!({"analyzer": analyzer, "text": text})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["token"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_count(alias: &str, n: usize) {
    eventually(WAIT, "every card indexed", || async {
        (all_docs(alias).await.len() == n).then_some(())
    })
    .await;
}

fn title_match(q: &str) -> Value {
    json!({"match": {"title": {"query": q, "operator": "and"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_mapping_analyses_korean_into_morphemes() {
    let n = Names::new("nori");
    produce_cards(&n).await;
    let port = e2e_tests::free_port();
    let cfg = config_file(&n, port, &es_url(), &cards_index_file());
    let sync = Proc::start("es-sync", &["--config", &cfg.display().to_string()], &[]);
    let a = analysis_status(port, &n.alias).await;
    assert_eq!(a["analysis"], "nori", "{a}");
    assert_eq!(a["reindex_needed"], false, "{a}");
    assert!(a["live_revision"].as_u64().is_some(), "{a}");
    assert_eq!(a["live_revision"], a["shipped_revision"]);
    wait_count(&n.alias, CARDS.len()).await;

    // Morphemes, not bigrams: particles and endings are gone.
    let t = tokens(&n.alias, "ko_index", "설악산에서 단풍이 들었다").await;
    assert_eq!(t, ["설악산", "단풍", "듣"]);
    assert_eq!(
        tokens(&n.alias, "ko_index", "大韓民國").await,
        ["대한", "민국"]
    );
    let alias = n.alias.as_str();
    let found = |q: &'static str| titles(bench_call, alias, title_match(q));
    // A word finds its inflected forms.
    assert_eq!(found("단풍").await, ["설악산에서 단풍이 들었다"]);
    assert_eq!(found("설악산").await, ["설악산에서 단풍이 들었다"]);
    // The user dictionary: 무등산 is one word, not 무 + 등산 ("hiking");
    // the synonym 산행 is found for 등산.
    assert_eq!(
        found("등산").await,
        ["가지산 억새 산행", "등산 초보 코스 추천"]
    );
    assert_eq!(found("무등산").await, ["무등산 입석대 사진"]);
    // Hanja in the text is read as Hangul, and a Hanja query too.
    assert_eq!(found("대한민국").await, ["大韓民國 산악회 모임"]);
    // Search-time synonyms: the old name of 한라산.
    assert_eq!(found("영주산").await, ["한라산 백록담 눈꽃"]);
    // Sub-fields: bigram inside a word, prefix (search as you type), raw.
    let bigram = json!({"match": {"title.bigram": "악산"}});
    assert_eq!(
        titles(bench_call, alias, bigram).await,
        ["설악산에서 단풍이 들었다"]
    );
    let prefix = json!({"match": {"title.prefix": {"query": "설악", "operator": "and"}}});
    assert_eq!(
        titles(bench_call, alias, prefix).await,
        ["설악산에서 단풍이 들었다"]
    );
    let exact = json!({"term": {"title.raw": "가지산 억새 산행"}});
    assert_eq!(titles(bench_call, alias, exact).await, ["가지산 억새 산행"]);
    // Highlighting marks the morpheme inside the inflected word.
    let (s, body) = es_call(
        Method::Post,
        &format!("/{alias}/_search"),
        Some(json!({"query": title_match("단풍"), "highlight": {"fields": {"title": {}}}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        body["hits"]["hits"][0]["highlight"]["title"][0],
        "설악산에서 <em>단풍</em>이 들었다"
    );
    drop(sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nori_the_index_falls_back_to_bigrams_and_says_so() {
    let node = PrivateElasticsearch::start_without_nori();
    let (s, body) = node
        .call(
            Method::Post,
            "/_analyze",
            Some(json!({"tokenizer": "nori_tokenizer", "text": "단풍"})),
        )
        .await;
    assert_eq!(s, 400, "the node really has no nori: {body}");

    let n = Names::new("fallback");
    produce_cards(&n).await;
    let port = e2e_tests::free_port();
    let cfg = config_file(&n, port, &node.url(), &cards_index_file());
    let sync = Proc::start("es-sync", &["--config", &cfg.display().to_string()], &[]);
    let a = analysis_status(port, &n.alias).await;
    assert_eq!(a["analysis"], "cjk_fallback", "{a}");
    assert_eq!(a["reindex_needed"], true, "{a}");
    assert!(
        a["fallback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("nori_tokenizer")),
        "{a}"
    );
    let log = sync.log_text();
    assert!(log.contains("the engine has no nori"), "{log}");
    assert!(log.contains("Korean analysis degraded"), "{log}");

    // The index works, with bigrams: 단풍 still finds 단풍이.
    eventually(WAIT, "every card indexed", || async {
        (node.versions(&n.alias).await.len() == CARDS.len()).then_some(())
    })
    .await;
    let (s, settings) = node
        .call(Method::Get, &format!("/{}/_settings", n.alias), None)
        .await;
    assert_eq!(s, 200);
    let analysis = settings
        .as_object()
        .and_then(|m| m.values().next())
        .map(|i| i["settings"]["index"]["analysis"].clone())
        .unwrap_or_default();
    assert!(analysis.is_object(), "{settings}");
    assert!(!analysis.to_string().contains("nori"), "{analysis}");
    let (s, t) = node
        .call(
            Method::Post,
            &format!("/{}/_analyze", n.alias),
            Some(json!({"analyzer": "ko_index", "text": "설악산에서"})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let t: Vec<&str> = t["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["token"].as_str())
        .collect();
    assert_eq!(t, ["설악", "악산", "산에", "에서"]);
    let call = |m: Method, p: String, b: Option<Value>| {
        let node = &node;
        async move { node.call(m, &p, b).await }
    };
    assert_eq!(
        titles(call, &n.alias, title_match("단풍")).await,
        ["설악산에서 단풍이 들었다"]
    );
    drop(sync);
}

/// `scripts/render-analysis --config DIR`.
fn render(dir: &Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/render-analysis");
    let out = Command::new(script)
        .args(["--config", &dir.display().to_string()])
        .output()
        .expect("run render-analysis");
    assert!(
        out.status.success(),
        "render-analysis: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_config(to: &Path) {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    for sub in ["analysis", "indices"] {
        std::fs::create_dir_all(to.join(sub)).expect("mkdir");
        for f in std::fs::read_dir(from.join(sub)).expect("read config") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, to.join(sub).join(f.file_name().expect("name"))).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_dictionary_is_a_new_index_version_built_by_reindex() {
    let n = Names::new("dict");
    produce_cards(&n).await;
    let alias = n.alias.clone();
    // Version 1: the shipped config. 가지산 (a mountain) is split into
    // 가지 ("eggplant") + 산, so a search for 가지 finds it.
    let v1 = std::env::temp_dir().join(e2e_tests::unique("config-v1-"));
    copy_config(&v1);
    let port = e2e_tests::free_port();
    let cfg1 = config_file(&n, port, &es_url(), &v1.join("indices/cards.json"));
    let mut sync = Proc::start("es-sync", &["--config", &cfg1.display().to_string()], &[]);
    let a = analysis_status(port, &alias).await;
    assert_eq!(a["reindex_needed"], false, "{a}");
    let v1_revision = a["live_revision"].as_u64().expect("revision");
    wait_count(&alias, CARDS.len()).await;
    let found = |q: &'static str| titles(bench_call, &alias, title_match(q));
    assert_eq!(found("가지").await, ["가지산 억새 산행"]);

    // Version 2: 가지산 added to the dictionary, rendered into the files.
    let v2 = std::env::temp_dir().join(e2e_tests::unique("config-v2-"));
    copy_config(&v2);
    let dict = v2.join("analysis/user_dictionary.txt");
    let mut text = std::fs::read_to_string(&dict).expect("dictionary");
    text.push_str("가지산\n");
    std::fs::write(&dict, text).expect("write dictionary");
    render(&v2);
    let cfg2 = config_file(&n, port, &es_url(), &v2.join("indices/cards.json"));

    // es-sync with version 2 over the version-1 index: it says so.
    sync.terminate();
    sync = Proc::start("es-sync", &["--config", &cfg2.display().to_string()], &[]);
    let a = analysis_status(port, &alias).await;
    assert_eq!(a["reindex_needed"], true, "{a}");
    assert_eq!(a["live_revision"], v1_revision);
    assert_eq!(a["shipped_revision"], v1_revision + 1);
    assert!(
        sync.log_text().contains("build a new index version"),
        "{}",
        sync.log_text()
    );

    // The reindex builds the new version and swaps the alias.
    let new_index = format!("{alias}-000002");
    let out = Command::new(binary("es-sync"))
        .args([
            "--config",
            &cfg2.display().to_string(),
            "reindex",
            "--topic",
            &n.topic,
            "--into",
            &new_index,
        ])
        .output()
        .expect("es-sync reindex");
    assert!(
        out.status.success(),
        "reindex: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alias_targets(&alias).await, vec![new_index.clone()]);
    assert_eq!(tokens(&alias, "ko_index", "가지산").await, ["가지산"]);
    assert!(found("가지").await.is_empty());
    assert_eq!(found("가지산").await, ["가지산 억새 산행"]);

    sync.terminate();
    let sync = Proc::start("es-sync", &["--config", &cfg2.display().to_string()], &[]);
    let a = analysis_status(port, &alias).await;
    assert_eq!(a["reindex_needed"], false, "{a}");
    assert_eq!(a["index"], new_index);
    assert_eq!(a["live_revision"], v1_revision + 1);
    drop(sync);
    let _ = std::fs::remove_dir_all(&v1);
    let _ = std::fs::remove_dir_all(&v2);
}
