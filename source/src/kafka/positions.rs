//! Resume positions, stored in a compacted Kafka topic with one key per
//! stream and written in the same transaction as the events they cover.
//!
//! Reading happens once at stream start, with `isolation.level =
//! read_committed`, so the position found is the one of the last committed
//! batch: the events of an aborted or unfinished batch are invisible, and so
//! is its position, and the stream re-reads them from MongoDB.

use super::record::Record;
use crate::config::KafkaConfig;
use crate::error::{Result, StreamError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::event::ClusterTime;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The stored position of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Stream name (`db.collection`), also the record key.
    pub stream: String,
    /// Resume token (canonical Extended JSON of the opaque token), if the
    /// change stream produced one yet.
    #[serde(default)]
    pub token: Option<Value>,
    /// Cluster time of the last event covered (lag and status).
    #[serde(default)]
    pub cluster_time: Option<ClusterTime>,
    /// Where to start the change stream when there is no token yet: right
    /// after a snapshot, its start time.
    #[serde(default)]
    pub start_at: Option<ClusterTime>,
    /// The token is an invalidate event's: reopen with `startAfter`.
    #[serde(default)]
    pub after_invalidate: bool,
    /// Snapshot in progress, if any.
    #[serde(default)]
    pub snapshot: Option<SnapshotProgress>,
    /// Events written by this stream so far.
    #[serde(default)]
    pub events: u64,
    /// When this position was committed (ISO-8601).
    pub committed_at: String,
}

/// Progress of a snapshot copy, so a crash resumes the copy where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Snapshot run id.
    pub id: String,
    /// Snapshot version (from the cluster time read before the copy).
    pub version: u64,
    /// The `_id` of the last document copied (Extended JSON); the copy
    /// goes on after it in `_id` order.
    #[serde(default)]
    pub last_id: Option<Value>,
    /// Documents copied so far.
    #[serde(default)]
    pub copied: u64,
    /// Whether the start marker was written.
    #[serde(default)]
    pub started: bool,
}

impl Position {
    /// The record that stores this position.
    pub fn to_record(&self, topic: &str) -> Record {
        Record {
            topic: topic.to_string(),
            partition: None,
            key: Some(self.stream.clone()),
            value: serde_json::to_vec(self).unwrap_or_default(),
            headers: vec![("schema", "mongo-source.position.v1".to_string())],
        }
    }
}

/// Reads the latest committed position of `stream` (None if it has none).
pub async fn load(cfg: &KafkaConfig, topic: &str, stream: &str) -> Result<Option<Position>> {
    let mut c = super::client_config(cfg);
    c.set(
        "group.id",
        format!("mongo-source-positions-{}", uuid_like()),
    )
    .set("enable.auto.commit", "false")
    .set("isolation.level", "read_committed")
    .set("enable.partition.eof", "true")
    .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().map_err(StreamError::Kafka)?;
    let topic = topic.to_string();
    let stream = stream.to_string();
    let timeout = Duration::from_millis(cfg.operation_timeout_ms);
    tokio::task::spawn_blocking(move || read_latest(&consumer, &topic, &stream, timeout))
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))?
}

fn read_latest(
    consumer: &BaseConsumer,
    topic: &str,
    stream: &str,
    timeout: Duration,
) -> Result<Option<Position>> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(StreamError::Kafka)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(None);
    }
    // The end of each partition as of now. Reading is complete for a
    // partition at its end-of-partition event, or once the position has
    // passed this high watermark: every transaction that started before
    // it has then been decided. (The EOF event alone is not enough: on a
    // partition that is empty when assigned, librdkafka can report it as a
    // global error instead.) A position one short of it after a quiet
    // second is also complete: only a transaction marker can remain there.
    let mut high = std::collections::HashMap::new();
    for p in &partitions {
        let (low, hw) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(StreamError::Kafka)?;
        high.insert(*p, (low, hw));
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(StreamError::Kafka)?;
    }
    consumer.assign(&tpl).map_err(StreamError::Kafka)?;
    let mut remaining: HashSet<i32> = partitions
        .into_iter()
        .filter(|p| high.get(p).is_some_and(|(l, h)| h > l))
        .collect();
    let mut latest: Option<Position> = None;
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(StreamError::Internal(format!(
                "reading positions from {topic} timed out; partitions {remaining:?} not read to the end"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => return Err(StreamError::Kafka(e)),
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                if m.key() == Some(stream.as_bytes()) {
                    match m.payload() {
                        // A tombstone resets the stream.
                        None => latest = None,
                        Some(bytes) => {
                            latest = Some(serde_json::from_slice(bytes).map_err(|e| {
                                StreamError::BadPosition {
                                    stream: stream.to_string(),
                                    message: format!("offset {} of {topic}: {e}", m.offset()),
                                }
                            })?)
                        }
                    }
                }
            }
        }
        if let Ok(pos) = consumer.position() {
            for e in pos.elements_for_topic(topic) {
                let (Offset::Offset(at), Some((_, hw))) = (e.offset(), high.get(&e.partition()))
                else {
                    continue;
                };
                let quiet = quiet_since.elapsed() >= Duration::from_secs(1);
                if at >= *hw || (quiet && at + 1 >= *hw) {
                    remaining.remove(&e.partition());
                }
            }
        }
    }
    Ok(latest)
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips() {
        let p = Position {
            stream: "mountain.card".into(),
            token: Some(serde_json::json!({"_data": "8265..."})),
            cluster_time: Some(ClusterTime { t: 5, i: 1 }),
            start_at: None,
            after_invalidate: false,
            snapshot: None,
            events: 10,
            committed_at: "2026-12-01T00:00:00Z".into(),
        };
        let r = p.to_record("live.mongo-source.offsets");
        assert_eq!(r.key.as_deref(), Some("mountain.card"));
        let back: Position = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(back, p);
    }
}
