//! `mongo-source`'s dead-letter topic (default `{prefix}.dlq`): one typed
//! pointer (schema [`SCHEMA`]) for every change event the source could not
//! write whole to its topic, with why ([`Reason`]). Documented in
//! `docs/events.md` ("Dead-letter pointer").

use super::event::{ChangeEvent, ClusterTime, Namespace, HEADER_OP, HEADER_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Schema of a pointer's value.
pub const SCHEMA: &str = "mongo-source.dlq.v1";
/// Kafka header with the [`Reason`].
pub const HEADER_REASON: &str = "reason";

/// Why an event is in the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The record was over the Kafka limit and the policy is `dlq`: the
    /// event is only here.
    RecordTooLarge,
    /// The record was over the Kafka limit: the event went to its topic
    /// with its largest text fields cut to fit (`fields` says which), and
    /// this pointer says so.
    RecordTruncated,
    /// The change event was over MongoDB's 16 MB limit and could not be
    /// read whole.
    EventTooLarge,
    /// The change event could not be decoded.
    UndecodableEvent,
}

impl Reason {
    /// The name in the JSON and the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecordTooLarge => "record_too_large",
            Self::RecordTruncated => "record_truncated",
            Self::EventTooLarge => "event_too_large",
            Self::UndecodableEvent => "undecodable_event",
        }
    }
}

/// The value of a pointer record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePointer {
    /// [`SCHEMA`].
    pub schema: String,
    /// Why.
    pub reason: Reason,
    /// What happened, for people.
    pub message: String,
    /// The event topic the change belongs to.
    pub topic: String,
    /// Its partition, when it was a marker for one partition.
    #[serde(default)]
    pub partition: Option<i32>,
    /// The collection.
    pub ns: Namespace,
    /// The Kafka key of the change (canonical Extended JSON of `_id`), when known.
    #[serde(default)]
    pub key: Option<String>,
    /// The operation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The change's version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The change's cluster time, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<ClusterTime>,
    /// The change's wall-clock time, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
    /// The change stream's resume token of the change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<Value>,
    /// Bytes of the record (or event) that did not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// The limit it did not fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The fields cut to fit (dotted paths), for [`Reason::RecordTruncated`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// What could be read of an undecodable event (when small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

impl SourcePointer {
    /// A pointer of `reason` for a change of `ns` on `topic`.
    pub fn new(reason: Reason, message: String, topic: &str, ns: &Namespace) -> Self {
        Self {
            schema: SCHEMA.into(),
            reason,
            message,
            topic: topic.to_string(),
            partition: None,
            ns: ns.clone(),
            key: None,
            op: None,
            version: None,
            cluster_time: None,
            wall_time: None,
            resume_token: None,
            size: None,
            limit: None,
            fields: Vec::new(),
            event: None,
        }
    }

    /// With what `ev` (of Kafka key `key`) says of itself.
    pub fn of_event(mut self, key: Option<&str>, ev: &ChangeEvent) -> Self {
        self.key = key.map(str::to_string);
        self.op = Some(ev.op.as_str().to_string());
        self.version = Some(ev.version);
        self.cluster_time = Some(ev.cluster_time);
        self.wall_time = ev.wall_time.clone();
        self
    }

    /// The record's value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record's headers: reason, op and version when known.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(HEADER_REASON, self.reason.as_str().to_string())];
        if let Some(op) = &self.op {
            h.push((HEADER_OP, op.clone()));
        }
        if let Some(v) = self.version {
            h.push((HEADER_VERSION, v.to_string()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pointer_round_trips_and_names_its_reason() {
        let ns = Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        };
        let mut p = SourcePointer::new(
            Reason::RecordTruncated,
            "cut to fit".into(),
            "live.mountain.card",
            &ns,
        );
        p.key = Some(r#""c1""#.into());
        p.size = Some(1_100_000);
        p.limit = Some(1_048_576);
        p.fields = vec!["body".into()];
        let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["reason"], "record_truncated");
        assert_eq!(v["fields"], json!(["body"]));
        assert!(v.get("version").is_none(), "unknown fields are left out");
        let back: SourcePointer = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            p.headers(),
            vec![("reason", "record_truncated".to_string())]
        );
    }

    #[test]
    fn pointers_written_before_the_type_still_read() {
        let old = json!({"schema": "mongo-source.dlq.v1", "reason": "record_too_large",
            "message": "m", "topic": "t", "partition": null, "ns": {"db": "d", "coll": "c"},
            "key": "\"a\"", "op": "insert", "version": 5, "cluster_time": {"t": 1, "i": 1},
            "size": 10, "limit": 5});
        let p: SourcePointer = serde_json::from_value(old).unwrap();
        assert_eq!(p.reason, Reason::RecordTooLarge);
        assert_eq!(p.version, Some(5));
    }
}
