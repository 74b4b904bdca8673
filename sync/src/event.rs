//! Decoding a Kafka record value into a [`SourceEvent`].
//!
//! Two producers are understood:
//!
//! - `mongo-source`: a [`shared::event::ChangeEvent`] as JSON (schema
//!   `mongo-source.change.v1`), version taken from its `version` field;
//! - the MongoDB Kafka Source Connector: the change stream document as
//!   Extended JSON, either raw (`StringConverter`), as a JSON string
//!   (`JsonConverter`, `schemas.enable=false`) or inside the JsonConverter
//!   envelope `{"schema": {..}, "payload": "<string>"}`. Its version is
//!   derived from `clusterTime` with [`Version::from_cluster_time`], the
//!   same rule `mongo-source` uses, so both producers' versions compare.
//!
//! Delivery guarantee of this stage: none needed, it is a pure function. A
//! record that cannot be decoded gives a [`DecodeError`]; the consumer sends
//! it to the dead-letter topic and goes on, so one bad record never stops a
//! partition.

use serde_json::Value;
use shared::event::{ChangeEvent, ClusterTime, Namespace, Operation, SCHEMA};
use shared::version::Version;

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
    /// The version used as Elasticsearch external version (for a
    /// `snapshot_end` marker: the snapshot version).
    pub version: Version,
    /// Cluster time of the change.
    pub cluster_time: ClusterTime,
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

/// Decodes one Kafka record value.
pub fn decode(payload: Option<&[u8]>) -> Result<SourceEvent, DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    decode_value(value, 0)
}

fn decode_value(value: Value, depth: u8) -> Result<SourceEvent, DecodeError> {
    match value {
        // JsonConverter without schemas: the change stream document as a string.
        Value::String(s) if depth < 2 => {
            let inner: Value = serde_json::from_str(&s)
                .map_err(|e| DecodeError::NotJson(format!("embedded string: {e}")))?;
            decode_value(inner, depth + 1)
        }
        Value::Object(mut map) => {
            if map.get("schema").and_then(Value::as_str) == Some(SCHEMA) {
                return decode_native(Value::Object(map));
            }
            // JsonConverter envelope.
            if depth < 2 && map.contains_key("payload") && map.contains_key("schema") {
                let payload = map.remove("payload").unwrap_or(Value::Null);
                return decode_value(payload, depth + 1);
            }
            if map.contains_key("operationType") {
                return decode_connector(map);
            }
            Err(DecodeError::UnknownFormat)
        }
        _ => Err(DecodeError::UnknownFormat),
    }
}

fn decode_native(value: Value) -> Result<SourceEvent, DecodeError> {
    // Check the operation first, for a precise error.
    let op_name = value
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !Operation::ALL.iter().any(|o| o.as_str() == op_name) {
        return Err(DecodeError::UnknownOperation(op_name));
    }
    if !value.get("version").is_some_and(|v| v.is_u64()) {
        return Err(DecodeError::BadVersion(format!(
            "`version` must be an unsigned integer, got {}",
            value
                .get("version")
                .map_or("nothing".to_string(), Value::to_string)
        )));
    }
    let ev: ChangeEvent =
        serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let version = match (ev.op, &ev.snapshot) {
        (Operation::SnapshotEnd, Some(s)) => s.version,
        (Operation::SnapshotEnd, None) => {
            return Err(DecodeError::BadVersion(
                "snapshot_end without `snapshot.version`".into(),
            ))
        }
        _ => ev.version,
    };
    if version == 0 || version > MAX_ES_VERSION {
        return Err(DecodeError::BadVersion(format!(
            "{version} is outside 1..2^63-1"
        )));
    }
    if !ev.op.is_marker() && ev.id().is_none_or(Value::is_null) {
        return Err(DecodeError::MissingId);
    }
    Ok(SourceEvent {
        op: ev.op,
        ns: ev.ns,
        key: ev.key,
        doc: ev.doc.filter(|d| !d.is_null()),
        version: Version::from_u64(version),
        cluster_time: ev.cluster_time,
        format: Format::Native,
    })
}

fn decode_connector(mut map: serde_json::Map<String, Value>) -> Result<SourceEvent, DecodeError> {
    let op_name = map
        .get("operationType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let op = match op_name.as_str() {
        "insert" => Operation::Insert,
        "update" => Operation::Update,
        "replace" => Operation::Replace,
        "delete" => Operation::Delete,
        _ => return Err(DecodeError::UnknownOperation(op_name)),
    };
    let (t, i) = map
        .get("clusterTime")
        .and_then(|c| c.get("$timestamp"))
        .and_then(|ts| Some((ts.get("t")?.as_u64()?, ts.get("i")?.as_u64()?)))
        .ok_or_else(|| {
            DecodeError::BadVersion("`clusterTime` must be {\"$timestamp\": {\"t\", \"i\"}}".into())
        })?;
    let t = u32::try_from(t).map_err(|_| DecodeError::BadVersion(format!("t = {t} too large")))?;
    let i = u32::try_from(i).map_err(|_| DecodeError::BadVersion(format!("i = {i} too large")))?;
    let version =
        Version::from_cluster_time(t, i).map_err(|e| DecodeError::BadVersion(e.to_string()))?;
    let ns = map
        .get("ns")
        .and_then(|ns| {
            Some(Namespace {
                db: ns.get("db")?.as_str()?.to_string(),
                coll: ns.get("coll")?.as_str()?.to_string(),
            })
        })
        .ok_or_else(|| DecodeError::Invalid("`ns` must be {\"db\", \"coll\"}".into()))?;
    let key = map.remove("documentKey").unwrap_or(Value::Null);
    if key.get("_id").is_none_or(Value::is_null) {
        return Err(DecodeError::MissingId);
    }
    let doc = map.remove("fullDocument").filter(|d| !d.is_null());
    if matches!(op, Operation::Insert | Operation::Replace) && doc.is_none() {
        return Err(DecodeError::Invalid(format!(
            "{op_name} without `fullDocument`"
        )));
    }
    Ok(SourceEvent {
        op,
        ns,
        key,
        doc,
        version,
        cluster_time: ClusterTime { t, i },
        format: Format::Connector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn native(op: &str) -> Value {
        json!({
            "schema": SCHEMA, "op": op,
            "ns": {"db": "mountain", "coll": "card"},
            "key": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}},
            "doc": {"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "한라산"},
            "cluster_time": {"t": 1_700_000_000u32, "i": 3},
            "version": 1_825_361_100_800_000_003u64
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
        assert_eq!(ev.version.as_u64(), 1_825_361_100_800_000_003);
        assert_eq!(ev.format, Format::Native);
        assert_eq!(ev.doc.unwrap()["title"], "한라산");
    }

    #[test]
    fn native_update_with_null_doc_has_no_doc() {
        let mut v = native("update");
        v["doc"] = Value::Null;
        assert_eq!(decode(Some(&bytes(&v))).unwrap().doc, None);
    }

    #[test]
    fn snapshot_end_takes_the_snapshot_version() {
        let v = json!({
            "schema": SCHEMA, "op": "snapshot_end",
            "ns": {"db": "mountain", "coll": "card"}, "key": null,
            "cluster_time": {"t": 1, "i": 0}, "version": 5,
            "snapshot": {"id": "s1", "version": 42}
        });
        let ev = decode(Some(&bytes(&v))).unwrap();
        assert_eq!(ev.op, Operation::SnapshotEnd);
        assert_eq!(ev.version.as_u64(), 42);
        let mut v = v;
        v.as_object_mut().unwrap().remove("snapshot");
        assert_eq!(decode(Some(&bytes(&v))).unwrap_err().kind(), "bad_version");
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
        assert_eq!(
            raw.version,
            Version::from_cluster_time(1_700_000_000, 7).unwrap()
        );
        assert_eq!(
            raw.key,
            json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}})
        );
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
        c["clusterTime"] = json!({"$timestamp": {"t": 1, "i": 1u64 << 31}});
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
