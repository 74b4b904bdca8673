//! The change event envelope that `mongo-source` writes to Kafka and
//! `es-sync` reads (schema `mongo-source.change.v1`, described with examples
//! in `docs/events.md`). Built from a change-stream document by
//! [`super::change_stream`], versioned by [`super::version`].
//!
//! - Kafka key: the canonical Extended JSON of the document `_id`
//!   ([`crate::ejson::canonical_key`]), so one document always lands in one
//!   partition and its changes stay in order.
//! - Kafka value: a [`ChangeEvent`] as JSON; documents inside it are relaxed
//!   Extended JSON ([`crate::ejson`]), lossless for every BSON type.
//! - Kafka headers: [`HEADER_OP`], [`HEADER_VERSION`], [`HEADER_SCHEMA`].

use super::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `schema` field of every event this version writes.
pub const SCHEMA: &str = "mongo-source.change.v1";
/// Kafka header with the operation (`insert`, `update`, ...).
pub const HEADER_OP: &str = "op";
/// Kafka header with the version, as decimal digits.
pub const HEADER_VERSION: &str = "version";
/// Kafka header with the schema name.
pub const HEADER_SCHEMA: &str = "schema";

/// What happened to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A new document; `doc` holds it.
    Insert,
    /// Some fields changed; `update` says which, `doc` holds the whole
    /// document as looked up after the change (`null` if it was deleted
    /// again before the lookup).
    Update,
    /// The document was replaced; `doc` holds the new one.
    Replace,
    /// The document was deleted; `doc` is absent.
    Delete,
    /// A copy of an existing document made by a snapshot; `doc` holds it.
    Snapshot,
    /// Marker: a snapshot of the collection begins (no document).
    SnapshotStart,
    /// Marker: a snapshot of the collection is complete: every document that
    /// exists was sent with a version >= the snapshot version, so anything
    /// older downstream was deleted meanwhile.
    SnapshotEnd,
}

impl Operation {
    /// The name used in the JSON and the Kafka header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Delete => "delete",
            Self::Snapshot => "snapshot",
            Self::SnapshotStart => "snapshot_start",
            Self::SnapshotEnd => "snapshot_end",
        }
    }

    /// All operations, for metrics and documentation.
    pub const ALL: [Operation; 7] = [
        Self::Insert,
        Self::Update,
        Self::Replace,
        Self::Delete,
        Self::Snapshot,
        Self::SnapshotStart,
        Self::SnapshotEnd,
    ];

    /// Whether this event is a snapshot marker rather than a document change.
    pub fn is_marker(self) -> bool {
        matches!(self, Self::SnapshotStart | Self::SnapshotEnd)
    }

    /// What a change stream's `operationType` means: the one mapping both
    /// `mongo-source` and `es-sync` (reading the MongoDB Kafka Connector's
    /// records) use.
    pub fn from_operation_type(op_type: &str) -> OperationType {
        match op_type {
            "insert" => OperationType::Change(Self::Insert),
            "update" => OperationType::Change(Self::Update),
            "replace" => OperationType::Change(Self::Replace),
            "delete" => OperationType::Change(Self::Delete),
            "drop" | "rename" | "dropDatabase" => OperationType::CollectionGone,
            "invalidate" => OperationType::Invalidate,
            _ => OperationType::Other,
        }
    }
}

/// The meaning of a change stream `operationType`
/// ([`Operation::from_operation_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationType {
    /// A change of one document.
    Change(Operation),
    /// The collection was dropped or renamed away (`drop`, `rename`,
    /// `dropDatabase`).
    CollectionGone,
    /// The stream was invalidated.
    Invalidate,
    /// Anything else (DDL events): no meaning for the index.
    Other,
}

/// Database and collection of a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Namespace {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub coll: String,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// A MongoDB cluster time (BSON timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterTime {
    /// Seconds since the Unix epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

/// The `updateDescription` of an update, in Extended JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UpdateDescription {
    /// Fields set, by dotted path.
    #[serde(default)]
    pub updated_fields: Map<String, Value>,
    /// Fields removed, by dotted path.
    #[serde(default)]
    pub removed_fields: Vec<String>,
    /// Arrays truncated (`{"field": path, "newSize": n}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_arrays: Vec<Value>,
    /// For a path of `updated_fields`/`removed_fields` whose segments are
    /// ambiguous (a field name with a dot, or made of digits), its segments
    /// spelled out: strings are field names, numbers array indexes
    /// (MongoDB 6.1+ `disambiguatedPaths`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub disambiguated_paths: Map<String, Value>,
}

/// Transaction a change belonged to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnInfo {
    /// Logical session id, Extended JSON.
    pub lsid: Value,
    /// Transaction number within the session.
    pub txn_number: i64,
    /// Rank of this change among the changes of the same document in this
    /// transaction (0 for the first): the `n` of the version layout
    /// ([`super::version`]). Absent (0) in events written before issue 14.
    #[serde(default)]
    pub rank: u32,
}

/// Snapshot a record or marker belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Identifier of this snapshot run (unique per run).
    pub id: String,
    /// The snapshot version: the cluster time read before the copy began.
    pub version: u64,
}

/// One change of one document, or a snapshot marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Always [`SCHEMA`] for this layout.
    pub schema: String,
    /// What happened.
    pub op: Operation,
    /// Where it happened.
    pub ns: Namespace,
    /// The document key (`{"_id": ...}`, plus the shard key on a sharded
    /// collection), Extended JSON. `null` for markers.
    pub key: Value,
    /// The full document, Extended JSON, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
    /// For updates: which fields changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateDescription>,
    /// The document before the change (`fullDocumentBeforeChange`), when
    /// the change stream was asked for pre-images and had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Cluster time of the change (for snapshot records: of the snapshot).
    pub cluster_time: ClusterTime,
    /// Wall-clock time of the change on the server, ISO-8601, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
    /// The version ([`Version`]): strictly increasing per document in
    /// commit order.
    pub version: u64,
    /// Transaction info when the change was part of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnInfo>,
    /// Snapshot info for snapshot records and markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
}

impl ChangeEvent {
    /// The `_id` of the document, Extended JSON (absent for markers).
    pub fn id(&self) -> Option<&Value> {
        self.key.get("_id")
    }

    /// Gives this change rank `n` inside its transaction and the version
    /// that goes with it; `true` when the cluster time's increment or the
    /// rank had to be clamped ([`Version::saturating`]).
    pub fn set_rank(&mut self, n: u32) -> bool {
        rank_into(self.cluster_time, &mut self.version, self.txn.as_mut(), n)
    }

    /// Whether `version` is what a source writes for this event's cluster
    /// time (see [`Version::matches_cluster_time`]); for markers and
    /// snapshot records, the snapshot version must match too.
    pub fn version_is_consistent(&self) -> bool {
        let ct = self.cluster_time;
        let own = Version::from_u64(self.version).matches_cluster_time(ct.t, ct.i);
        let snapshot = self
            .snapshot
            .as_ref()
            .is_none_or(|s| Version::from_u64(s.version).matches_cluster_time(ct.t, ct.i));
        own && snapshot
    }
}

/// A change the source ranks inside its transaction: a [`ChangeEvent`], or
/// one read by the fast path ([`super::change_stream::RawChange`]).
pub trait Ranked {
    /// Its cluster time.
    fn cluster_time(&self) -> ClusterTime;
    /// Its transaction, if any.
    fn txn(&self) -> Option<&TxnInfo>;
    /// Gives it rank `n` (see [`ChangeEvent::set_rank`]).
    fn set_rank(&mut self, n: u32) -> bool;
}

impl Ranked for ChangeEvent {
    fn cluster_time(&self) -> ClusterTime {
        self.cluster_time
    }
    fn txn(&self) -> Option<&TxnInfo> {
        self.txn.as_ref()
    }
    fn set_rank(&mut self, n: u32) -> bool {
        ChangeEvent::set_rank(self, n)
    }
}

/// Rank `n` for a change at `ct`: its version into `version`, the rank into
/// `txn`; `true` when clamped ([`Version::saturating`]).
pub(crate) fn rank_into(
    ct: ClusterTime,
    version: &mut u64,
    txn: Option<&mut TxnInfo>,
    n: u32,
) -> bool {
    let (v, clamped) = Version::saturating(ct.t, ct.i, n);
    *version = v.as_u64();
    if let Some(txn) = txn {
        txn.rank = n.min(super::version::MAX_RANK);
    }
    clamped
}

/// Topic name for a collection: `{prefix}.{db}.{collection}`.
pub fn default_topic(prefix: &str, ns: &Namespace) -> String {
    format!("{prefix}.{}.{}", ns.db, ns.coll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_round_trips_through_json() {
        let ev = ChangeEvent {
            schema: SCHEMA.into(),
            op: Operation::Update,
            ns: Namespace {
                db: "mountain".into(),
                coll: "card".into(),
            },
            key: json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}}),
            doc: Some(json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "한라산"})),
            update: Some(UpdateDescription {
                updated_fields: json!({"title": "한라산"}).as_object().unwrap().clone(),
                removed_fields: vec!["old".into()],
                truncated_arrays: vec![],
                disambiguated_paths: Map::new(),
            }),
            before: None,
            cluster_time: ClusterTime {
                t: 1_700_000_000,
                i: 3,
            },
            wall_time: Some("2023-11-14T22:13:20.000Z".into()),
            version: 1_825_361_100_800_000_003,
            txn: None,
            snapshot: None,
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(r#""op":"update""#));
        assert!(!text.contains("txn"));
        let back: ChangeEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
        assert_eq!(
            back.id(),
            Some(&json!({"$oid": "65a1b2c3d4e5f60718293a4b"}))
        );
    }

    #[test]
    fn operation_names_match_serde() {
        for op in Operation::ALL {
            assert_eq!(serde_json::to_value(op).unwrap(), json!(op.as_str()));
        }
    }

    #[test]
    fn topic_follows_prefix_db_collection() {
        let ns = Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        };
        assert_eq!(default_topic("live", &ns), "live.mountain.card");
    }
}
