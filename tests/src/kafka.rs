//! Kafka helpers: topic creation and read_committed reading of whole topics.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One record read back.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Value parsed as JSON (`Null` for a tombstone or non-JSON).
    pub value: serde_json::Value,
    /// Raw value bytes.
    pub raw: Option<Vec<u8>>,
    /// Headers as text.
    pub headers: HashMap<String, String>,
}

/// Base client config for the bench.
pub fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", crate::kafka_bootstrap());
    c
}

/// Creates `topic` with `partitions` partitions (ok if it exists).
pub async fn create_topic(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin");
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("create_topics");
    for r in res {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err(e) => panic!("create topic {topic}: {e:?}"),
        }
    }
}

/// Whether the broker has `topic` (from the list of all topics, so that
/// asking cannot create it).
pub async fn topic_exists(topic: &str) -> bool {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = config().create().expect("consumer");
        let md = c
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        md.topics().iter().any(|t| t.name() == topic)
    })
    .await
    .expect("metadata task")
}

/// Whether no transaction is open on any partition of `topics`: the last
/// stable offset (the end a read_committed client is told by ListOffsets,
/// which librdkafka sends with the client's isolation level) has reached
/// the high watermark. A transaction the broker aborted has its marker
/// written and is no longer open.
pub async fn no_open_transaction(topics: &[&str]) -> bool {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let client = |level: &str| -> BaseConsumer {
            config()
                .set("isolation.level", level)
                .create()
                .expect("consumer")
        };
        let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
        let wait = Duration::from_secs(10);
        topics.iter().all(|topic| {
            let md = committed
                .fetch_metadata(Some(topic), wait)
                .expect("metadata");
            md.topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .all(|p| {
                    let stable = committed.fetch_watermarks(topic, p, wait).expect("LSO").1;
                    let high = uncommitted.fetch_watermarks(topic, p, wait).expect("HW").1;
                    stable >= high
                })
        })
    })
    .await
    .expect("watermarks task")
}

/// Reads every committed record of `topic` (read_committed) up to its end.
/// Returns an empty list if the topic does not exist.
pub async fn read_all(topic: &str) -> Vec<Rec> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_all_blocking(&topic))
        .await
        .expect("join")
}

/// Records of `topics` the broker aborted: what a read_uncommitted reader
/// sees there and a read_committed one does not (records of a transaction
/// still open count too, so ask once [`no_open_transaction`] holds).
pub async fn aborted_records(topics: &[&str]) -> usize {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .map(|t| {
                let all = read_blocking(t, "read_uncommitted").len();
                all.saturating_sub(read_blocking(t, "read_committed").len())
            })
            .sum()
    })
    .await
    .expect("read task")
}

fn read_all_blocking(topic: &str) -> Vec<Rec> {
    read_blocking(topic, "read_committed")
}

fn read_blocking(topic: &str, isolation: &str) -> Vec<Rec> {
    let consumer: BaseConsumer = config()
        .set("group.id", crate::unique("reader-"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return vec![];
    }
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut left: HashSet<i32> = parts.into_iter().collect();
    let mut out = vec![];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            Some(Err(e)) => panic!("read {topic}: {e}"),
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m
                        .payload()
                        .and_then(|p| serde_json::from_slice(p).ok())
                        .unwrap_or(serde_json::Value::Null),
                    raw: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }
    assert!(
        left.is_empty(),
        "reading {topic}: partitions {left:?} not read to the end in 60 s"
    );
    out
}
