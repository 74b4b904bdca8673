//! Change events the source cannot turn into a record ("poison" events):
//! unreadable BSON, or a document the decoder refuses (no `operationType`,
//! no `documentKey._id`, no `clusterTime`, a cluster time without a
//! version), as a server bug, a collections `pipeline` that reshapes some
//! events, or a future server's new event shape can produce.
//!
//! Retrying such an event can only fail the same way forever, so it is
//! dead-lettered instead: a pointer record on the dead-letter topic
//! (reason [`REASON`], the decoder's message, what could be read of the
//! event: key, operation, cluster time, resume token, and the event itself
//! in canonical Extended JSON when it is small), counted in
//! `mongo_source_dead_lettered_total{reason="undecodable_event"}`, and the
//! stream goes on after it. The position committed with the batch is past
//! the event, exactly as for any other.

use crate::kafka::record::Record;
use mongodb::bson::{Bson, Document, RawDocumentBuf};
use serde_json::Value;
use shared::wire::event::{ClusterTime, Namespace};
use shared::wire::source_dlq::{Reason, SourcePointer};
use shared::wire::version::Version;

/// The dead-letter reason of an event the source could not decode.
pub const REASON: &str = "undecodable_event";

/// Largest event (as Extended JSON) copied into the pointer; a larger one
/// is left out (its size is given), so the pointer always fits the topic.
pub const MAX_EMBEDDED_EVENT_BYTES: usize = 16 * 1024;

/// What could be read of a poison event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    /// Canonical Extended JSON of `documentKey._id` (the Kafka key).
    pub key: Option<String>,
    /// `operationType`, when it is a string.
    pub op: Option<String>,
    /// `clusterTime`, when it is a timestamp.
    pub cluster_time: Option<ClusterTime>,
    /// The event's `_id` (its resume token), Extended JSON.
    pub resume_token: Option<Value>,
    /// The event as canonical Extended JSON, when readable and small.
    pub event: Option<Value>,
    /// Size of the event in bytes (BSON).
    pub size: usize,
}

impl Facts {
    /// The facts of a decoded-but-refused event.
    pub fn of_document(doc: &Document) -> Self {
        let event = Bson::Document(doc.clone()).into_canonical_extjson();
        let text = event.to_string();
        Self {
            key: doc
                .get_document("documentKey")
                .ok()
                .and_then(|k| k.get("_id"))
                .map(shared::ejson::canonical_key),
            op: doc.get_str("operationType").ok().map(str::to_string),
            cluster_time: doc.get_timestamp("clusterTime").ok().map(|t| ClusterTime {
                t: t.time,
                i: t.increment,
            }),
            resume_token: doc.get("_id").map(|id| id.clone().into_canonical_extjson()),
            size: text.len(),
            event: (text.len() <= MAX_EMBEDDED_EVENT_BYTES).then_some(event),
        }
    }

    /// The facts of an event whose BSON could not be read as a whole: each
    /// field is looked up on its own, so one bad field hides only itself.
    pub fn of_raw(raw: &RawDocumentBuf) -> Self {
        let to_doc = |v: Option<mongodb::bson::RawBsonRef<'_>>| {
            v.and_then(|v| v.to_raw_bson().try_into().ok())
        };
        let id: Option<Bson> = to_doc(raw.get("_id").ok().flatten());
        let key: Option<Bson> = raw
            .get_document("documentKey")
            .ok()
            .and_then(|k| to_doc(k.get("_id").ok().flatten()));
        Self {
            key: key.as_ref().map(shared::ejson::canonical_key),
            op: raw.get_str("operationType").ok().map(str::to_string),
            cluster_time: raw.get_timestamp("clusterTime").ok().map(|t| ClusterTime {
                t: t.time,
                i: t.increment,
            }),
            resume_token: id.map(Bson::into_canonical_extjson),
            event: None,
            size: raw.as_bytes().len(),
        }
    }
}

/// The dead-letter pointer of a poison event of `ns` (stream topic
/// `event_topic`) that failed with `error`.
pub fn pointer(
    dlq_topic: &str,
    event_topic: &str,
    ns: &Namespace,
    facts: &Facts,
    error: &str,
) -> Record {
    let version = facts
        .cluster_time
        .map(|ct| Version::of_cluster_time(ct.t, ct.i))
        .map(Version::as_u64);
    let message = format!(
        "change event of {ns} could not be decoded: {error}; skipped, the stream \
         goes on after it (re-read the document from MongoDB if it still matters)",
        ns = format_args!("{}.{}", ns.db, ns.coll),
    );
    let mut p = SourcePointer::new(Reason::UndecodableEvent, message, event_topic, ns);
    p.key = facts.key.clone();
    p.op = facts.op.clone();
    p.version = version;
    p.cluster_time = facts.cluster_time;
    p.resume_token = facts.resume_token.clone();
    p.size = Some(facts.size);
    p.event = facts.event.clone();
    Record::pointer(dlq_topic, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::decode;
    use mongodb::bson::{doc, Timestamp};
    use serde_json::json;
    use shared::wire::event::HEADER_OP;

    fn ns() -> Namespace {
        Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        }
    }

    #[test]
    fn a_refused_event_becomes_a_pointer_with_what_could_be_read() {
        // An insert whose documentKey a collections pipeline removed.
        let ev = doc! {
            "_id": { "_data": "8265A1" },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 4 },
            "ns": { "db": "mountain", "coll": "card" },
            "fullDocument": { "_id": "c1", "title": "설악산" },
        };
        let err = decode(&ev, &ns()).unwrap_err().to_string();
        let facts = Facts::of_document(&ev);
        assert_eq!(facts.op.as_deref(), Some("insert"));
        assert_eq!(facts.key, None);
        let r = pointer("live.dlq", "live.mountain.card", &ns(), &facts, &err);
        assert_eq!(r.topic, "live.dlq");
        assert_eq!(r.key, None);
        let v: Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["reason"], REASON);
        assert!(
            v["message"].as_str().unwrap().contains("documentKey"),
            "{v}"
        );
        assert_eq!(v["cluster_time"], json!({"t": 1_700_000_000, "i": 4}));
        assert_eq!(
            v["version"],
            Version::of_cluster_time(1_700_000_000, 4).as_u64()
        );
        assert_eq!(v["resume_token"], json!({"_data": "8265A1"}));
        assert_eq!(v["event"]["fullDocument"]["title"], "설악산");
        assert!(r.headers.contains(&("reason", REASON.into())));
        assert!(r.headers.contains(&(HEADER_OP, "insert".into())));
    }

    #[test]
    fn a_large_event_is_not_copied_into_the_pointer() {
        let ev = doc! {
            "_id": { "_data": "t" }, "operationType": 7_i32,
            "documentKey": { "_id": 5_i32 },
            "fullDocument": { "_id": 5_i32, "body": "가".repeat(20_000) },
        };
        let facts = Facts::of_document(&ev);
        assert_eq!(facts.key.as_deref(), Some(r#"{"$numberInt":"5"}"#));
        assert_eq!(facts.op, None, "operationType is not a string");
        assert!(facts.event.is_none() && facts.size > MAX_EMBEDDED_EVENT_BYTES);
        let r = pointer("d", "t", &ns(), &facts, "no operationType");
        assert!(r.value.len() < 2048, "{}", r.value.len());
        let v: Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["version"], Value::Null);
        assert_eq!(r.key.as_deref(), Some(r#"{"$numberInt":"5"}"#));
    }

    #[test]
    fn facts_of_raw_bytes_read_each_field_on_its_own() {
        let raw = RawDocumentBuf::from_document(&doc! {
            "_id": { "_data": "t9" },
            "operationType": "delete",
            "clusterTime": Timestamp { time: 9, increment: 1 },
            "documentKey": { "_id": "gone" },
        })
        .unwrap();
        let f = Facts::of_raw(&raw);
        assert_eq!(f.key.as_deref(), Some(r#""gone""#));
        assert_eq!(f.op.as_deref(), Some("delete"));
        assert_eq!(f.cluster_time, Some(ClusterTime { t: 9, i: 1 }));
        assert_eq!(f.resume_token, Some(json!({"_data": "t9"})));
        assert_eq!(f.size, raw.as_bytes().len());
    }
}
