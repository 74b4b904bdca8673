//! The fast path of [`super::decode`]: a change-stream document of one
//! document's change written straight into the event's JSON bytes, its
//! documents (`fullDocument`, the pre-image, `documentKey`, the update)
//! copied from the raw BSON by [`crate::ejson::write_document`] without
//! building a [`mongodb::bson::Document`] or a [`serde_json::Value`] first
//! (issue 17: those two trees were most of mongo-source's allocations).
//!
//! The bytes equal `serde_json::to_vec` of the [`ChangeEvent`] the tree
//! path ([`super::read_raw`] then [`super::decode`]) makes of the same
//! document (the tests hold the two paths to that). Whatever the fast
//! path does not take is left to the tree path, which then decides as
//! before: [`decode_raw`] answers `None` for events that are not a plain
//! document change (drops, invalidations, DDL, fragments of a split
//! event, anything malformed) and for a top-level or `updateDescription`
//! field name given twice; [`RawChange::write_json`] refuses a document
//! with a string that is not UTF-8 or a repeated field name.

use super::super::event::{
    rank_into, ChangeEvent, ClusterTime, Namespace, Operation, OperationType, Ranked, SnapshotInfo,
    TxnInfo, SCHEMA,
};
use super::super::version::Version;
use super::{decode, read_raw, BadChange, Decoded};
use crate::ejson::{
    bson_to_json, canonical_key, write_document, write_value, SeenKeys, Unwritable,
};
use mongodb::bson::{Bson, RawBsonRef, RawDocument};
use serde::Serialize;
use std::io::Write as _;

/// One document's change, read from its raw change-stream document.
#[derive(Debug)]
pub struct RawChange<'a> {
    /// Canonical Extended JSON of the document's `_id`: the Kafka key.
    pub key: String,
    /// What happened.
    pub op: Operation,
    /// Where.
    pub ns: Namespace,
    /// The change's cluster time.
    pub cluster_time: ClusterTime,
    /// The change's wall time, when the server gave one.
    pub wall_time: Option<String>,
    /// The version (rank 0 until [`RawChange::set_rank`]).
    pub version: u64,
    /// The transaction, when the change was part of one.
    pub txn: Option<TxnInfo>,
    /// The rank given by [`RawChange::set_rank`], if it was called.
    rank: Option<u32>,
    /// The change-stream document.
    raw: &'a RawDocument,
    /// `documentKey`.
    key_doc: &'a RawDocument,
    /// `fullDocument` (not for a delete).
    doc: Option<&'a RawDocument>,
    /// `fullDocumentBeforeChange`.
    before: Option<&'a RawDocument>,
    /// `updateDescription` (updates only).
    update: Option<&'a RawDocument>,
}

/// The top-level fields of a change-stream document the event reads, each
/// seen at most once.
#[derive(Default)]
struct Fields<'a> {
    op_type: Option<RawBsonRef<'a>>,
    cluster_time: Option<RawBsonRef<'a>>,
    key: Option<RawBsonRef<'a>>,
    ns: Option<RawBsonRef<'a>>,
    doc: Option<RawBsonRef<'a>>,
    before: Option<RawBsonRef<'a>>,
    update: Option<RawBsonRef<'a>>,
    wall_time: Option<RawBsonRef<'a>>,
    lsid: Option<RawBsonRef<'a>>,
    txn_number: Option<RawBsonRef<'a>>,
}

/// Field names of `doc` are all different, and every element parses.
fn distinct_keys(doc: &RawDocument) -> bool {
    let mut seen = SeenKeys::new();
    doc.into_iter()
        .all(|field| field.is_ok_and(|(k, _)| seen.insert(k)))
}

/// Whether a `splitEvent` value says "fragment 1 of 1".
fn whole_event(split: RawBsonRef<'_>) -> bool {
    let RawBsonRef::Document(d) = split else {
        return false;
    };
    let one = |name: &str| match d.get(name) {
        Ok(Some(RawBsonRef::Int32(1) | RawBsonRef::Int64(1))) => true,
        Ok(Some(RawBsonRef::Double(f))) => f == 1.0,
        _ => false,
    };
    distinct_keys(d) && one("fragment") && one("of")
}

/// Reads a change-stream document of namespace `ns` for the fast path;
/// `None` leaves it to the tree path (see the module documentation).
pub fn decode_raw<'a>(raw: &'a RawDocument, ns: &Namespace) -> Option<RawChange<'a>> {
    let mut f = Fields::default();
    let mut names = SeenKeys::new();
    for field in raw {
        let (name, value) = field.ok()?;
        if !names.insert(name) {
            return None;
        }
        let slot = match name {
            "operationType" => &mut f.op_type,
            "clusterTime" => &mut f.cluster_time,
            "documentKey" => &mut f.key,
            "ns" => &mut f.ns,
            "fullDocument" => &mut f.doc,
            "fullDocumentBeforeChange" => &mut f.before,
            "updateDescription" => &mut f.update,
            "wallTime" => &mut f.wall_time,
            "lsid" => &mut f.lsid,
            "txnNumber" => &mut f.txn_number,
            // A split event's fragment is reassembled by the tree path; a
            // fragment 1 of 1 (a server may mark every event when the
            // stream splits large ones) is the whole event.
            "splitEvent" if whole_event(value) => continue,
            "splitEvent" => return None,
            _ => continue,
        };
        *slot = Some(value);
    }
    let Some(RawBsonRef::String(op_type)) = f.op_type else {
        return None;
    };
    let OperationType::Change(op) = Operation::from_operation_type(op_type) else {
        return None;
    };
    let Some(RawBsonRef::Timestamp(ts)) = f.cluster_time else {
        return None;
    };
    let Some(RawBsonRef::Document(key_doc)) = f.key else {
        return None;
    };
    if !distinct_keys(key_doc) {
        return None;
    }
    let id = Bson::try_from(key_doc.get("_id").ok()??).ok()?;
    let ns = match f.ns {
        Some(RawBsonRef::Document(n)) => {
            if !distinct_keys(n) {
                return None;
            }
            let part = |name: &str, default: &str| match n.get(name) {
                Ok(Some(RawBsonRef::String(s))) => s.to_string(),
                _ => default.to_string(),
            };
            Namespace {
                db: part("db", &ns.db),
                coll: part("coll", &ns.coll),
            }
        }
        _ => ns.clone(),
    };
    let doc = match f.doc {
        Some(RawBsonRef::Document(d)) if op != Operation::Delete => Some(d),
        _ => None,
    };
    let before = match f.before {
        Some(RawBsonRef::Document(d)) => Some(d),
        _ => None,
    };
    let update = match (op, f.update) {
        (Operation::Update, Some(RawBsonRef::Document(u))) if distinct_keys(u) => Some(u),
        (Operation::Update, Some(RawBsonRef::Document(_))) => return None,
        _ => None,
    };
    let wall_time = match f.wall_time {
        Some(RawBsonRef::DateTime(dt)) => dt.try_to_rfc3339_string().ok(),
        _ => None,
    };
    let txn = match (f.lsid, f.txn_number) {
        (Some(lsid), Some(n)) => Some(TxnInfo {
            lsid: bson_to_json(&Bson::try_from(lsid).ok()?),
            txn_number: match n {
                RawBsonRef::Int64(n) => n,
                RawBsonRef::Int32(n) => i64::from(n),
                _ => 0,
            },
            rank: 0,
        }),
        _ => None,
    };
    Some(RawChange {
        key: canonical_key(&id),
        op,
        ns,
        cluster_time: ClusterTime {
            t: ts.time,
            i: ts.increment,
        },
        wall_time,
        version: Version::of_cluster_time(ts.time, ts.increment).as_u64(),
        txn,
        rank: None,
        raw,
        key_doc,
        doc,
        before,
        update,
    })
}

impl RawChange<'_> {
    /// [`ChangeEvent::set_rank`] for this change.
    pub fn set_rank(&mut self, n: u32) -> bool {
        self.rank = Some(n);
        rank_into(self.cluster_time, &mut self.version, self.txn.as_mut(), n)
    }

    /// Bytes of the change-stream document (the event's JSON is about as
    /// long).
    pub fn bson_len(&self) -> usize {
        self.raw.as_bytes().len()
    }

    /// Appends the event's JSON to `out` (the bytes of its
    /// [`RawChange::to_event`] serialized). On an error, `out` is left as
    /// it was and the event must take the tree path.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Unwritable> {
        let start = out.len();
        let written = self.write_fields(out);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    fn write_fields(&self, out: &mut Vec<u8>) -> Result<(), Unwritable> {
        write_head(out, self.op, &self.ns);
        write_document(self.key_doc, out)?;
        if let Some(d) = self.doc {
            out.extend_from_slice(b",\"doc\":");
            write_document(d, out)?;
        }
        if let Some(u) = self.update {
            out.extend_from_slice(b",\"update\":");
            write_update(u, out)?;
        }
        if let Some(b) = self.before {
            out.extend_from_slice(b",\"before\":");
            write_document(b, out)?;
        }
        out.extend_from_slice(b",\"cluster_time\":");
        json(out, &self.cluster_time);
        if let Some(w) = &self.wall_time {
            out.extend_from_slice(b",\"wall_time\":");
            json(out, w);
        }
        let _ = write!(out, ",\"version\":{}", self.version);
        if let Some(t) = &self.txn {
            out.extend_from_slice(b",\"txn\":");
            json(out, t);
        }
        out.push(b'}');
        Ok(())
    }

    /// The same change by the tree path (read lossily, as
    /// [`super::read_raw`] reads), with the rank given to this one: for
    /// what needs the event as a tree (a record over the size limit, or a
    /// document [`RawChange::write_json`] refused).
    pub fn to_event(&self) -> Result<ChangeEvent, BadChange> {
        let (doc, _lossy) = read_raw(self.raw)?;
        match decode(&doc, &self.ns)? {
            Decoded::Change { mut event, .. } => {
                if let Some(n) = self.rank {
                    event.set_rank(n);
                }
                Ok(*event)
            }
            _ => Err(BadChange("not a document change".into())),
        }
    }
}

/// A snapshot copy of `doc` ([`super::snapshot_record`]) written straight
/// from its BSON: its Kafka key and the record's value appended to `out`.
/// `None` (with `out` as it was) leaves it to the tree path: no `_id`, or
/// what [`write_document`] refuses.
pub fn write_snapshot_record(
    doc: &RawDocument,
    ns: &Namespace,
    snapshot: &SnapshotInfo,
    out: &mut Vec<u8>,
) -> Option<String> {
    let start = out.len();
    let written = (|| {
        let id = doc.get("_id").ok()??;
        let key = canonical_key(&Bson::try_from(id).ok()?);
        let (t, i) = Version::from_u64(snapshot.version).cluster_time();
        write_head(out, Operation::Snapshot, ns);
        out.extend_from_slice(b"{\"_id\":");
        write_value(id, out).ok()?;
        out.extend_from_slice(b"},\"doc\":");
        write_document(doc, out).ok()?;
        out.extend_from_slice(b",\"cluster_time\":");
        json(out, &ClusterTime { t, i });
        let _ = write!(out, ",\"version\":{}", snapshot.version);
        out.extend_from_slice(b",\"snapshot\":");
        json(out, snapshot);
        out.push(b'}');
        Some(key)
    })();
    if written.is_none() {
        out.truncate(start);
    }
    written
}

impl Ranked for RawChange<'_> {
    fn cluster_time(&self) -> ClusterTime {
        self.cluster_time
    }
    fn txn(&self) -> Option<&TxnInfo> {
        self.txn.as_ref()
    }
    fn set_rank(&mut self, n: u32) -> bool {
        RawChange::set_rank(self, n)
    }
}

/// The JSON of an [`super::super::event::UpdateDescription`] made from
/// `u` (see [`super::decode`]): fields set, fields removed (strings only),
/// arrays truncated and disambiguated paths (each only when not empty).
fn write_update(u: &RawDocument, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    let get = |name: &str| u.get(name).ok().flatten();
    out.extend_from_slice(b"{\"updated_fields\":");
    match get("updatedFields") {
        Some(RawBsonRef::Document(d)) => write_document(d, out)?,
        _ => out.extend_from_slice(b"{}"),
    }
    out.extend_from_slice(b",\"removed_fields\":[");
    if let Some(RawBsonRef::Array(a)) = get("removedFields") {
        let mut first = true;
        for item in a {
            let item = item.map_err(|e| Unwritable::Bson(e.to_string()))?;
            if let RawBsonRef::String(s) = item {
                if !first {
                    out.push(b',');
                }
                first = false;
                json(out, s);
            }
        }
    }
    out.push(b']');
    if let Some(RawBsonRef::Array(a)) = get("truncatedArrays") {
        if a.into_iter().next().is_some() {
            out.extend_from_slice(b",\"truncated_arrays\":");
            write_value(RawBsonRef::Array(a), out)?;
        }
    }
    if let Some(RawBsonRef::Document(d)) = get("disambiguatedPaths") {
        if d.into_iter().next().is_some() {
            out.extend_from_slice(b",\"disambiguated_paths\":");
            write_document(d, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// The envelope's first fields, up to the key's value: `{"schema":..,
/// "op":..,"ns":..,"key":`.
fn write_head(out: &mut Vec<u8>, op: Operation, ns: &Namespace) {
    out.extend_from_slice(b"{\"schema\":");
    json(out, SCHEMA);
    out.extend_from_slice(b",\"op\":");
    json(out, op.as_str());
    out.extend_from_slice(b",\"ns\":");
    json(out, ns);
    out.extend_from_slice(b",\"key\":");
}

/// A small value of the envelope, as serde_json writes it.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::super::super::version::MAX_RANK;
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, DateTime, Document, RawDocumentBuf, Timestamp};
    use std::str::FromStr;

    use super::super::tests::ns;

    /// The fast path's key and bytes, and the tree path's, for `change`
    /// given rank `rank`.
    fn both(change: &Document, rank: Option<u32>) -> ((String, Vec<u8>), (String, Vec<u8>)) {
        let raw = RawDocumentBuf::from_document(change).unwrap();
        let mut fast = decode_raw(&raw, &ns()).expect("fast path");
        if let Some(n) = rank {
            fast.set_rank(n);
        }
        let mut bytes = Vec::new();
        fast.write_json(&mut bytes).unwrap();
        let (doc, _) = read_raw(&raw).unwrap();
        let Decoded::Change { key, mut event } = decode(&doc, &ns()).unwrap() else {
            panic!("not a change")
        };
        if let Some(n) = rank {
            event.set_rank(n);
        }
        assert_eq!(fast.to_event().unwrap(), *event, "to_event of {change:?}");
        (
            (fast.key.clone(), bytes),
            (key, serde_json::to_vec(&*event).unwrap()),
        )
    }

    fn assert_same(change: &Document, rank: Option<u32>) {
        let (fast, tree) = both(change, rank);
        assert_eq!(fast.0, tree.0, "key of {change:?}");
        assert_eq!(
            String::from_utf8_lossy(&fast.1),
            String::from_utf8_lossy(&tree.1),
            "event of {change:?}"
        );
    }

    fn oid() -> ObjectId {
        ObjectId::from_str("65a1b2c3d4e5f60718293a4b").unwrap()
    }

    fn base(op: &str) -> Document {
        doc! {
            "_id": { "_data": "826571A2B3000000012B022C0100296E5A1004" },
            "operationType": op,
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 7 },
            "wallTime": DateTime::from_millis(1_700_000_000_120),
            "ns": { "db": "mountain", "coll": "card" },
            "documentKey": { "_id": oid() },
        }
    }

    fn with(mut d: Document, more: Document) -> Document {
        d.extend(more);
        d
    }

    #[test]
    fn every_kind_of_change_is_written_as_the_tree_path_writes_it() {
        let full = doc! {
            "_id": oid(), "title": "설악산 \"단풍\"\n", "likes": 3_i32,
            "at": DateTime::from_millis(1_704_164_645_000), "big": i64::MAX,
            "tags": ["산", { "k": 1.5 }], "none": null,
        };
        let update = doc! {
            "updatedFields": { "likes": 4_i32, "a.b": { "c": [1_i32] } },
            "removedFields": ["old", 5_i32, "gone"],
            "truncatedArrays": [{ "field": "tags", "newSize": 1_i32 }],
            "disambiguatedPaths": { "a.b": ["a", "b"] },
        };
        let txn = doc! {
            "lsid": { "id": mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] } },
            "txnNumber": 12_i64,
        };
        let cases = [
            with(base("insert"), doc! { "fullDocument": full.clone() }),
            with(base("replace"), doc! { "fullDocument": full.clone() }),
            with(
                base("update"),
                doc! { "fullDocument": full.clone(), "updateDescription": update.clone() },
            ),
            // Update without a lookup (document deleted since), and
            // with an empty description.
            with(
                base("update"),
                doc! { "fullDocument": null, "updateDescription": update.clone() },
            ),
            with(base("update"), doc! { "updateDescription": {} }),
            // Fragment 1 of 1: the whole event (SecantusDB marks every
            // event so when the stream splits large ones).
            with(
                base("insert"),
                doc! { "fullDocument": full.clone(), "splitEvent": { "fragment": 1_i32, "of": 1_i32 } },
            ),
            with(
                base("delete"),
                doc! { "splitEvent": { "fragment": 1_i64, "of": 1.0 } },
            ),
            with(
                base("update"),
                doc! { "updateDescription": {
                "updatedFields": 1_i32, "removedFields": [], "truncatedArrays": [],
                "disambiguatedPaths": {} } },
            ),
            // A description on an insert is not read.
            with(
                base("insert"),
                doc! { "fullDocument": full.clone(), "updateDescription": update },
            ),
            with(base("delete"), doc! {}),
            // A delete with a document (never from a server): not written.
            with(base("delete"), doc! { "fullDocument": full.clone() }),
            // Pre-images.
            with(
                base("delete"),
                doc! { "fullDocumentBeforeChange": full.clone() },
            ),
            with(
                base("replace"),
                doc! { "fullDocument": full.clone(), "fullDocumentBeforeChange": full.clone() },
            ),
            with(base("insert"), doc! { "fullDocument": full.clone() })
                .into_iter()
                .chain(txn.clone())
                .collect(),
            with(
                base("insert"),
                doc! { "fullDocument": full.clone(), "lsid": { "id": 1_i32 }, "txnNumber": 3_i32 },
            ),
            with(
                base("insert"),
                doc! { "fullDocument": full.clone(), "lsid": { "id": 1_i32 }, "txnNumber": "x" },
            ),
            // A session without a transaction number: no transaction.
            with(
                base("insert"),
                doc! { "fullDocument": full.clone(), "lsid": { "id": 1_i32 } },
            ),
            // Sharded: the document key holds the shard key too; ids of
            // other types.
            with(
                base("insert"),
                doc! { "documentKey": { "_id": "문자열", "region": "kr" } },
            ),
        ];
        for c in &cases {
            assert_same(c, None);
            assert_same(c, Some(0));
            assert_same(c, Some(3));
            assert_same(c, Some(MAX_RANK + 9));
        }
        for id in [
            Bson::Int32(5),
            Bson::Int64(5),
            Bson::Double(2.5),
            Bson::Document(doc! { "a": 1_i32, "b": "x" }),
            Bson::Binary(mongodb::bson::Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Uuid,
                bytes: vec![1; 16],
            }),
        ] {
            let mut c = base("insert");
            c.insert("documentKey", doc! { "_id": id.clone() });
            c.insert("fullDocument", doc! { "_id": id, "x": 1_i32 });
            assert_same(&c, None);
        }
        // Namespace: missing, partial, or not a document.
        for n in [
            None,
            Some(Bson::Document(doc! { "db": "other" })),
            Some(Bson::Int32(1)),
        ] {
            let mut c = with(base("insert"), doc! { "fullDocument": full.clone() });
            match n {
                None => {
                    c.remove("ns");
                }
                Some(v) => {
                    c.insert("ns", v);
                }
            }
            c.remove("wallTime");
            assert_same(&c, None);
        }
    }

    #[test]
    fn a_snapshot_copy_is_written_as_the_tree_path_writes_it() {
        let info = SnapshotInfo {
            id: "snap-1".into(),
            version: Version::of_cluster_time(1_700_000_000, 3).as_u64(),
        };
        let docs = [
            doc! { "_id": oid(), "title": "설악산", "n": [1_i32, { "x": null }] },
            doc! { "title": "_id not first", "_id": "문자열" },
            doc! { "_id": { "a": 1_i32, "b": DateTime::from_millis(5) } },
            doc! { "_id": 1.5 },
        ];
        for d in docs {
            let raw = RawDocumentBuf::from_document(&d).unwrap();
            let mut out = b"[".to_vec();
            let key = write_snapshot_record(&raw, &ns(), &info, &mut out).expect("written");
            let (tree_key, ev) = super::super::snapshot_record(&d, &ns(), &info).unwrap();
            assert_eq!(key, tree_key);
            assert_eq!(
                String::from_utf8_lossy(&out[1..]),
                String::from_utf8_lossy(&serde_json::to_vec(&ev).unwrap()),
                "{d:?}"
            );
        }
        // No `_id`, or a field twice: left to the tree path, `out` untouched.
        let mut twice = RawDocumentBuf::new();
        twice.append("_id", 1_i32);
        twice.append("x", 1_i32);
        twice.append("x", 2_i32);
        for raw in [
            RawDocumentBuf::from_document(&doc! { "x": 1_i32 }).unwrap(),
            twice,
        ] {
            let mut out = b"[".to_vec();
            assert_eq!(write_snapshot_record(&raw, &ns(), &info, &mut out), None);
            assert_eq!(out, b"[");
        }
    }

    #[test]
    fn what_is_not_a_plain_change_is_left_to_the_tree_path() {
        let not = |d: Document| {
            let raw = RawDocumentBuf::from_document(&d).unwrap();
            assert!(decode_raw(&raw, &ns()).is_none(), "{d:?}");
        };
        not(base("drop"));
        not(base("invalidate"));
        not(base("createIndexes"));
        not(with(
            base("insert"),
            doc! { "splitEvent": { "fragment": 1_i32, "of": 2_i32 } },
        ));
        not(with(
            base("insert"),
            doc! { "splitEvent": { "fragment": 2_i32, "of": 2_i32 } },
        ));
        not(with(base("insert"), doc! { "splitEvent": 1_i32 }));
        let mut no_time = base("insert");
        no_time.remove("clusterTime");
        not(no_time);
        let mut no_key = base("insert");
        no_key.remove("documentKey");
        not(no_key);
        not(with(
            base("insert"),
            doc! { "documentKey": { "other": 1_i32 } },
        ));
        not(with(base("insert"), doc! { "operationType": 5_i32 }));
        // A repeated top-level name (built by hand: the bson builders keep one).
        let mut raw = RawDocumentBuf::from_document(&base("insert")).unwrap();
        raw.append("operationType", "delete");
        assert!(decode_raw(&raw, &ns()).is_none());
        let mut raw = RawDocumentBuf::from_document(&base("update")).unwrap();
        let mut u = RawDocumentBuf::new();
        u.append("removedFields", mongodb::bson::RawArrayBuf::new());
        u.append("removedFields", mongodb::bson::RawArrayBuf::new());
        raw.append("updateDescription", u);
        assert!(decode_raw(&raw, &ns()).is_none());
    }

    #[test]
    fn a_document_the_writer_refuses_leaves_the_output_as_it_was() {
        let mut full = RawDocumentBuf::new();
        full.append("_id", oid());
        full.append("x", 1_i32);
        full.append("x", 2_i32);
        let mut raw = RawDocumentBuf::from_document(&base("insert")).unwrap();
        raw.append("fullDocument", full);
        let change = decode_raw(&raw, &ns()).unwrap();
        let mut out = b"before".to_vec();
        assert_eq!(
            change.write_json(&mut out),
            Err(Unwritable::DuplicateKey("x".into()))
        );
        assert_eq!(out, b"before");
        // The tree path still reads it (one `x`, as before).
        let ev = change.to_event().unwrap();
        assert_eq!(ev.doc.unwrap()["x"], 2);
    }
}
