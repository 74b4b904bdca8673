//! A record ready for Kafka, its size as the broker counts it, and the
//! record of a dead-letter pointer (its value is the wire contract's
//! [`SourcePointer`]).

use shared::wire::event::{
    ChangeEvent, Namespace, Operation, HEADER_OP, HEADER_SCHEMA, HEADER_VERSION, SCHEMA,
};
use shared::wire::source_dlq::{Reason, SourcePointer};
use std::borrow::Cow;

/// Bytes a record adds on the wire beyond key, value and headers: the
/// record-batch header (61) plus the record's own varints and attributes,
/// rounded up so the estimate is never below what librdkafka counts.
pub const RECORD_OVERHEAD: usize = 128;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Explicit partition (markers go to every partition), else by key.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<String>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
}

impl Record {
    /// An event record with the standard headers.
    pub fn event(
        topic: &str,
        partition: Option<i32>,
        key: Option<String>,
        ev: &ChangeEvent,
    ) -> Self {
        let value = serde_json::to_vec(ev).unwrap_or_default();
        let mut r = Self::encoded(topic, partition, key, value, ev.op, ev.version);
        if ev.schema != SCHEMA {
            r.headers[2].1 = Cow::Owned(ev.schema.clone());
        }
        r
    }

    /// An event record whose value, the event's JSON, is already written
    /// ([`shared::wire::change_stream::RawChange::write_json`]), with the
    /// standard headers.
    pub fn encoded(
        topic: &str,
        partition: Option<i32>,
        key: Option<String>,
        value: Vec<u8>,
        op: Operation,
        version: u64,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            key,
            value,
            headers: vec![
                (HEADER_OP, Cow::Borrowed(op.as_str())),
                (HEADER_VERSION, Cow::Owned(version.to_string())),
                (HEADER_SCHEMA, Cow::Borrowed(SCHEMA)),
            ],
        }
    }

    /// Estimated size on the wire, never below the real one.
    pub fn wire_size(&self) -> usize {
        self.key.as_ref().map_or(0, String::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 10)
                .sum::<usize>()
            + RECORD_OVERHEAD
    }
}

impl Record {
    /// A dead-letter pointer record ([`SourcePointer`], keyed like the
    /// change it points at).
    pub fn pointer(dlq_topic: &str, p: &SourcePointer) -> Self {
        Self {
            topic: dlq_topic.to_string(),
            partition: None,
            key: p.key.clone(),
            value: p.to_json(),
            headers: p
                .headers()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
        }
    }
}

/// The pointer for an event record over `limit`: its key, size and why.
pub fn oversized_pointer(
    reason: Reason,
    original: &Record,
    ev: Option<&ChangeEvent>,
    ns: &Namespace,
    limit: usize,
    limit_source: &str,
) -> SourcePointer {
    let size = original.wire_size();
    let message = format!(
        "record of {size} bytes exceeds the limit of {limit} bytes ({limit_source}); by {} bytes",
        size.saturating_sub(limit)
    );
    let mut p = SourcePointer::new(reason, message, &original.topic, ns);
    if let Some(ev) = ev {
        p = p.of_event(original.key.as_deref(), ev);
    }
    p.key = original.key.clone();
    p.partition = original.partition;
    p.size = Some(size);
    p.limit = Some(limit);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::wire::event::ClusterTime;

    fn ev(doc_len: usize) -> ChangeEvent {
        ChangeEvent {
            schema: SCHEMA.into(),
            op: Operation::Insert,
            ns: Namespace {
                db: "mountain".into(),
                coll: "card".into(),
            },
            key: json!({"_id": "a"}),
            doc: Some(json!({"_id": "a", "body": "x".repeat(doc_len)})),
            update: None,
            before: None,
            cluster_time: ClusterTime { t: 1, i: 1 },
            wall_time: None,
            version: shared::wire::version::Version::of_cluster_time(1, 1).as_u64(),
            txn: None,
            snapshot: None,
        }
    }

    #[test]
    fn size_counts_everything() {
        let r = Record::event("t", None, Some("\"a\"".into()), &ev(1000));
        assert!(r.wire_size() > 1000 + RECORD_OVERHEAD);
        assert_eq!(r.headers[0], ("op", "insert".into()));
    }

    #[test]
    fn pointer_is_small_and_says_why() {
        let e = ev(1_100_000);
        let r = Record::event("live.mountain.card", None, Some("\"a\"".into()), &e);
        let p = Record::pointer(
            "live.dlq",
            &oversized_pointer(
                Reason::RecordTooLarge,
                &r,
                Some(&e),
                &e.ns,
                1_048_576,
                "kafka.message_max_bytes",
            ),
        );
        assert!(p.value.len() < 2048);
        assert_eq!(p.topic, "live.dlq");
        let v: serde_json::Value = serde_json::from_slice(&p.value).unwrap();
        assert_eq!(v["reason"], "record_too_large");
        assert_eq!(v["limit"], 1_048_576);
        assert_eq!(v["topic"], "live.mountain.card");
        assert!(v["size"].as_u64().unwrap() > 1_100_000);
        assert_eq!(p.key.as_deref(), Some("\"a\""));
        assert_eq!(v["key"], "\"a\"");
        assert_eq!(v["op"], "insert");
        assert_eq!(v["version"], e.version);
        assert_eq!(v["cluster_time"], json!({"t": 1, "i": 1}));
    }
}
