//! A record ready for Kafka, its size as the broker counts it, and the
//! dead-letter pointer that replaces a record over the limit.

use serde_json::json;
use shared::wire::event::{ChangeEvent, Namespace, HEADER_OP, HEADER_SCHEMA, HEADER_VERSION};
use shared::wire::version::Version;

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
    pub headers: Vec<(&'static str, String)>,
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
        Self {
            topic: topic.to_string(),
            partition,
            key,
            value,
            headers: vec![
                (HEADER_OP, ev.op.as_str().to_string()),
                (HEADER_VERSION, ev.version.to_string()),
                (HEADER_SCHEMA, ev.schema.clone()),
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

/// Builds the dead-letter pointer for `original` (an event record of
/// namespace `ns`), which did not fit `limit`.
pub fn oversized_pointer(
    dlq_topic: &str,
    original: &Record,
    ns: &Namespace,
    limit: usize,
    limit_source: &str,
) -> Record {
    let size = original.wire_size();
    let header = |name: &str| {
        original
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let op = header(HEADER_OP);
    let version: u64 = header(HEADER_VERSION).parse().unwrap_or(0);
    let (t, i) = Version::from_u64(version).cluster_time();
    let value = json!({
        "schema": "mongo-source.dlq.v1",
        "reason": "record_too_large",
        "message": format!(
            "record of {size} bytes exceeds the limit of {limit} bytes ({limit_source}); by {} bytes",
            size.saturating_sub(limit)
        ),
        "topic": original.topic,
        "partition": original.partition,
        "ns": ns,
        "key": original.key,
        "op": op,
        "version": version,
        "cluster_time": { "t": t, "i": i },
        "size": size,
        "limit": limit,
    });
    Record {
        topic: dlq_topic.to_string(),
        partition: None,
        key: original.key.clone(),
        value: serde_json::to_vec(&value).unwrap_or_default(),
        headers: vec![
            ("reason", "record_too_large".to_string()),
            (HEADER_OP, op),
            (HEADER_VERSION, version.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::event::{ClusterTime, Operation, SCHEMA};

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
        assert_eq!(r.headers[0], ("op", "insert".to_string()));
    }

    #[test]
    fn pointer_is_small_and_says_why() {
        let e = ev(1_100_000);
        let r = Record::event("live.mountain.card", None, Some("\"a\"".into()), &e);
        let p = oversized_pointer("live.dlq", &r, &e.ns, 1_048_576, "kafka.message_max_bytes");
        assert!(p.value.len() < 2048);
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
