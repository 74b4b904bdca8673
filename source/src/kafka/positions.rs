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
use shared::wire::position::POSITION_SCHEMA;
pub use shared::wire::position::{Position, SnapshotProgress, TxnProgress};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The record that stores `position`.
pub fn to_record(position: &Position, topic: &str) -> Record {
    Record {
        topic: topic.to_string(),
        partition: None,
        key: Some(position.stream.clone()),
        value: position.to_json(),
        headers: vec![("schema", POSITION_SCHEMA.into())],
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
