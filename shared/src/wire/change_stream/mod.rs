//! Change events from MongoDB: one change-stream document into a
//! [`ChangeEvent`], and the events a snapshot writes (copies and markers).
//! Pure functions, no I/O; `mongo-source` calls them, `es-sync`'s verifier
//! builds the same snapshot records with them.
//!
//! The version of a change is made here for rank 0; the source gives
//! changes inside a transaction their rank afterwards
//! ([`ChangeEvent::set_rank`]), since only it sees the changes before.

use super::event::{
    ChangeEvent, ClusterTime, Namespace, Operation, OperationType, SnapshotInfo, TxnInfo,
    UpdateDescription, SCHEMA,
};
use super::version::Version;
use crate::ejson::{bson_to_json, canonical_key, document_to_json};
use mongodb::bson::{Bson, Document, RawDocument, Timestamp};

mod raw;
pub use raw::{decode_raw, write_snapshot_record, RawChange};

/// A change-stream document that cannot be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadChange(pub String);

/// What a change-stream document means for the stream.
#[derive(Debug)]
pub enum Decoded {
    /// A document change to produce, with its Kafka key.
    Change {
        /// Canonical Extended JSON of `_id`.
        key: String,
        /// The event, versioned for rank 0.
        event: Box<ChangeEvent>,
    },
    /// The collection was dropped or renamed away: every document is gone
    /// as of `cluster_time` (the stream will be invalidated next).
    CollectionGone {
        /// `drop`, `rename` or `dropDatabase`.
        op: String,
        /// When.
        cluster_time: Timestamp,
    },
    /// The stream was invalidated; reopen it with `startAfter`.
    Invalidate,
    /// An event type without meaning for the search index (DDL events).
    Ignored(String),
}

/// Reads a raw change event. Invalid UTF-8 in its strings (which mongod
/// stores as given) is replaced by U+FFFD rather than making the event
/// unreadable, which would stop the stream on it forever; the flag says
/// whether that happened.
pub fn read_raw(raw: &RawDocument) -> Result<(Document, bool), BadChange> {
    match Document::try_from(raw) {
        Ok(d) => Ok((d, false)),
        Err(_) => mongodb::bson::from_slice::<
            mongodb::bson::serde_helpers::Utf8LossyDeserialization<Document>,
        >(raw.as_bytes())
        .map(|d| (d.0, true))
        .map_err(|e| BadChange(format!("unreadable change event: {e}"))),
    }
}

/// Decodes one change-stream document of namespace `ns`.
pub fn decode(raw: &Document, ns: &Namespace) -> Result<Decoded, BadChange> {
    let op_type = raw
        .get_str("operationType")
        .map_err(|_| BadChange("no operationType".into()))?;
    let op = match Operation::from_operation_type(op_type) {
        OperationType::Change(op) => op,
        OperationType::CollectionGone => {
            return Ok(Decoded::CollectionGone {
                op: op_type.to_string(),
                cluster_time: cluster_time_of(raw)?,
            });
        }
        OperationType::Invalidate => return Ok(Decoded::Invalidate),
        OperationType::Other => return Ok(Decoded::Ignored(op_type.to_string())),
    };
    let ts = cluster_time_of(raw)?;
    let key_doc = raw
        .get_document("documentKey")
        .map_err(|_| BadChange(format!("{op_type} event without documentKey")))?;
    let id = key_doc
        .get("_id")
        .ok_or_else(|| BadChange(format!("{op_type} event without documentKey._id")))?;
    let event_ns = match raw.get_document("ns") {
        Ok(n) => Namespace {
            db: n.get_str("db").unwrap_or(&ns.db).to_string(),
            coll: n.get_str("coll").unwrap_or(&ns.coll).to_string(),
        },
        Err(_) => ns.clone(),
    };
    let doc = match raw.get("fullDocument") {
        Some(Bson::Document(d)) if op != Operation::Delete => Some(document_to_json(d)),
        _ => None,
    };
    let before = match raw.get("fullDocumentBeforeChange") {
        Some(Bson::Document(d)) => Some(document_to_json(d)),
        _ => None,
    };
    let update = match (op, raw.get_document("updateDescription")) {
        (Operation::Update, Ok(u)) => Some(update_description(u)),
        _ => None,
    };
    let wall_time = match raw.get("wallTime") {
        Some(Bson::DateTime(dt)) => dt.try_to_rfc3339_string().ok(),
        _ => None,
    };
    let txn = match (raw.get("lsid"), raw.get("txnNumber")) {
        (Some(lsid), Some(n)) => Some(TxnInfo {
            lsid: bson_to_json(lsid),
            txn_number: match n {
                Bson::Int64(n) => *n,
                Bson::Int32(n) => i64::from(*n),
                _ => 0,
            },
            rank: 0,
        }),
        _ => None,
    };
    Ok(Decoded::Change {
        key: canonical_key(id),
        event: Box::new(ChangeEvent {
            schema: SCHEMA.into(),
            op,
            ns: event_ns,
            key: document_to_json(key_doc),
            doc,
            update,
            before,
            cluster_time: ClusterTime {
                t: ts.time,
                i: ts.increment,
            },
            wall_time,
            version: Version::of_cluster_time(ts.time, ts.increment).as_u64(),
            txn,
            snapshot: None,
        }),
    })
}

fn cluster_time_of(raw: &Document) -> Result<Timestamp, BadChange> {
    raw.get_timestamp("clusterTime")
        .map_err(|_| BadChange("change event without clusterTime".into()))
}

fn update_description(u: &Document) -> UpdateDescription {
    let updated_fields = match u.get_document("updatedFields") {
        Ok(d) => d
            .iter()
            .map(|(k, v)| (k.clone(), bson_to_json(v)))
            .collect(),
        Err(_) => Default::default(),
    };
    let removed_fields = match u.get_array("removedFields") {
        Ok(a) => a
            .iter()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect(),
        Err(_) => vec![],
    };
    let truncated_arrays = match u.get_array("truncatedArrays") {
        Ok(a) => a.iter().map(bson_to_json).collect(),
        Err(_) => vec![],
    };
    let disambiguated_paths = match u.get_document("disambiguatedPaths") {
        Ok(d) => d
            .iter()
            .map(|(k, v)| (k.clone(), bson_to_json(v)))
            .collect(),
        Err(_) => Default::default(),
    };
    UpdateDescription {
        updated_fields,
        removed_fields,
        truncated_arrays,
        disambiguated_paths,
    }
}

/// A snapshot copy of an existing document (version: the snapshot's).
pub fn snapshot_record(
    doc: &Document,
    ns: &Namespace,
    snapshot: &SnapshotInfo,
) -> Result<(String, ChangeEvent), BadChange> {
    let id = doc
        .get("_id")
        .ok_or_else(|| BadChange("document without _id".into()))?;
    let (t, i) = Version::from_u64(snapshot.version).cluster_time();
    Ok((
        canonical_key(id),
        ChangeEvent {
            schema: SCHEMA.into(),
            op: Operation::Snapshot,
            ns: ns.clone(),
            key: serde_json::json!({ "_id": bson_to_json(id) }),
            doc: Some(document_to_json(doc)),
            update: None,
            before: None,
            cluster_time: ClusterTime { t, i },
            wall_time: None,
            version: snapshot.version,
            txn: None,
            snapshot: Some(snapshot.clone()),
        },
    ))
}

/// A delete of the document with `_id` `id` at `version` (written by
/// `es-sync verify --repair` for a document the index holds and MongoDB
/// does not).
pub fn delete_event(ns: &Namespace, id: &Bson, version: u64) -> ChangeEvent {
    let (t, i) = Version::from_u64(version).cluster_time();
    ChangeEvent {
        schema: SCHEMA.into(),
        op: Operation::Delete,
        ns: ns.clone(),
        key: serde_json::json!({ "_id": bson_to_json(id) }),
        doc: None,
        update: None,
        before: None,
        cluster_time: ClusterTime { t, i },
        wall_time: None,
        version,
        txn: None,
        snapshot: None,
    }
}

/// A snapshot start or end marker (no key; written to every partition).
pub fn marker(op: Operation, ns: &Namespace, snapshot: &SnapshotInfo) -> ChangeEvent {
    let (t, i) = Version::from_u64(snapshot.version).cluster_time();
    ChangeEvent {
        schema: SCHEMA.into(),
        op,
        ns: ns.clone(),
        key: serde_json::Value::Null,
        doc: None,
        update: None,
        before: None,
        cluster_time: ClusterTime { t, i },
        wall_time: None,
        version: snapshot.version,
        txn: None,
        snapshot: Some(snapshot.clone()),
    }
}

/// The snapshot of a collection that is gone (dropped or renamed away) at
/// `cluster_time`: an empty snapshot versioned there, so the sink removes
/// every document older than it.
pub fn collection_gone_snapshot(op: &str, ts: Timestamp) -> SnapshotInfo {
    SnapshotInfo {
        id: format!("{op}-{}-{}", ts.time, ts.increment),
        version: Version::of_cluster_time(ts.time, ts.increment).as_u64(),
    }
}

/// The snapshot version of a copy whose change stream starts at cluster
/// time `ts` (inclusive): the version of the cluster time one tick before
/// `ts`, so that every change the stream delivers, the one at exactly `ts`
/// included, is newer than every copy.
///
/// `ts` is the operation time the server reported before the copy began.
/// On mongod that is the last applied operation, whose result the copy
/// holds; but a write whose time was already given out may still be
/// committing when the copy reads (found on the bench's SecantusDB under
/// load: the read reported time `ts`, did not see the delete that got
/// `ts`). With the copy versioned at `ts` itself, that change arrived with
/// the copy's version, Elasticsearch refused it as a version conflict and
/// the deleted document stayed searchable. One tick lower, the change at
/// `ts` always wins, and a change at `ts` whose result the copy already
/// holds is applied again harmlessly. (Nothing can happen between the two
/// ticks: no operation has a cluster time between them.)
pub fn snapshot_version(ts: Timestamp) -> u64 {
    let (t, i) = tick_before(ts.time, ts.increment);
    Version::of_cluster_time(t, i).as_u64()
}

/// The cluster time one tick before `(t, i)` (increments start at 1; `i` 0
/// goes back to the previous second's largest increment).
fn tick_before(t: u32, i: u32) -> (u32, u32) {
    match i {
        0 => (t.saturating_sub(1), crate::wire::version::MAX_INCREMENT),
        i => (t, i.min(crate::wire::version::MAX_INCREMENT) - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId};

    /// The namespace of the tests here and in `raw`.
    pub(super) fn ns() -> Namespace {
        Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        }
    }

    fn ts(t: u32, i: u32) -> Timestamp {
        Timestamp {
            time: t,
            increment: i,
        }
    }

    #[test]
    fn insert_becomes_event_with_key_and_version() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let raw = doc! {
            "_id": { "_data": "token" },
            "operationType": "insert",
            "clusterTime": ts(1_700_000_000, 7),
            "wallTime": mongodb::bson::DateTime::from_millis(1_700_000_000_123),
            "ns": { "db": "mountain", "coll": "card" },
            "documentKey": { "_id": oid },
            "fullDocument": { "_id": oid, "title": "설악산 단풍", "likes": 3_i32 },
        };
        let Decoded::Change { key, event } = decode(&raw, &ns()).unwrap() else {
            panic!()
        };
        assert_eq!(key, r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#);
        assert_eq!(event.op, Operation::Insert);
        assert_eq!(
            event.version,
            Version::of_cluster_time(1_700_000_000, 7).as_u64()
        );
        assert_eq!(event.doc.as_ref().unwrap()["title"], "설악산 단풍");
        assert_eq!(event.wall_time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert!(event.txn.is_none());
    }

    #[test]
    fn update_keeps_description_and_txn() {
        let raw = doc! {
            "_id": { "_data": "token" },
            "operationType": "update",
            "clusterTime": ts(1_700_000_001, 1),
            "documentKey": { "_id": "c1" },
            "updateDescription": {
                "updatedFields": { "title": "new", "tags.1": "x" },
                "removedFields": ["old"],
                "truncatedArrays": [{ "field": "tags", "newSize": 2_i32 }],
            },
            "fullDocument": { "_id": "c1", "title": "new" },
            "lsid": { "id": "session" },
            "txnNumber": 5_i64,
        };
        let Decoded::Change { key, event } = decode(&raw, &ns()).unwrap() else {
            panic!()
        };
        assert_eq!(key, r#""c1""#);
        let u = event.update.unwrap();
        assert_eq!(u.updated_fields["tags.1"], "x");
        assert_eq!(u.removed_fields, vec!["old".to_string()]);
        assert_eq!(u.truncated_arrays.len(), 1);
        assert_eq!(event.txn.unwrap().txn_number, 5);
    }

    #[test]
    fn delete_has_no_document() {
        let raw = doc! {
            "_id": { "_data": "t" }, "operationType": "delete",
            "clusterTime": ts(5, 1), "documentKey": { "_id": 9_i64 },
        };
        let Decoded::Change { key, event } = decode(&raw, &ns()).unwrap() else {
            panic!()
        };
        assert_eq!(key, r#"{"$numberLong":"9"}"#);
        assert_eq!(event.op, Operation::Delete);
        assert!(event.doc.is_none());
    }

    #[test]
    fn drop_and_invalidate_and_ddl() {
        let drop = doc! { "_id": {}, "operationType": "drop", "clusterTime": ts(9, 2) };
        assert!(matches!(
            decode(&drop, &ns()).unwrap(),
            Decoded::CollectionGone { .. }
        ));
        let inv = doc! { "_id": {}, "operationType": "invalidate", "clusterTime": ts(9, 3) };
        assert!(matches!(decode(&inv, &ns()).unwrap(), Decoded::Invalidate));
        let ddl = doc! { "_id": {}, "operationType": "createIndexes", "clusterTime": ts(9, 4) };
        assert!(matches!(decode(&ddl, &ns()).unwrap(), Decoded::Ignored(_)));
    }

    #[test]
    fn malformed_events_are_errors_not_panics() {
        let no_key = doc! { "operationType": "insert", "clusterTime": ts(1, 1) };
        assert!(decode(&no_key, &ns())
            .unwrap_err()
            .to_string()
            .contains("documentKey"));
        let no_time = doc! { "operationType": "insert", "documentKey": { "_id": 1_i32 } };
        assert!(decode(&no_time, &ns())
            .unwrap_err()
            .to_string()
            .contains("clusterTime"));
        assert!(decode(&doc! {}, &ns()).is_err());
    }

    /// A change event whose `fullDocument.body` holds bytes that are not UTF-8.
    fn raw_with_invalid_utf8() -> mongodb::bson::RawDocumentBuf {
        fn doc_bytes(elements: &[u8]) -> Vec<u8> {
            let mut d = ((elements.len() + 5) as i32).to_le_bytes().to_vec();
            d.extend_from_slice(elements);
            d.push(0);
            d
        }
        fn string(name: &str, s: &[u8]) -> Vec<u8> {
            let mut e = vec![0x02];
            e.extend_from_slice(name.as_bytes());
            e.push(0);
            e.extend_from_slice(&((s.len() + 1) as i32).to_le_bytes());
            e.extend_from_slice(s);
            e.push(0);
            e
        }
        fn subdoc(name: &str, body: &[u8]) -> Vec<u8> {
            let mut e = vec![0x03];
            e.extend_from_slice(name.as_bytes());
            e.push(0);
            e.extend_from_slice(&doc_bytes(body));
            e
        }
        let mut full = string("_id", b"u1");
        full.extend(string("body", b"ok \xff\xfe bad"));
        let mut ev = string("operationType", b"insert");
        ev.extend(vec![0x11]);
        ev.extend_from_slice(b"clusterTime\0");
        ev.extend_from_slice(&1u32.to_le_bytes());
        ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        ev.extend(subdoc("documentKey", &string("_id", b"u1")));
        ev.extend(subdoc("fullDocument", &full));
        mongodb::bson::RawDocumentBuf::from_bytes(doc_bytes(&ev)).unwrap()
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let raw = raw_with_invalid_utf8();
        assert!(
            raw.to_document().is_err(),
            "the fixture really holds invalid UTF-8"
        );
        let (doc, lossy) = read_raw(&raw).unwrap();
        assert!(lossy);
        let Decoded::Change { event, .. } = decode(&doc, &ns()).unwrap() else {
            panic!()
        };
        assert_eq!(event.doc.unwrap()["body"], "ok \u{fffd}\u{fffd} bad");
        assert_eq!(
            event.cluster_time,
            ClusterTime {
                t: 1_700_000_000,
                i: 1
            }
        );
    }

    /// The copy loses to every change its stream delivers, the one at the
    /// stream's very start included (issue 15 fault suite: a delete at that
    /// time was refused as a version conflict and the document stayed).
    #[test]
    fn the_snapshot_version_is_below_the_first_change_the_stream_delivers() {
        let ts = |t, i| Timestamp {
            time: t,
            increment: i,
        };
        let start = ts(1_796_565_803, 7);
        let copy = snapshot_version(start);
        assert!(copy < Version::of_cluster_time(1_796_565_803, 7).as_u64());
        assert_eq!(copy, Version::of_cluster_time(1_796_565_803, 6).as_u64());
        // ... and above every change before it, with the roll-up's 15
        // rewrites on top still below the stream's first change.
        assert!(copy > Version::of_cluster_time(1_796_565_803, 5).as_u64());
        assert!(copy + 15 < Version::of_cluster_time(1_796_565_803, 7).as_u64());
        assert_eq!(
            snapshot_version(ts(10, 0)),
            Version::of_cluster_time(9, crate::wire::version::MAX_INCREMENT).as_u64()
        );
        assert_eq!(
            snapshot_version(ts(10, 1)),
            Version::of_cluster_time(10, 0).as_u64()
        );
        // A record made with it is consistent (es-sync checks that).
        let snap = SnapshotInfo {
            id: "s".into(),
            version: copy,
        };
        let (_, ev) = snapshot_record(&doc! { "_id": 1_i32 }, &ns(), &snap).unwrap();
        assert!(ev.version_is_consistent());
        assert_eq!(
            ev.cluster_time,
            ClusterTime {
                t: 1_796_565_803,
                i: 6
            }
        );
    }

    #[test]
    fn snapshot_record_carries_snapshot_version() {
        let snap = SnapshotInfo {
            id: "s1".into(),
            version: Version::of_cluster_time(42, 3).as_u64(),
        };
        let (key, ev) = snapshot_record(&doc! { "_id": "a", "x": 1_i32 }, &ns(), &snap).unwrap();
        assert_eq!(key, r#""a""#);
        assert_eq!(ev.version, snap.version);
        assert_eq!(ev.cluster_time, ClusterTime { t: 42, i: 3 });
        assert_eq!(ev.op, Operation::Snapshot);
    }
}
