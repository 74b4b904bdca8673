//! The whole pipeline on unique names: a [`SourceFixture`] plus an es-sync
//! config consuming its topics into unique aliases, and a comparison of
//! MongoDB with Elasticsearch document by document.

use crate::source::SourceFixture;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};
use shared::shutdown::CancellationToken;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Both binaries' configuration on unique names.
pub struct Pipeline {
    /// The source side (database, topic prefix, admin port).
    pub source: SourceFixture,
    /// Consumer group of es-sync.
    pub group: String,
    /// Admin port of es-sync.
    pub sync_admin_port: u16,
    /// Alias of the cards.
    pub cards: String,
    /// Alias of the replies.
    pub replies: String,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline for `card` and `reply`.
    pub fn new() -> Self {
        let source = SourceFixture::new(&["card", "reply"]);
        let tag = source.prefix.clone();
        Self {
            group: format!("es-sync-{tag}"),
            sync_admin_port: crate::free_port(),
            cards: format!("cards-{tag}"),
            replies: format!("replies-{tag}"),
            source,
        }
    }

    /// es-sync's config text.
    pub fn sync_toml(&self) -> String {
        let indices = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/indices");
        format!(
            r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
auto_offset_reset = "earliest"
session_timeout_ms = 10000

[elasticsearch]
url = "{es}"

[dlq]
prefix = "{prefix}"

[bulk]
linger_ms = 20

[consumer]
commit_interval_ms = 200

[retry]
initial_ms = 50
max_ms = 1000

[admin]
listen = "127.0.0.1:{port}"

[[topics]]
topic = "{card_topic}"
alias = "{cards}"
index_file = "{indices}/cards.json"

[[topics]]
topic = "{reply_topic}"
alias = "{replies}"
index_file = "{indices}/replies.json"

[rollup]
parent_topic = "{card_topic}"
child_topic = "{reply_topic}"
"#,
            kafka = crate::kafka_bootstrap(),
            group = self.group,
            es = crate::elasticsearch_url(),
            prefix = self.source.prefix,
            port = self.sync_admin_port,
            card_topic = self.source.topic("card"),
            reply_topic = self.source.topic("reply"),
            cards = self.cards,
            replies = self.replies,
            indices = indices.display(),
        )
    }

    /// Writes es-sync's config to a temp file.
    pub fn write_sync(&self) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}.toml", crate::unique("es-sync-")));
        std::fs::write(&path, self.sync_toml()).expect("write config");
        path
    }

    /// Runs es-sync in this process.
    pub fn spawn_sync(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let cfg = es_sync::config::SyncConfig::load(&self.write_sync()).expect("es-sync config");
        let token = CancellationToken::new();
        (token.clone(), tokio::spawn(es_sync::run(cfg, token)))
    }

    /// The sync's dead-letter topic.
    pub fn sync_dlq(&self) -> String {
        format!("{}.dlq.sync", self.source.prefix)
    }

    /// Waits (60 s at most) until this pipeline's es-sync, if it runs, has
    /// nothing received and not done and no lag on any partition, three
    /// looks in a row 200 ms apart. A change can be searchable before its
    /// work is done: a new card's roll-up is written after the card (its
    /// offset is done only then), so a judge that ran as soon as the card
    /// showed could find it without its roll-up (CI did once, under load).
    pub async fn wait_sync_idle(&self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut quiet = 0;
        while quiet < 3 && std::time::Instant::now() < until {
            let Some(text) = crate::http_get(self.sync_admin_port, "/metrics").await else {
                return;
            };
            quiet = if crate::es_sync_drained(&text) {
                quiet + 1
            } else {
                0
            };
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The judge: `es-sync verify` (in this process) of both collections,
    /// once es-sync has done everything it received
    /// ([`Pipeline::wait_sync_idle`]); panics with the reports unless both
    /// are equal.
    pub async fn assert_verified(&self) -> Vec<es_sync::ops::verify::Report> {
        self.wait_sync_idle().await;
        let cfg = es_sync::config::SyncConfig::load(&self.write_sync()).expect("es-sync config");
        let mut reports = Vec::new();
        for coll in ["card", "reply"] {
            let req = es_sync::ops::verify::Request {
                topic: self.source.topic(coll),
                mongodb_uri: crate::mongodb_uri(),
                collection: None,
                repair: false,
                batch: 500,
                sample: 5,
                progress: false,
            };
            let report = es_sync::ops::verify::verify(&cfg, req)
                .await
                .unwrap_or_else(|e| panic!("verify {coll}: {e:#}"));
            reports.push(report);
        }
        assert!(
            reports.iter().all(|r| r.equal),
            "the verifier finds differences: {reports:#?}"
        );
        reports
    }
}

/// The Elasticsearch id of a MongoDB `_id` (es-sync's own rule).
pub fn es_id(id: &Bson) -> String {
    es_sync::action::render_id(&shared::ejson::bson_to_json(id))
}

/// Every document of `alias`, by id (refreshes first).
pub async fn es_documents(alias: &str) -> BTreeMap<String, Value> {
    let url = crate::elasticsearch_url();
    let client = crate::http_json_client();
    let _ = client.post(&format!("{url}/{alias}/_refresh"), None).await;
    let body = json!({"size": 10000, "query": {"match_all": {}}});
    let Some(v) = client
        .post(&format!("{url}/{alias}/_search"), Some(body))
        .await
    else {
        return BTreeMap::new();
    };
    v["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|h| Some((h["_id"].as_str()?.to_string(), h["_source"].clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares a MongoDB collection with an alias: returns the differences
/// (missing, extra, different content) as text lines; empty when equal.
pub async fn compare(coll: &mongodb::Collection<Document>, alias: &str) -> Vec<String> {
    let docs: Vec<Document> = match coll.find(doc! {}).await {
        Ok(c) => c.try_collect().await.unwrap_or_default(),
        Err(_) => vec![],
    };
    let mut es = es_documents(alias).await;
    let mut diffs = vec![];
    for d in docs {
        let Some(id) = d.get("_id") else { continue };
        let id = es_id(id);
        let Some(source) = es.remove(&id) else {
            diffs.push(format!("missing {id}"));
            continue;
        };
        let plain = shared::ejson::to_search_json(&shared::ejson::document_to_json(&d));
        // A document cut to fit the Kafka limit by mongo-source (marked
        // `_truncated`) is equal when each cut field is a prefix of
        // MongoDB's text, as `es-sync verify` judges it.
        let expected = plain
            .as_object()
            .map(|m| es_sync::ops::verify::accept_truncation(m, &source))
            .unwrap_or_default();
        for (k, v) in &expected {
            if k == "_id" {
                continue;
            }
            if source.get(k) != Some(v) {
                diffs.push(format!(
                    "stale {id}: {k} = {} in es, {} in mongo",
                    short(source.get(k).unwrap_or(&serde_json::Value::Null)),
                    short(v)
                ));
                break;
            }
        }
    }
    diffs.extend(es.keys().map(|id| format!("extra {id}")));
    diffs
}

/// A value for a difference line: at most 120 characters of its JSON.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((cut, _)) => format!("{}... ({} bytes)", &s[..cut], s.len()),
        None => s,
    }
}

/// A steady mixed write load on `card` and `reply` (inserts, updates,
/// deletes, replies; seeded) until `stop` is set; returns the writes
/// attempted (a failed write is not retried: the load goes on).
pub fn spawn_load(
    db: &mongodb::Database,
    seed: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    tokio::spawn(async move {
        let mut w = crate::workload::Workload::new(seed);
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let res = match n % 10 {
                0..=3 => cards.insert_one(w.card()).await.map(|_| ()),
                4..=6 => match w.card_update() {
                    Some((f, u)) => cards.update_one(f, u).await.map(|_| ()),
                    None => Ok(()),
                },
                7 | 8 => match w.reply() {
                    Some(r) => replies.insert_one(r).await.map(|_| ()),
                    None => Ok(()),
                },
                _ => match w.card_to_delete() {
                    Some(id) => cards.delete_one(doc! { "_id": id }).await.map(|_| ()),
                    None => Ok(()),
                },
            };
            match res {
                Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                // A server restart under chaos: the write may or may not have
                // happened; the comparison at the end decides, not the count.
                Err(e) => {
                    eprintln!("load: write failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
            }
        }
        n
    })
}

/// Waits until both aliases equal their collections; panics after `timeout`.
pub async fn wait_equal(p: &Pipeline, db: &mongodb::Database, timeout: std::time::Duration) {
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    crate::eventually("Elasticsearch equal to MongoDB", timeout, || async {
        let d = [
            compare(&cards, &p.cards).await,
            compare(&replies, &p.replies).await,
        ]
        .concat();
        if d.is_empty() {
            Some(())
        } else {
            eprintln!("{} differences, e.g. {:?}", d.len(), &d[..d.len().min(3)]);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            None
        }
    })
    .await;
}
