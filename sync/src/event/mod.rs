//! Decoding a Kafka record value into a [`SourceEvent`].
//!
//! Two producers are understood:
//!
//! - `mongo-source`: a [`shared::wire::event::ChangeEvent`] as JSON (schema
//!   `mongo-source.change.v1`), version taken from its `version` field;
//! - the MongoDB Kafka Source Connector: the change stream document as
//!   Extended JSON, either raw (`StringConverter`), as a JSON string
//!   (`JsonConverter`, `schemas.enable=false`) or inside the JsonConverter
//!   envelope `{"schema": {..}, "payload": "<string>"}`. Its version is
//!   derived from `clusterTime` with the layout `mongo-source` uses
//!   ([`shared::wire::version`]), so both producers' versions compare; its
//!   updates usually carry only `updateDescription` (the connector's
//!   default), which es-sync applies to the indexed document
//!   ([`crate::patch`]).
//!
//! A native event's `version` must be the one its `cluster_time` gives
//! ([`shared::wire::event::ChangeEvent::version_is_consistent`]): a version that is not could
//! only come from a broken or forged producer, and applied it would freeze
//! a document (too high) or delete a namespace (a too high
//! `snapshot.version`) forever, so such a record is refused as bad.
//!
//! [`decode_raw`] does the same checks leaving the documents as JSON text in
//! the record (what es-sync runs, [`raw`]); [`decode`] parses them too.
//!
//! Delivery guarantee of this stage: none needed, it is a pure function. A
//! record that cannot be decoded gives a [`DecodeError`]; the consumer sends
//! it to the dead-letter topic and goes on, so one bad record never stops a
//! partition.

pub mod raw;

pub use raw::{decode_raw, RawEvent, Span};

use serde_json::Value;
use shared::wire::event::{ClusterTime, Namespace, Operation, UpdateDescription};
use shared::wire::version::Version;

/// A decoded change (or marker), whatever its producer.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEvent {
    /// What happened.
    pub op: Operation,
    /// Database and collection.
    pub ns: Namespace,
    /// The document key (`{"_id": ..}` plus shard key), Extended JSON;
    /// `Null` for markers.
    pub key: Value,
    /// The full document (Extended JSON) when there is one.
    pub doc: Option<Value>,
    /// For updates: what changed (applied to the indexed document when
    /// `doc` is absent).
    pub update: Option<UpdateDescription>,
    /// The document before the change (pre-image), when the producer
    /// had one: the base of `update` when the index has no document.
    pub before: Option<Value>,
    /// The version used as Elasticsearch external version (for a
    /// `snapshot_end` marker: the snapshot version).
    pub version: Version,
    /// Cluster time of the change.
    pub cluster_time: ClusterTime,
    /// The server's wall-clock time of the change (MongoDB 6.0+ `wallTime`,
    /// mongo-source's `wall_time`), ms since the epoch, when the record has
    /// it.
    pub wall_time_ms: Option<i64>,
    /// Which format it came in.
    pub format: Format,
}

/// The producer format a record was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `mongo-source` native envelope.
    Native,
    /// MongoDB Kafka Source Connector change stream document.
    Connector,
}

/// Why a record could not be decoded. [`DecodeError::kind`] is the error
/// type written to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no value (a Kafka tombstone).
    #[error("record has no value")]
    Empty,
    /// The value is not JSON (or the embedded string is not).
    #[error("value is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither a native event nor a change stream document.
    #[error("value is neither a mongo-source event nor a change stream document")]
    UnknownFormat,
    /// The operation is not one es-sync can apply.
    #[error("unknown or unsupported operation `{0}`")]
    UnknownOperation(String),
    /// A document change without a document `_id`.
    #[error("document change without `_id` in its key")]
    MissingId,
    /// The version is missing or out of range.
    #[error("bad version: {0}")]
    BadVersion(String),
    /// Another required field is missing or has the wrong type.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// Short machine-readable name, for the DLQ and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty_record",
            Self::NotJson(_) => "not_json",
            Self::UnknownFormat => "unknown_format",
            Self::UnknownOperation(_) => "unknown_operation",
            Self::MissingId => "missing_id",
            Self::BadVersion(_) => "bad_version",
            Self::Invalid(_) => "invalid_event",
        }
    }
}

/// Largest version Elasticsearch accepts as an external version.
const MAX_ES_VERSION: u64 = i64::MAX as u64 - 1;

/// Decodes one Kafka record value (its documents parsed: see
/// [`raw::decode_raw`] for the decoding that leaves them as text).
pub fn decode(payload: Option<&[u8]>) -> Result<SourceEvent, DecodeError> {
    let raw = raw::decode_raw(payload)?;
    let text = payload.unwrap_or_default();
    let parse = |t: Option<&[u8]>| -> Result<Option<Value>, DecodeError> {
        t.map(|t| {
            serde_json::from_slice(t).map_err(|e| {
                if raw.inner.is_some() {
                    DecodeError::NotJson(format!("embedded string: {e}"))
                } else {
                    DecodeError::NotJson(e.to_string())
                }
            })
        })
        .transpose()
    };
    let doc = parse(raw.doc_text(text))?;
    let before = parse(raw.before_text(text))?;
    Ok(SourceEvent {
        op: raw.op,
        ns: raw.ns,
        key: raw.key,
        doc,
        update: raw.update,
        before,
        version: raw.version,
        cluster_time: raw.cluster_time,
        wall_time_ms: raw.wall_time_ms,
        format: raw.format,
    })
}

/// When a change of kind `op` was committed, ms: its wall time, else the
/// middle of its cluster time's second; `None` for snapshot copies and
/// markers ([`SourceEvent::commit_time_ms`]).
fn commit_time_ms(op: Operation, wall_time_ms: Option<i64>, ct: ClusterTime) -> Option<i64> {
    match op {
        Operation::Snapshot | Operation::SnapshotStart | Operation::SnapshotEnd => None,
        _ => Some(wall_time_ms.unwrap_or(i64::from(ct.t) * 1000 + 500)),
    }
}

impl SourceEvent {
    /// When MongoDB committed the change, ms since the epoch (the start of
    /// the freshness measured by [`crate::freshness`]): the server's
    /// `wallTime` when the record has it (millisecond precision, taken
    /// from the same clock as the cluster time's seconds), else the middle
    /// of the cluster time's second (`t` has whole seconds only: the
    /// middle is off by at most half a second and by nothing on average).
    /// `None` for snapshot copies and markers: their cluster time is the
    /// snapshot's, not a commit of the document.
    pub fn commit_time_ms(&self) -> Option<i64> {
        commit_time_ms(self.op, self.wall_time_ms, self.cluster_time)
    }
}

/// An RFC 3339 time (mongo-source's `wall_time`) in ms since the epoch.
fn rfc3339_ms(s: &str) -> Option<i64> {
    mongodb::bson::DateTime::parse_rfc3339_str(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// An Extended JSON date (the connector's `wallTime`) in ms since the
/// epoch: `{"$date": "<RFC 3339>"}` (relaxed), `{"$date": {"$numberLong":
/// "<ms>"}}` (canonical) or `{"$date": <ms>}` (the connector's default
/// JSON).
fn ejson_date_ms(v: &Value) -> Option<i64> {
    match v.get("$date")? {
        Value::String(s) => rfc3339_ms(s),
        Value::Number(n) => n.as_i64(),
        Value::Object(o) => o.get("$numberLong")?.as_str()?.parse().ok(),
        _ => None,
    }
}

/// The connector's `updateDescription` (camelCase, Extended JSON) as the
/// wire contract's [`UpdateDescription`].
fn connector_update(u: Value) -> Result<UpdateDescription, DecodeError> {
    let bad = |what: &str| DecodeError::Invalid(format!("`updateDescription.{what}`"));
    let Value::Object(mut u) = u else {
        return Err(DecodeError::Invalid(
            "`updateDescription` must be an object".into(),
        ));
    };
    let updated_fields = match u.remove("updatedFields") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad("updatedFields must be an object")),
    };
    let removed_fields = match u.remove("removedFields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad("removedFields must hold strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("removedFields must be an array")),
    };
    let truncated_arrays = match u.remove("truncatedArrays") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("truncatedArrays must be an array")),
    };
    let disambiguated_paths = match u.remove("disambiguatedPaths") {
        Some(Value::Object(m)) => m,
        _ => Default::default(),
    };
    Ok(UpdateDescription {
        updated_fields,
        removed_fields,
        truncated_arrays,
        disambiguated_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::wire::event::SCHEMA;

    fn native(op: &str) -> Value {
        json!({
            "schema": SCHEMA, "op": op,
            "ns": {"db": "mountain", "coll": "card"},
            "key": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}},
            "doc": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "한라산"},
            "cluster_time": {"t": 1_700_000_000u32, "i": 3},
            "version": Version::of_cluster_time(1_700_000_000, 3).as_u64()
        })
    }

    fn change_doc() -> Value {
        json!({
            "_id": {"_data": "8265..."},
            "operationType": "insert",
            "clusterTime": {"$timestamp": {"t": 1_700_000_000u32, "i": 7}},
            "fullDocument": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "설악산"},
            "ns": {"db": "mountain", "coll": "card"},
            "documentKey": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}}
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn native_event_decodes() {
        let ev = decode(Some(&bytes(&native("update")))).unwrap();
        assert_eq!(ev.op, Operation::Update);
        assert_eq!(ev.version, Version::of_cluster_time(1_700_000_000, 3));
        assert_eq!(ev.format, Format::Native);
        assert_eq!(ev.doc.unwrap()["title"], "한라산");
    }

    #[test]
    fn commit_time_is_the_wall_time_else_the_middle_of_the_cluster_second() {
        // mongo-source's wall_time (RFC 3339, ms).
        let mut v = native("insert");
        v["wall_time"] = json!("2023-11-14T22:13:20.123Z");
        let ev = decode(Some(&bytes(&v))).unwrap();
        assert_eq!(ev.wall_time_ms, Some(1_700_000_000_123));
        assert_eq!(ev.commit_time_ms(), Some(1_700_000_000_123));
        // Without it: the middle of the cluster time's second.
        let ev = decode(Some(&bytes(&native("insert")))).unwrap();
        assert_eq!(ev.wall_time_ms, None);
        assert_eq!(ev.commit_time_ms(), Some(1_700_000_000_500));
        // An unreadable wall time is ignored, not an error.
        let mut v = native("delete");
        v["wall_time"] = json!("yesterday");
        assert_eq!(
            decode(Some(&bytes(&v))).unwrap().commit_time_ms(),
            Some(1_700_000_000_500)
        );
        // Snapshot copies have no commit time of their own.
        let mut v = native("snapshot");
        v["snapshot"] = json!({"id": "s", "version": v["version"].clone()});
        v["wall_time"] = json!("2023-11-14T22:13:20.123Z");
        assert_eq!(decode(Some(&bytes(&v))).unwrap().commit_time_ms(), None);
        // The connector's wallTime in its three Extended JSON shapes.
        for wall in [
            json!({"$date": 1_700_000_000_456i64}),
            json!({"$date": {"$numberLong": "1700000000456"}}),
            json!({"$date": "2023-11-14T22:13:20.456Z"}),
        ] {
            let mut c = change_doc();
            c["wallTime"] = wall.clone();
            let ev = decode(Some(&bytes(&c))).unwrap();
            assert_eq!(ev.commit_time_ms(), Some(1_700_000_000_456), "{wall}");
        }
        let ev = decode(Some(&bytes(&change_doc()))).unwrap();
        assert_eq!(ev.commit_time_ms(), Some(1_700_000_000_500));
    }

    #[test]
    fn native_update_with_null_doc_has_no_doc() {
        let mut v = native("update");
        v["doc"] = Value::Null;
        assert_eq!(decode(Some(&bytes(&v))).unwrap().doc, None);
    }

    #[test]
    fn snapshot_end_takes_the_snapshot_version() {
        let at = Version::of_cluster_time(1_700_000_000, 4).as_u64();
        let v = json!({
            "schema": SCHEMA, "op": "snapshot_end",
            "ns": {"db": "mountain", "coll": "card"}, "key": null,
            "cluster_time": {"t": 1_700_000_000u32, "i": 4}, "version": at,
            "snapshot": {"id": "s1", "version": at}
        });
        let ev = decode(Some(&bytes(&v))).unwrap();
        assert_eq!(ev.op, Operation::SnapshotEnd);
        assert_eq!(ev.version.as_u64(), at);
        let mut v = v;
        v.as_object_mut().unwrap().remove("snapshot");
        assert_eq!(decode(Some(&bytes(&v))).unwrap_err().kind(), "bad_version");
    }

    #[test]
    fn versions_not_made_from_the_cluster_time_are_refused() {
        // A huge version would freeze the document forever.
        let mut v = native("update");
        v["version"] = json!(1u64 << 62);
        let err = decode(Some(&bytes(&v))).unwrap_err();
        assert_eq!(err.kind(), "bad_version");
        assert!(
            err.to_string().contains("not made from cluster time"),
            "{err}"
        );
        // A huge snapshot version would delete every document of the namespace.
        let at = Version::of_cluster_time(1_700_000_000, 4).as_u64();
        let end = json!({
            "schema": SCHEMA, "op": "snapshot_end",
            "ns": {"db": "mountain", "coll": "card"}, "key": null,
            "cluster_time": {"t": 1_700_000_000u32, "i": 4}, "version": at,
            "snapshot": {"id": "s1", "version": (1u64 << 62)}
        });
        assert_eq!(
            decode(Some(&bytes(&end))).unwrap_err().kind(),
            "bad_version"
        );
        // A transaction rank is part of a consistent version.
        let mut v = native("update");
        v["version"] = json!(Version::new(1_700_000_000, 3, 7).unwrap().as_u64());
        assert!(decode(Some(&bytes(&v))).is_ok());
        // Records of the first layout (t << 30 | i) are still read.
        let mut v = native("update");
        v["version"] = json!((1_700_000_000u64 << 30) | 3);
        assert_eq!(
            decode(Some(&bytes(&v))).unwrap().version.as_u64(),
            (1_700_000_000u64 << 30) | 3
        );
    }

    #[test]
    fn connector_update_without_full_document_keeps_its_delta() {
        let mut c = change_doc();
        c["operationType"] = json!("update");
        c.as_object_mut().unwrap().remove("fullDocument");
        c["updateDescription"] = json!({
            "updatedFields": {"title": "새 제목", "tags.1": "x"},
            "removedFields": ["draft"],
            "truncatedArrays": [{"field": "tags", "newSize": 2}]
        });
        c["fullDocumentBeforeChange"] =
            json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "옛 제목"});
        let ev = decode(Some(&bytes(&c))).unwrap();
        assert_eq!(ev.doc, None);
        let u = ev.update.unwrap();
        assert_eq!(u.updated_fields["title"], "새 제목");
        assert_eq!(u.removed_fields, vec!["draft".to_string()]);
        assert_eq!(u.truncated_arrays.len(), 1);
        assert_eq!(ev.before.unwrap()["title"], "옛 제목");
        c["updateDescription"] = json!({"removedFields": "draft"});
        assert_eq!(
            decode(Some(&bytes(&c))).unwrap_err().kind(),
            "invalid_event"
        );
    }

    #[test]
    fn connector_raw_string_and_envelope_decode_alike() {
        let doc = change_doc();
        let text = doc.to_string();
        let raw = decode(Some(text.as_bytes())).unwrap();
        let as_string = decode(Some(&bytes(&Value::String(text.clone())))).unwrap();
        let envelope = json!({"schema": {"type": "string", "optional": false}, "payload": text});
        let enveloped = decode(Some(&bytes(&envelope))).unwrap();
        assert_eq!(raw, as_string);
        assert_eq!(raw, enveloped);
        assert_eq!(raw.format, Format::Connector);
        assert_eq!(raw.version, Version::of_cluster_time(1_700_000_000, 7));
        assert_eq!(
            raw.key,
            json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}})
        );
    }

    #[test]
    fn connector_transaction_changes_are_ranked_by_their_token() {
        let in_txn = |token: &str| {
            let mut c = change_doc();
            c["clusterTime"] = json!({"$timestamp": {"t": 1_630_438_675u32, "i": 7}});
            c["_id"] = json!({"_data": token});
            c["txnNumber"] = json!({"$numberLong": "3"});
            c["lsid"] = json!({"id": {"$binary": {"base64": "AAAA", "subType": "04"}}});
            decode(Some(&bytes(&c))).unwrap().version
        };
        let first = in_txn("82612E8513000000072B022C0100296E");
        let fourth = in_txn("82612E8513000000072B022C01002B066E");
        assert_eq!(first, Version::of_cluster_time(1_630_438_675, 7));
        assert_eq!(fourth, Version::new(1_630_438_675, 7, 3).unwrap());
        assert!(fourth < Version::of_cluster_time(1_630_438_675, 8));
        // An opaque token (another server) or one of another time: rank 0.
        assert_eq!(in_txn("8265abc"), first);
        assert_eq!(in_txn("82612E8513000000082B022C01002B066E"), first);
    }

    #[test]
    fn connector_delete_has_no_doc() {
        let mut doc = change_doc();
        doc["operationType"] = json!("delete");
        doc.as_object_mut().unwrap().remove("fullDocument");
        let ev = decode(Some(&bytes(&doc))).unwrap();
        assert_eq!(ev.op, Operation::Delete);
        assert!(ev.doc.is_none());
    }

    #[test]
    fn errors_are_typed() {
        let kind = |b: &[u8]| decode(Some(b)).unwrap_err().kind();
        assert_eq!(decode(None).unwrap_err().kind(), "empty_record");
        assert_eq!(kind(b"not json {"), "not_json");
        assert_eq!(kind(br#""not json inside""#), "not_json");
        assert_eq!(kind(br#"{"hello": 1}"#), "unknown_format");
        assert_eq!(kind(b"[1,2]"), "unknown_format");
        assert_eq!(kind(&bytes(&native("upsert"))), "unknown_operation");
        let mut v = native("insert");
        v["key"] = json!({});
        assert_eq!(kind(&bytes(&v)), "missing_id");
        let mut v = native("insert");
        v["version"] = json!(-1);
        assert_eq!(kind(&bytes(&v)), "bad_version");
        let mut v = native("insert");
        v["version"] = json!(u64::MAX);
        assert_eq!(kind(&bytes(&v)), "bad_version");
        let mut v = native("insert");
        v["ns"] = json!("x");
        assert_eq!(kind(&bytes(&v)), "invalid_event");

        let mut c = change_doc();
        c["operationType"] = json!("drop");
        assert_eq!(kind(&bytes(&c)), "unknown_operation");
        let mut c = change_doc();
        c["clusterTime"] = json!(5);
        assert_eq!(kind(&bytes(&c)), "bad_version");
        let mut c = change_doc();
        c["clusterTime"] = json!({"$timestamp": {"t": 1, "i": 1u64 << 33}});
        assert_eq!(kind(&bytes(&c)), "bad_version");
        let mut c = change_doc();
        c.as_object_mut().unwrap().remove("documentKey");
        assert_eq!(kind(&bytes(&c)), "missing_id");
    }

    #[test]
    fn garbage_never_panics() {
        for b in [
            &b"\xff\xfe"[..],
            b"",
            b"   ",
            b"null",
            b"1e999",
            b"{\"schema\":1}",
            b"\"\\\"\\\"\"",
        ] {
            assert!(decode(Some(b)).is_err());
        }
    }
}
