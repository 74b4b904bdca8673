//! Pass 1 of `dlq replay`: the whole dead-letter topic, from each
//! partition's first record to its end, read into what each dead letter
//! is (error type, where it came from, copy or pointer) and which dead
//! letters were re-driven already (their marks). Only this metadata is
//! kept, not the records.

use super::read::{read_ranges, watermarks, Reader};
use super::DlqReplayError;

use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use shared::wire::dlq::{headers, Redriven};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// One dead letter of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Its partition in the dead-letter topic.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// `dlq.error.type`.
    pub error_type: String,
    /// `dlq.source.topic`: where it is re-driven to.
    pub topic: String,
    /// `dlq.source.partition`.
    pub source_partition: i32,
    /// `dlq.source.offset`.
    pub source_offset: i64,
    /// `dlq.source.timestamp` (ms), when known.
    pub source_timestamp: Option<i64>,
    /// `dlq.failed_at` (ms), when known.
    pub failed_at: Option<i64>,
    /// A pointer (`dlq.pointer`): the record is read back from its topic.
    pub pointer: bool,
}

/// What the dead-letter topic holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Its dead letters, in partition and offset order.
    pub letters: Vec<Letter>,
    /// `(partition, offset)` of the dead letters already re-driven.
    pub marks: HashSet<(i32, i64)>,
    /// Records that are neither (no `dlq.*` headers): not es-sync's.
    pub foreign: u64,
    /// Records read.
    pub read: u64,
}

/// Reads the whole of `topic`; `on_record` is called once per record (a
/// progress bar).
pub fn scan(
    c: &Reader,
    topic: &str,
    timeout: Duration,
    mut on_record: impl FnMut(),
) -> Result<(Scan, u64), DlqReplayError> {
    let marks = watermarks(c, topic, timeout)?;
    let total: u64 = marks
        .iter()
        .map(|(_, low, high)| u64::try_from(high - low).unwrap_or(0))
        .sum();
    let ranges: HashMap<i32, (i64, i64)> = marks
        .iter()
        .map(|(p, low, high)| (*p, (*low, *high)))
        .collect();
    let mut out = Scan::default();
    read_ranges(c, topic, &ranges, timeout * 3, |m| {
        out.read += 1;
        on_record();
        match classify(m) {
            Kind::Mark(r) => {
                out.marks.insert((r.partition, r.offset));
            }
            Kind::Letter(l) => out.letters.push(l),
            Kind::Foreign => out.foreign += 1,
        }
        Ok(())
    })?;
    out.letters.sort_by_key(|l| (l.partition, l.offset));
    Ok((out, total))
}

enum Kind {
    Mark(Redriven),
    Letter(Letter),
    Foreign,
}

/// The value of header `name` of `m` as text.
pub fn header(m: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn classify(m: &BorrowedMessage<'_>) -> Kind {
    if header(m, headers::REDRIVEN).is_some() {
        return m
            .payload()
            .and_then(|v| Redriven::from_json(v).ok())
            .map_or(Kind::Foreign, Kind::Mark);
    }
    let num = |name: &str| header(m, name).and_then(|v| v.parse::<i64>().ok());
    let (Some(error_type), Some(topic), Some(sp), Some(so)) = (
        header(m, headers::ERROR_TYPE),
        header(m, headers::TOPIC),
        num(headers::PARTITION).and_then(|p| i32::try_from(p).ok()),
        num(headers::OFFSET),
    ) else {
        return Kind::Foreign;
    };
    Kind::Letter(Letter {
        partition: m.partition(),
        offset: m.offset(),
        error_type,
        topic,
        source_partition: sp,
        source_offset: so,
        source_timestamp: num(headers::TIMESTAMP),
        failed_at: num(headers::FAILED_AT),
        pointer: header(m, headers::POINTER).is_some(),
    })
}
