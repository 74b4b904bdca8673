//! Whether a topic still holds every document: what `reindex --from topic`
//! needs, since it rebuilds the index from the topic alone.
//!
//! A topic holds every document when, in every partition, nothing was
//! deleted from its start (low watermark 0: no retention cut, no
//! delete-records) and its first record begins the history: a
//! `snapshot_start` marker of `mongo-source` (which writes one into every
//! partition before copying the collection). A native topic whose first
//! record is a change began with `start = now` (or a timestamp): documents
//! that existed before are not in it. For the MongoDB Kafka Connector's
//! records nothing tells (its copy of existing documents looks like
//! inserts), so they count as complete with a warning.
//!
//! Reading: the low and high watermarks and the first committed record of
//! each partition (read_committed), nothing more.

use crate::config::SyncConfig;
use crate::event::{self, Format};
use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use shared::wire::event::Operation;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The first readable record of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// The partition holds nothing.
    Empty,
    /// A `mongo-source` event with this operation.
    Native(Operation),
    /// A MongoDB Kafka Connector record.
    Connector,
    /// Not a change event (undecodable), or not read in time.
    Unknown,
}

/// What one partition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHistory {
    /// Partition.
    pub partition: i32,
    /// Low watermark: the first offset still held.
    pub low: i64,
    /// High watermark.
    pub high: i64,
    /// Its first record.
    pub first: First,
}

/// The verdict on a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every document is in it.
    Complete,
    /// Complete as far as can be told (connector records), with why not
    /// sure.
    Unknowable(String),
    /// Documents are missing from it, with why.
    Incomplete(Vec<String>),
}

/// Judges `parts` of `topic` (pure; see the module documentation).
pub fn judge(topic: &str, parts: &[PartitionHistory]) -> Verdict {
    let mut missing = Vec::new();
    let mut connector = false;
    for p in parts {
        if p.low > 0 {
            missing.push(format!(
                "partition {} of {topic} starts at offset {}: the records before it were \
                 deleted (retention, or delete-records)",
                p.partition, p.low
            ));
            continue;
        }
        match &p.first {
            First::Empty | First::Native(Operation::SnapshotStart) => {}
            First::Native(op) => missing.push(format!(
                "partition {} of {topic} begins with a `{}` event, not a snapshot: the \
                 documents that existed before mongo-source started (start = now or a \
                 timestamp) are not in the topic",
                p.partition,
                op.as_str()
            )),
            First::Connector => connector = true,
            First::Unknown => missing.push(format!(
                "the first record of partition {} of {topic} could not be read as a change event",
                p.partition
            )),
        }
    }
    if !missing.is_empty() {
        Verdict::Incomplete(missing)
    } else if connector {
        Verdict::Unknowable(format!(
            "{topic} holds MongoDB Kafka Connector records: whether it began with a copy of \
             the existing documents cannot be told from them"
        ))
    } else {
        Verdict::Complete
    }
}

fn client(cfg: &SyncConfig, group: Option<&str>) -> anyhow::Result<BaseConsumer> {
    cfg.kafka
        .client_config()
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("group.id", group.unwrap_or("es-sync-reindex-history"))
        .create()
        .context("kafka client")
}

/// Reads what every partition of `topic` holds (blocking).
pub fn read(cfg: &SyncConfig, topic: &str) -> anyhow::Result<Vec<PartitionHistory>> {
    let c = client(cfg, None)?;
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let md = c
        .fetch_metadata(Some(topic), timeout)
        .context("topic metadata")?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} not found or has no partitions"
    );
    let mut out = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = c
            .fetch_watermarks(topic, *p, timeout)
            .context("watermarks")?;
        let first = if high > low {
            First::Unknown
        } else {
            First::Empty
        };
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))?;
        }
        out.insert(
            *p,
            PartitionHistory {
                partition: *p,
                low,
                high,
                first,
            },
        );
    }
    if tpl.count() > 0 {
        c.assign(&tpl).context("assign")?;
        let deadline = Instant::now() + timeout.max(Duration::from_secs(10));
        let mut open = tpl.count();
        while open > 0 && Instant::now() < deadline {
            let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let Some(h) = out.get_mut(&m.partition()) else {
                continue;
            };
            if h.first != First::Unknown {
                continue;
            }
            h.first = match event::decode(m.payload()) {
                Ok(ev) if ev.format == Format::Connector => First::Connector,
                Ok(ev) => First::Native(ev.op),
                Err(_) => First::Unknown,
            };
            open -= 1;
            // One record per partition is enough.
            let mut stop = TopicPartitionList::new();
            stop.add_partition(topic, m.partition());
            let _ = c.pause(&stop);
        }
    }
    Ok(out.into_values().collect())
}

/// The committed offsets of `group` on `topic`, by partition (blocking).
pub fn committed(
    cfg: &SyncConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let c = client(cfg, Some(group))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let got = c
        .committed_offsets(tpl, timeout)
        .context("committed offsets")?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), at)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, low: i64, first: First) -> PartitionHistory {
        PartitionHistory {
            partition,
            low,
            high: low + 10,
            first,
        }
    }

    #[test]
    fn a_topic_that_begins_with_a_snapshot_everywhere_is_complete() {
        let parts = [
            part(0, 0, First::Native(Operation::SnapshotStart)),
            part(1, 0, First::Empty),
        ];
        assert_eq!(judge("t", &parts), Verdict::Complete);
    }

    #[test]
    fn deleted_early_records_make_it_incomplete() {
        let parts = [
            part(0, 0, First::Native(Operation::SnapshotStart)),
            part(1, 1200, First::Native(Operation::Update)),
        ];
        let Verdict::Incomplete(why) = judge("live.mountain.card", &parts) else {
            panic!()
        };
        assert_eq!(why.len(), 1);
        assert!(
            why[0].contains("partition 1 of live.mountain.card starts at offset 1200"),
            "{why:?}"
        );
    }

    #[test]
    fn a_topic_without_a_snapshot_is_incomplete() {
        let parts = [part(0, 0, First::Native(Operation::Insert))];
        let Verdict::Incomplete(why) = judge("t", &parts) else {
            panic!()
        };
        assert!(why[0].contains("not a snapshot"), "{why:?}");
        let parts = [part(0, 0, First::Unknown)];
        assert!(matches!(judge("t", &parts), Verdict::Incomplete(_)));
    }

    #[test]
    fn connector_topics_cannot_tell() {
        let parts = [part(0, 0, First::Connector), part(1, 0, First::Empty)];
        assert!(matches!(judge("t", &parts), Verdict::Unknowable(_)));
    }
}
