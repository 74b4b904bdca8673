//! The record written to the dead-letter topic for one dead letter: the
//! original copied whole with the reason in added headers, or, when that
//! copy would be over the topic's limit, a pointer to the original. Pure:
//! no I/O.

use super::{headers, DlqReason};
use crate::record::RawRecord;
use shared::wire::dlq::{DlqPointer, POINTER_SCHEMA};
use shared::wire::record_size::batch_size;

/// How a dead letter was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The original key, value and headers, plus the reason.
    Copy,
    /// A pointer to the original (the copy was over the limit).
    Pointer,
}

impl Form {
    /// Label of `es_sync_dlq_records_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Pointer => "pointer",
        }
    }
}

/// The longest reason a pointer carries (its value and its header): a
/// pointer must stay small whatever Elasticsearch answered.
const POINTER_REASON_MAX: usize = 4096;

/// A record to produce to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Copy or pointer.
    pub form: Form,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Outgoing {
    /// The whole original with the reason headers added.
    pub fn copy(record: &RawRecord, why: &DlqReason, now_ms: i64) -> Self {
        let mut h = record.headers.to_vec();
        h.extend(added_headers(record, why, &why.reason, now_ms));
        Self {
            form: Form::Copy,
            key: record.key.clone(),
            value: record.payload.clone(),
            headers: h,
        }
    }

    /// A pointer to `record`, whose copy takes `size` bytes, over `limit`
    /// (read from `limit_source`).
    pub fn pointer(
        record: &RawRecord,
        why: &DlqReason,
        now_ms: i64,
        size: usize,
        limit: usize,
        limit_source: &str,
    ) -> Self {
        let reason = cut(&why.reason, POINTER_REASON_MAX);
        let mut p = DlqPointer {
            schema: POINTER_SCHEMA.into(),
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            key: None,
            key_hex: None,
            timestamp: record.timestamp,
            size: size as u64,
            limit: limit as u64,
            limit_source: limit_source.to_string(),
            error_type: why.error_type.clone(),
            reason: reason.to_string(),
            index: why.index.clone(),
        };
        p.set_key(record.key.as_deref());
        let mut h: Vec<(String, Option<Vec<u8>>)> =
            added_headers(record, why, reason, now_ms).collect();
        h.push((
            headers::POINTER.into(),
            Some(POINTER_SCHEMA.as_bytes().to_vec()),
        ));
        Self {
            form: Form::Pointer,
            key: record.key.clone(),
            value: serde_json::to_vec(&p).ok(),
            headers: h,
        }
    }

    /// Its size as the broker counts it against `max.message.bytes`.
    pub fn wire_size(&self) -> usize {
        let hs: Vec<(usize, Option<usize>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.len(), v.as_ref().map(Vec::len)))
            .collect();
        batch_size(
            self.key.as_ref().map(Vec::len),
            self.value.as_ref().map(Vec::len),
            &hs,
        )
    }
}

/// The copy of `record` if it fits `limit`, else a pointer to it.
pub fn plan(
    record: &RawRecord,
    why: &DlqReason,
    now_ms: i64,
    limit: usize,
    limit_source: &str,
    force_pointer: bool,
) -> Outgoing {
    let copy = Outgoing::copy(record, why, now_ms);
    let size = copy.wire_size();
    if size <= limit && !force_pointer {
        return copy;
    }
    Outgoing::pointer(record, why, now_ms, size, limit, limit_source)
}

/// The `dlq.*` headers of a dead letter of `record`.
fn added_headers(
    record: &RawRecord,
    why: &DlqReason,
    reason: &str,
    now_ms: i64,
) -> impl Iterator<Item = (String, Option<Vec<u8>>)> {
    let mut h: Vec<(&str, String)> = vec![
        (headers::ERROR_TYPE, why.error_type.clone()),
        (headers::ERROR_REASON, reason.to_string()),
        (headers::TOPIC, record.topic.to_string()),
        (headers::PARTITION, record.partition.to_string()),
        (headers::OFFSET, record.offset.to_string()),
    ];
    if let Some(ts) = record.timestamp {
        h.push((headers::TIMESTAMP, ts.to_string()));
    }
    if let Some(i) = &why.index {
        h.push((headers::INDEX, i.clone()));
    }
    h.push((headers::FAILED_AT, now_ms.to_string()));
    h.into_iter()
        .map(|(k, v)| (k.to_string(), Some(v.into_bytes())))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value_len: usize) -> RawRecord {
        RawRecord {
            topic: "live.mountain.card".into(),
            partition: 2,
            offset: 41,
            key: Some(br#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#.to_vec()),
            payload: Some(vec![b'x'; value_len]),
            headers: [("op", Some(&b"insert"[..]))].into_iter().collect(),
            timestamp: Some(1_700_000_000_000),
        }
    }

    fn why() -> DlqReason {
        DlqReason {
            error_type: "mapper_parsing_exception".into(),
            reason: "failed to parse field [likes]".into(),
            index: Some("cards".into()),
        }
    }

    fn header<'a>(o: &'a Outgoing, name: &str) -> Option<&'a str> {
        o.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    #[test]
    fn a_copy_keeps_the_original_and_adds_the_reason() {
        let r = rec(7);
        let o = Outgoing::copy(&r, &why(), 1_700_000_100_000);
        assert_eq!(o.form, Form::Copy);
        assert_eq!(o.key, r.key);
        assert_eq!(o.value, r.payload);
        assert_eq!(header(&o, "op"), Some("insert"));
        assert_eq!(
            header(&o, headers::ERROR_TYPE),
            Some("mapper_parsing_exception")
        );
        assert_eq!(
            header(&o, headers::ERROR_REASON),
            Some("failed to parse field [likes]")
        );
        assert_eq!(header(&o, headers::TOPIC), Some("live.mountain.card"));
        assert_eq!(header(&o, headers::PARTITION), Some("2"));
        assert_eq!(header(&o, headers::OFFSET), Some("41"));
        assert_eq!(header(&o, headers::TIMESTAMP), Some("1700000000000"));
        assert_eq!(header(&o, headers::INDEX), Some("cards"));
        assert_eq!(header(&o, headers::FAILED_AT), Some("1700000100000"));
        assert_eq!(header(&o, headers::POINTER), None);
        let no_index = DlqReason {
            index: None,
            ..why()
        };
        assert_eq!(
            header(&Outgoing::copy(&r, &no_index, 0), headers::INDEX),
            None
        );
    }

    #[test]
    fn a_copy_that_fits_the_limit_exactly_is_kept_whole() {
        let r = rec(1000);
        let size = Outgoing::copy(&r, &why(), 1).wire_size();
        let o = plan(&r, &why(), 1, size, "test", false);
        assert_eq!(o.form, Form::Copy);
        let o = plan(&r, &why(), 1, size - 1, "topic t max.message.bytes", false);
        assert_eq!(o.form, Form::Pointer);
        assert!(o.wire_size() < 1000, "{}", o.wire_size());
        let p = DlqPointer::from_json(o.value.as_deref().unwrap()).unwrap();
        assert_eq!(p.topic, "live.mountain.card");
        assert_eq!((p.partition, p.offset), (2, 41));
        assert_eq!(p.key_bytes(), r.key);
        assert_eq!(p.size, size as u64);
        assert_eq!(p.limit, size as u64 - 1);
        assert_eq!(p.limit_source, "topic t max.message.bytes");
        assert_eq!(p.error_type, "mapper_parsing_exception");
        assert_eq!(p.timestamp, Some(1_700_000_000_000));
        assert_eq!(header(&o, headers::POINTER), Some(POINTER_SCHEMA));
        assert_eq!(header(&o, headers::OFFSET), Some("41"));
        assert_eq!(
            header(&o, "op"),
            None,
            "the original headers stay with the original"
        );
        assert_eq!(plan(&r, &why(), 1, size, "t", true).form, Form::Pointer);
    }

    #[test]
    fn a_copy_just_under_the_source_limit_becomes_a_pointer_at_the_kafka_default() {
        // The source's own size estimate (key + value + headers + 128) just
        // under 1,048,576: the copy adds the reason headers and no longer
        // fits a topic at Kafka's default limit.
        let r = rec(1_048_576 - 128 - 100);
        let o = plan(
            &r,
            &why(),
            1,
            shared::wire::record_size::KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
            "d",
            false,
        );
        assert_eq!(o.form, Form::Pointer);
        let o = plan(&r, &why(), 1, 2 << 20, "d", false);
        assert_eq!(o.form, Form::Copy);
    }

    #[test]
    fn a_pointer_cuts_a_long_reason_on_a_character_boundary() {
        let long = DlqReason {
            reason: "필드".repeat(2000),
            ..why()
        };
        let o = Outgoing::pointer(&rec(1), &long, 1, 10, 5, "t");
        let reason = header(&o, headers::ERROR_REASON).unwrap();
        assert!(reason.len() <= POINTER_REASON_MAX && reason.len() > POINTER_REASON_MAX - 3);
        assert!(reason.chars().all(|c| c == '필' || c == '드'));
        let p = DlqPointer::from_json(o.value.as_deref().unwrap()).unwrap();
        assert_eq!(p.reason, reason);
    }
}
