//! Helpers for the es-sync tests against the real Kafka and Elasticsearch
//! of `scripts/stack`: random names, topic creation, producing native and
//! connector events, running es-sync in-process, reading Elasticsearch and
//! the dead-letter topic.

use elasticsearch::http::Method;
use es_sync::config::{
    BulkConfig, ConsumerConfig, DlqConfig, ElasticsearchConfig, KafkaConfig, ProjectionConfig,
    SyncConfig, TopicConfig,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use shared::admin::AdminConfig;
use shared::kafka_client::KafkaClientSettings;
use shared::retry::RetryConfig;
use shared::wire::event::SCHEMA;
use shared::wire::version::Version;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Kafka bootstrap servers (`KAFKA_BOOTSTRAP_SERVERS`, default 127.0.0.1:9092).
pub fn kafka() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Elasticsearch URL (`ELASTICSEARCH_URL`, default http://127.0.0.1:9200).
pub fn es_url() -> String {
    std::env::var("ELASTICSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// A short random name part (lower case, valid for topics and indices).
pub fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Names of one test: topic, alias, DLQ topic, group.
#[derive(Debug, Clone)]
pub struct Names {
    /// Event topic.
    pub topic: String,
    /// Target alias.
    pub alias: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// Consumer group.
    pub group: String,
}

impl Names {
    /// Fresh random names with `tag` in them.
    pub fn new(tag: &str) -> Self {
        crate::logs::init();
        let u = uid();
        Self {
            topic: format!("test.{tag}.{u}"),
            alias: format!("t-{tag}-{u}"),
            dlq: format!("test.{tag}.{u}.dlq"),
            group: format!("es-sync-test-{tag}-{u}"),
        }
    }
}

/// The shipped index file of cards.
pub fn cards_index_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/indices/cards.json")
}

/// A config for one test topic into one alias, fast timings.
pub fn config(n: &Names) -> SyncConfig {
    SyncConfig {
        kafka: KafkaConfig {
            client: KafkaClientSettings {
                bootstrap_servers: kafka(),
                ..Default::default()
            },
            group_id: n.group.clone(),
            auto_offset_reset: "earliest".into(),
            session_timeout_ms: 10_000,
            operation_timeout_ms: 5_000,
            unknown: Default::default(),
        },
        elasticsearch: ElasticsearchConfig {
            url: es_url(),
            username: None,
            password: None,
            password_file: None,
            api_key: None,
            api_key_file: None,
            ca_file: None,
            request_timeout_ms: 30_000,
        },
        topics: vec![TopicConfig {
            topic: n.topic.clone(),
            alias: n.alias.clone(),
            index_file: cards_index_file(),
            id_field: "_id".into(),
            projection: ProjectionConfig::default(),
        }],
        dlq: DlqConfig {
            prefix: "test".into(),
            topic: Some(n.dlq.clone()),
        },
        bulk: BulkConfig {
            max_actions: 200,
            max_bytes: 1 << 20,
            linger_ms: 20,
            max_in_flight: 4,
        },
        consumer: ConsumerConfig {
            max_buffered_records: 2_000,
            max_buffered_bytes: 16 << 20,
            commit_interval_ms: 200,
            shutdown_timeout_ms: 10_000,
            max_future_seconds: 3600,
        },
        retry: RetryConfig {
            initial_ms: 50,
            max_ms: 1_000,
            ..RetryConfig::default()
        },
        log: Default::default(),
        admin: AdminConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: None,
            token_file: None,
        },
        rollup: None,
        freshness: Default::default(),
    }
}

/// Creates `topic` with `partitions` partitions (ok if it exists).
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_with(&kafka(), topic, partitions, &[]).await;
}

/// Creates `topic` on the brokers `bootstrap` with `partitions`
/// partitions and topic `configs` (ok if it exists).
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("create topics");
    for r in res {
        if let Err((name, code)) = r {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "create topic {name}: {code:?}"
            );
        }
    }
}

/// A producer.
pub fn producer() -> FutureProducer {
    producer_at(&kafka())
}

/// A producer to the brokers `bootstrap`, accepting records up to 2 MB
/// (the brokers' limits decide).
pub fn producer_at(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "2000000")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces one record (key routes it to a partition, or `partition` forces one).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    partition: Option<i32>,
) {
    let mut r = FutureRecord::to(topic).key(key).payload(value);
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r, Duration::from_secs(10)).await.expect("produce");
}

/// A version for a cluster time second `t` and increment `i`.
pub fn version(t: u32, i: u32) -> u64 {
    Version::of_cluster_time(t, i).as_u64()
}

/// A 24-hex-digit ObjectId made from `n`.
pub fn oid(n: u64) -> String {
    format!("65a1b2c3{n:016x}")
}

/// A card document in Extended JSON.
pub fn card(id: &str, title: &str, likes: i64) -> Value {
    json!({
        "_id": {"$oid": id},
        "title": title,
        "body": format!("{title} 본문"),
        "author": {"id": "u1", "name": "김철수"},
        "tags": ["등산", "제주"],
        "created_at": {"$date": "2024-01-02T03:04:05.678Z"},
        "updated_at": {"$date": "2024-01-03T03:04:05.678Z"},
        "likes": likes,
        "mountain": "한라산"
    })
}

/// A native `mongo-source` event as JSON bytes. `doc` may be `None`.
pub fn native(op: &str, id: &str, t: u32, i: u32, doc: Option<Value>) -> Vec<u8> {
    let mut ev = json!({
        "schema": SCHEMA, "op": op,
        "ns": {"db": "mountain", "coll": "card"},
        "key": {"_id": {"$oid": id}},
        "cluster_time": {"t": t, "i": i},
        "version": version(t, i),
    });
    if let Some(d) = doc {
        ev["doc"] = d;
    }
    ev.to_string().into_bytes()
}

/// A native `snapshot_start` marker with snapshot version `(t, i)`.
pub fn snapshot_start(t: u32, i: u32) -> Vec<u8> {
    json!({
        "schema": SCHEMA, "op": "snapshot_start",
        "ns": {"db": "mountain", "coll": "card"}, "key": null,
        "cluster_time": {"t": t, "i": i}, "version": version(t, i),
        "snapshot": {"id": uid(), "version": version(t, i)}
    })
    .to_string()
    .into_bytes()
}

/// A native `snapshot_end` marker with snapshot version `(t, i)`.
pub fn snapshot_end(t: u32, i: u32) -> Vec<u8> {
    json!({
        "schema": SCHEMA, "op": "snapshot_end",
        "ns": {"db": "mountain", "coll": "card"}, "key": null,
        "cluster_time": {"t": t, "i": i}, "version": version(t, i),
        "snapshot": {"id": uid(), "version": version(t, i)}
    })
    .to_string()
    .into_bytes()
}

/// A MongoDB Kafka connector change stream document (Extended JSON text).
pub fn connector_doc(op: &str, id: &str, t: u32, i: u32, doc: Option<Value>) -> String {
    let mut cs = json!({
        "_id": {"_data": format!("82{t:08X}{i:08X}")},
        "operationType": op,
        "clusterTime": {"$timestamp": {"t": t, "i": i}},
        "wallTime": {"$date": "2024-01-02T03:04:05.678Z"},
        "ns": {"db": "mountain", "coll": "card"},
        "documentKey": {"_id": {"$oid": id}},
    });
    if let Some(d) = doc {
        cs["fullDocument"] = d;
    }
    cs.to_string()
}

/// An Elasticsearch client.
pub fn es() -> elasticsearch::Elasticsearch {
    let url = url_parse(&es_url());
    let t = elasticsearch::http::transport::TransportBuilder::new(
        elasticsearch::http::transport::SingleNodeConnectionPool::new(url),
    )
    .enable_meta_header(false)
    .build()
    .expect("transport");
    elasticsearch::Elasticsearch::new(t)
}

fn url_parse(s: &str) -> elasticsearch::http::Url {
    elasticsearch::http::Url::parse(s).expect("url")
}

/// One request to the test bench's Elasticsearch: status and JSON body.
pub async fn es_call(method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    crate::private_stack::es_call(&es(), method, path, body).await
}

/// `(version, _source)` of a document, `None` if absent.
pub async fn get_doc(index: &str, id: &str) -> Option<(u64, Value)> {
    let mut tries = 0;
    let (status, body) = loop {
        let (status, body) = es_call(Method::Get, &format!("/{index}/_doc/{id}"), None).await;
        // A shard still recovering right after index creation answers 503.
        if status == 503 && tries < 150 {
            tries += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break (status, body);
    };
    if status == 404 || body["found"] == json!(false) {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    Some((
        body["_version"].as_u64().expect("version"),
        body["_source"].clone(),
    ))
}

/// The concrete indices `alias` points at (panics if the alias is missing).
pub async fn alias_targets(alias: &str) -> Vec<String> {
    let (s, body) = es_call(Method::Get, &format!("/_alias/{alias}"), None).await;
    assert_eq!(s, 200, "alias {alias}: {body}");
    body.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every document of `index` as id -> (version, source), after a refresh.
pub async fn all_docs(index: &str) -> BTreeMap<String, (u64, Value)> {
    // A just-created index answers 503 until its shard has started (seen on
    // a loaded machine), and a node short of heap answers 429 (its memory
    // breaker, until a collection): both are "not yet", not a failure.
    let started = Instant::now();
    let (status, body) = loop {
        es_call(Method::Post, &format!("/{index}/_refresh"), None).await;
        let (status, body) = es_call(
            Method::Post,
            &format!("/{index}/_search"),
            Some(json!({"size": 10000, "version": true, "query": {"match_all": {}}})),
        )
        .await;
        if !matches!(status, 503 | 429) || started.elapsed() > Duration::from_secs(30) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if status == 404 {
        return BTreeMap::new();
    }
    assert_eq!(status, 200, "{body}");
    body["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            (
                h["_id"].as_str().expect("id").to_string(),
                (
                    h["_version"].as_u64().expect("version"),
                    h["_source"].clone(),
                ),
            )
        })
        .collect()
}

/// Everything `topic` holds after `wait` of reading.
pub async fn read_topic_for(topic: &str, wait: Duration) -> Vec<ReadRecord> {
    read_topic_at(&kafka(), topic, wait).await
}

/// Everything `topic` of the brokers `bootstrap` holds after `wait` of
/// reading.
pub async fn read_topic_at(bootstrap: &str, topic: &str, wait: Duration) -> Vec<ReadRecord> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uid()))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Ok(m)) = tokio::time::timeout_at(end, c.recv()).await {
        out.push(ReadRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// Polls `check` until it returns `Some`, or panics after `timeout`
/// ([`crate::eventually`], whose failure quotes the logs' last warnings).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::eventually(what, timeout, check).await
}

/// es-sync running in-process.
pub struct Running {
    /// Fires shutdown.
    pub shutdown: CancellationToken,
    /// The task running `es_sync::run`.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts `es_sync::run(cfg)` in a task.
pub fn start(cfg: SyncConfig) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(es_sync::run(cfg, shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    /// Shuts down and waits; panics if `run` failed or took over 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let out = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("es-sync stops within 30 s")
            .expect("es-sync task");
        out.expect("es-sync run ends Ok");
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub payload: Option<Vec<u8>>,
    /// Headers as strings.
    pub headers: BTreeMap<String, String>,
}

/// Reads `n` records from `topic` from the beginning (new random group).
pub async fn read_topic(topic: &str, n: usize, timeout: Duration) -> Vec<ReadRecord> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", format!("reader-{}", uid()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        let left = timeout.checked_sub(start.elapsed()).unwrap_or_default();
        assert!(
            !left.is_zero(),
            "read {} of {n} records from {topic}",
            out.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(left, c.recv()).await {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or(b"")).to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    out
}

/// Records of `topic` not yet committed by `group` (summed over
/// partitions); `None` while the group has no committed offset everywhere.
pub fn group_lag(group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let t = Duration::from_secs(5);
    let md = c.fetch_metadata(Some(topic), t).ok()?;
    let parts: Vec<i32> = md
        .topics()
        .first()?
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, t).ok()?;
    let mut lag = 0;
    for p in parts {
        let (_, high) = c.fetch_watermarks(topic, p, t).ok()?;
        match committed.find_partition(topic, p)?.offset() {
            Offset::Offset(o) => lag += high - o,
            _ if high == 0 => {}
            _ => return None,
        }
    }
    Some(lag)
}

/// Waits until `group` committed everything `topic` holds.
pub async fn wait_caught_up(group: &str, topic: &str, timeout: Duration) {
    let (g, t) = (group.to_string(), topic.to_string());
    eventually(
        timeout,
        &format!("group {group} caught up on {topic}"),
        || {
            let (g, t) = (g.clone(), t.clone());
            async move {
                tokio::task::spawn_blocking(move || group_lag(&g, &t))
                    .await
                    .ok()
                    .flatten()
                    .filter(|l| *l == 0)
            }
        },
    )
    .await;
}

/// Writes a TOML config file for the binary equivalent to [`config`]
/// (admin on `admin_port`); returns its path.
pub fn write_config_file(n: &Names, admin_port: u16) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
session_timeout_ms = 10000
[elasticsearch]
url = "{es}"
[dlq]
topic = "{dlq}"
[bulk]
max_actions = 200
max_bytes = 1048576
linger_ms = 20
[consumer]
max_buffered_records = 2000
commit_interval_ms = 200
shutdown_timeout_ms = 10000
[retry]
initial_ms = 50
max_ms = 1000
[admin]
listen = "127.0.0.1:{admin_port}"
[[topics]]
topic = "{topic}"
alias = "{alias}"
index_file = "{file}"
"#,
        kafka = kafka(),
        group = n.group,
        es = es_url(),
        dlq = n.dlq,
        topic = n.topic,
        alias = n.alias,
        file = cards_index_file().display(),
    );
    let path = std::env::temp_dir().join(format!("es-sync-{}.toml", uid()));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Committed offset of `group` on `topic`/`partition` (`None`: none).
pub fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    committed_at(&kafka(), group, topic, partition)
}

/// Committed offset of `group` on `topic`/`partition` of the brokers
/// `bootstrap` (`None`: none).
pub fn committed_at(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let out = c
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    match out.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
