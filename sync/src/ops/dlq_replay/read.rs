//! Reading ranges of partitions to their end with a plain (assign-only,
//! never committing) `read_committed` consumer: records of aborted
//! transactions are never seen, and a partition is finished at its end
//! (partition EOF) or at the end of its range, whichever comes first.

use super::DlqReplayError;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The context of the readers: the end of a partition reached after its
/// range was read (and the partition unassigned) is no error worth a log
/// line; everything else is logged as librdkafka's default does.
pub struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Quiet {}

/// A reader.
pub type Reader = BaseConsumer<Quiet>;

/// A consumer for reading (configured like es-sync's, never committing).
pub fn consumer(base: &ClientConfig, name: &str) -> Result<Reader, DlqReplayError> {
    let mut cc = base.clone();
    cc.set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error");
    Ok(cc.create_with_context(Quiet)?)
}

/// Reads `topic` partitions `ranges` (`partition -> [from, to)`), calling
/// `each` for every record in range. Fails when nothing arrives for
/// `idle` while a partition is not finished.
pub fn read_ranges(
    c: &Reader,
    topic: &str,
    ranges: &HashMap<i32, (i64, i64)>,
    idle: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), DlqReplayError>,
) -> Result<(), DlqReplayError> {
    let mut open: HashMap<i32, i64> = ranges
        .iter()
        .filter(|(_, (from, to))| from < to)
        .map(|(p, (_, to))| (*p, *to))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, (from, _)) in ranges.iter().filter(|(p, _)| open.contains_key(p)) {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))?;
    }
    c.assign(&tpl)?;
    let mut last = Instant::now();
    while !open.is_empty() {
        match c.poll(Duration::from_millis(200)) {
            None => {
                if last.elapsed() > idle {
                    let mut left: Vec<_> = open.keys().copied().collect();
                    left.sort_unstable();
                    return Err(DlqReplayError::Read(format!(
                        "nothing read from {topic} partitions {left:?} for {} s",
                        idle.as_secs()
                    )));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last = Instant::now();
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                last = Instant::now();
                let p = m.partition();
                let Some(to) = open.get(&p).copied() else {
                    continue;
                };
                if m.offset() >= to {
                    open.remove(&p);
                    continue;
                }
                each(&m)?;
                if m.offset() + 1 >= to {
                    open.remove(&p);
                }
            }
        }
    }
    c.unassign()?;
    Ok(())
}

/// Partitions of `topic` with their low and high watermarks.
pub fn watermarks(
    c: &Reader,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, DlqReplayError> {
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| DlqReplayError::NoTopic(topic.to_string()))?;
    let mut out = Vec::new();
    for p in t.partitions() {
        let (low, high) = c.fetch_watermarks(topic, p.id(), timeout)?;
        out.push((p.id(), low, high));
    }
    out.sort_unstable();
    Ok(out)
}
