//! es-sync's dead-letter topic (default `{prefix}.dlq.sync`): the headers
//! it adds to a dead-lettered record, the pointer that replaces a record
//! too large to be copied whole (schema [`POINTER_SCHEMA`]), and the mark
//! `es-sync dlq replay` writes once it re-drove a record (schema
//! [`REDRIVEN_SCHEMA`]). Documented in `docs/sync.md` ("Dead-letter
//! topic").
//!
//! A dead-lettered record is one of:
//!
//! - a **copy**: the original key, value and headers, unchanged, plus the
//!   [`headers`] below;
//! - a **pointer** (header [`headers::POINTER`]): when the copy would be
//!   over the dead-letter topic's `max.message.bytes`, a small JSON
//!   [`DlqPointer`] naming where the original is (topic, partition,
//!   offset), its key, size and why; same added headers, not the original
//!   ones (they stay with the original record);
//! - a **re-driven mark** (header [`headers::REDRIVEN`], no dead letter):
//!   a [`Redriven`] written by `es-sync dlq replay` in the same Kafka
//!   transaction as the re-driven record, so no run re-drives it again.

use serde::{Deserialize, Serialize};

/// Schema of a pointer's value (and value of its [`headers::POINTER`]).
pub const POINTER_SCHEMA: &str = "es-sync.dlq-pointer.v1";
/// Schema of a re-driven mark's value (and value of its
/// [`headers::REDRIVEN`]).
pub const REDRIVEN_SCHEMA: &str = "es-sync.dlq-redriven.v1";

/// Header names of the dead-letter topic.
pub mod headers {
    /// Error type (`not_json`, `mapper_parsing_exception`, ...).
    pub const ERROR_TYPE: &str = "dlq.error.type";
    /// Human-readable reason.
    pub const ERROR_REASON: &str = "dlq.error.reason";
    /// Source topic.
    pub const TOPIC: &str = "dlq.source.topic";
    /// Source partition, decimal.
    pub const PARTITION: &str = "dlq.source.partition";
    /// Source offset, decimal.
    pub const OFFSET: &str = "dlq.source.offset";
    /// Source record timestamp (ms since the epoch), when known.
    pub const TIMESTAMP: &str = "dlq.source.timestamp";
    /// Target index or alias, when known.
    pub const INDEX: &str = "dlq.index";
    /// Time of dead-lettering, ms since the epoch.
    pub const FAILED_AT: &str = "dlq.failed_at";
    /// Present on a pointer, value [`super::POINTER_SCHEMA`].
    pub const POINTER: &str = "dlq.pointer";
    /// Present on a re-driven mark, value [`super::REDRIVEN_SCHEMA`].
    pub const REDRIVEN: &str = "dlq.redriven";
    /// Added to a record re-driven to its topic: `{dlq topic}/{partition}/{offset}`
    /// of the dead letter it came from.
    pub const REDRIVEN_FROM: &str = "dlq.redriven.from";
    /// Prefix of every header this module adds (stripped when re-driving).
    pub const PREFIX: &str = "dlq.";
}

/// The value of a pointer record: a dead letter too large to be copied
/// whole, named by where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqPointer {
    /// [`POINTER_SCHEMA`].
    pub schema: String,
    /// Topic of the original record.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key as text when it is UTF-8 (every key `mongo-source` and the
    /// MongoDB Kafka Connector write); `None` for a record without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its key in hexadecimal when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hex: Option<String>,
    /// Its Kafka timestamp (ms since the epoch), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Bytes its dead-letter copy would have taken (as the broker counts a
    /// record, see [`super::record_size`]).
    pub size: u64,
    /// The dead-letter topic's limit it was over (`max.message.bytes`).
    pub limit: u64,
    /// Where that limit was read (`topic live.dlq.sync max.message.bytes`, ...).
    pub limit_source: String,
    /// Why the record was dead-lettered: error type (as the header).
    pub error_type: String,
    /// Why: the reason (as the header).
    pub reason: String,
    /// Target index or alias, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

impl DlqPointer {
    /// Stores `key` in [`Self::key`] or [`Self::key_hex`].
    pub fn set_key(&mut self, key: Option<&[u8]>) {
        self.key = None;
        self.key_hex = None;
        if let Some(k) = key {
            match std::str::from_utf8(k) {
                Ok(s) => self.key = Some(s.to_string()),
                Err(_) => self.key_hex = Some(hex::encode(k)),
            }
        }
    }

    /// The original key bytes (`None` for a record without a key, or a
    /// `key_hex` that is not hexadecimal).
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        match (&self.key, &self.key_hex) {
            (Some(k), _) => Some(k.as_bytes().to_vec()),
            (None, Some(h)) => hex::decode(h).ok(),
            (None, None) => None,
        }
    }

    /// Parses a pointer value, refusing another schema.
    pub fn from_json(value: &[u8]) -> Result<Self, String> {
        let p: Self =
            serde_json::from_slice(value).map_err(|e| format!("not a dead-letter pointer: {e}"))?;
        if p.schema != POINTER_SCHEMA {
            return Err(format!("schema `{}` is not `{POINTER_SCHEMA}`", p.schema));
        }
        Ok(p)
    }
}

/// The value of a re-driven mark: dead letter `partition`/`offset` of the
/// dead-letter topic was produced back to `topic`/`to_partition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    /// [`REDRIVEN_SCHEMA`].
    pub schema: String,
    /// Partition of the dead letter in the dead-letter topic.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The topic it was re-driven to (its original topic).
    pub topic: String,
    /// The partition it was re-driven to (its original partition).
    pub to_partition: i32,
    /// Its error type.
    pub error_type: String,
    /// When, ms since the epoch.
    pub redriven_at: i64,
}

impl Redriven {
    /// Parses a mark, refusing another schema.
    pub fn from_json(value: &[u8]) -> Result<Self, String> {
        let r: Self =
            serde_json::from_slice(value).map_err(|e| format!("not a re-driven mark: {e}"))?;
        if r.schema != REDRIVEN_SCHEMA {
            return Err(format!("schema `{}` is not `{REDRIVEN_SCHEMA}`", r.schema));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointer() -> DlqPointer {
        let mut p = DlqPointer {
            schema: POINTER_SCHEMA.into(),
            topic: "live.mountain.card".into(),
            partition: 3,
            offset: 1207,
            key: None,
            key_hex: None,
            timestamp: Some(1_700_000_000_123),
            size: 1_049_180,
            limit: 1_048_588,
            limit_source: "topic live.dlq.sync max.message.bytes".into(),
            error_type: "mapper_parsing_exception".into(),
            reason: "failed to parse field [likes] of type [integer]".into(),
            index: Some("cards".into()),
        };
        p.set_key(Some(br#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#));
        p
    }

    #[test]
    fn a_pointer_round_trips_through_json() {
        let p = pointer();
        let bytes = serde_json::to_vec(&p).unwrap();
        assert_eq!(DlqPointer::from_json(&bytes).unwrap(), p);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema"], json!("es-sync.dlq-pointer.v1"));
        assert_eq!(v["key"], json!(r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#));
        assert!(
            v.get("key_hex").is_none(),
            "absent fields are left out: {v}"
        );
        assert_eq!(
            p.key_bytes().unwrap(),
            br#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#
        );
    }

    #[test]
    fn a_key_that_is_not_utf8_is_kept_in_hex() {
        let mut p = pointer();
        p.set_key(Some(&[0xff, 0x00, 0x41]));
        assert_eq!(p.key, None);
        assert_eq!(p.key_hex.as_deref(), Some("ff0041"));
        let back = DlqPointer::from_json(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back.key_bytes().unwrap(), vec![0xff, 0x00, 0x41]);
        p.set_key(None);
        assert_eq!(p.key_bytes(), None);
    }

    #[test]
    fn another_schema_is_refused_with_its_name() {
        let mut v = serde_json::to_value(pointer()).unwrap();
        v["schema"] = json!("mongo-source.dlq.v1");
        let e = DlqPointer::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("mongo-source.dlq.v1"), "{e}");
        assert!(DlqPointer::from_json(b"garbage").is_err());
    }

    #[test]
    fn a_redriven_mark_round_trips_through_json() {
        let r = Redriven {
            schema: REDRIVEN_SCHEMA.into(),
            partition: 0,
            offset: 17,
            topic: "live.mountain.card".into(),
            to_partition: 3,
            error_type: "mapper_parsing_exception".into(),
            redriven_at: 1_700_000_100_000,
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(Redriven::from_json(&bytes).unwrap(), r);
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["schema"] = json!(POINTER_SCHEMA);
        assert!(Redriven::from_json(v.to_string().as_bytes()).is_err());
    }
}
