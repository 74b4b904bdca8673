//! From a [`SourceEvent`] to what Elasticsearch must do.
//!
//! - insert, update, replace, snapshot: `index` of the whole document with
//!   `version_type=external` and the event's version;
//! - delete: `delete` with `version_type=external` and the event's version;
//! - update without a document but with its `updateDescription` (the
//!   MongoDB Kafka Connector's default, or a lookup that found the document
//!   deleted): a [`Action::Patch`], applied at send time to the document the
//!   index holds if that one is older ([`crate::bulk::resolve`]);
//! - update with neither, and `snapshot_start`: nothing;
//! - `snapshot_end`: a [`Action::SnapshotEnd`] cleanup of older documents.
//!
//! External versions make every action idempotent and order-proof: an
//! action older than what the index holds fails with a 409 conflict, which
//! counts as success. Never `update` (Elasticsearch rejects external
//! versions on it).
//!
//! The document body is [`shared::ejson::to_search_json`] of the event's
//! document, projected (include, exclude, rename), without `_id` (it is the
//! Elasticsearch `_id`), plus a `_sync` object recording where it came from:
//! `{version, op, ns, partition, cluster_time}`; `_sync.version` makes the
//! re-snapshot cleanup a query.
//!
//! Delivery guarantee of this stage: none needed, a pure function; errors
//! (no id, id too long) go to the dead-letter topic.

use crate::config::{ProjectionConfig, TopicConfig};
use crate::encode::{DocBody, DocText, SyncInfo};
use crate::event::{RawEvent, SourceEvent};
use crate::record::RawRecord;
use serde_json::{json, Map, Value};
use shared::ejson::to_search_json;
use shared::wire::event::{Namespace, Operation, UpdateDescription};
use std::sync::Arc;

pub use crate::config::SYNC_FIELD;

/// Longest `_id` Elasticsearch accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// What to do in Elasticsearch for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Index the whole document (external version), its body a tree.
    Index {
        /// Target index or alias.
        index: String,
        /// Elasticsearch `_id`.
        id: String,
        /// External version.
        version: u64,
        /// The document body.
        source: Value,
    },
    /// Index the whole document (external version), its body still the
    /// JSON text of the record ([`crate::encode`]): what es-sync queues.
    IndexDoc {
        /// Target index or alias.
        index: String,
        /// Elasticsearch `_id`.
        id: String,
        /// External version.
        version: u64,
        /// The document: where its text is, and its `_sync`.
        body: Box<DocBody>,
    },
    /// Delete the document (external version).
    Delete {
        /// Target index or alias.
        index: String,
        /// Elasticsearch `_id`.
        id: String,
        /// External version.
        version: u64,
    },
    /// Apply `update` to the document the index holds, if it is older than
    /// `version`; `before` (the pre-image, in search form) is the base when
    /// the index holds nothing.
    Patch(Box<Patch>),
    /// Remove documents of `ns` from `partition` older than `version`.
    SnapshotEnd {
        /// Target index or alias.
        index: String,
        /// `db.coll` of the snapshot.
        ns: String,
        /// The partition the marker came from.
        partition: i32,
        /// The snapshot version.
        version: u64,
    },
    /// Nothing to do.
    Skip,
}

/// An update to apply to the indexed document ([`Action::Patch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// Target index or alias.
    pub index: String,
    /// Elasticsearch `_id`.
    pub id: String,
    /// External version of the update.
    pub version: u64,
    /// What changed.
    pub update: UpdateDescription,
    /// The document before the change, in search form, when known.
    pub before: Option<Map<String, Value>>,
    /// The `_sync` object the patched document gets.
    pub sync: Value,
    /// The topic's projection (paths of the update go through it).
    pub projection: ProjectionConfig,
}

impl Patch {
    /// The document `base` (the indexed search form, `_sync` included)
    /// with the update applied: the body of the `index` action at this
    /// patch's version.
    pub fn apply_to(&self, mut base: Map<String, Value>) -> Map<String, Value> {
        let old = base.remove(SYNC_FIELD);
        crate::patch::apply(&mut base, &self.update, &self.projection);
        let mut sync = self.sync.clone();
        // What es-sync keeps in `_sync` besides the change (a child's
        // parent) stays unless this change says otherwise.
        if let (Some(Value::Object(old)), Value::Object(new)) = (old, &mut sync) {
            for (k, v) in old {
                new.entry(k).or_insert(v);
            }
        }
        base.insert(SYNC_FIELD.to_string(), sync);
        base
    }
}

impl Action {
    /// Operation name for metrics (`index`, `delete`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Index { .. } | Self::IndexDoc { .. } => "index",
            Self::Delete { .. } => "delete",
            Self::Patch(_) => "patch",
            Self::SnapshotEnd { .. } => "snapshot_end",
            Self::Skip => "skip",
        }
    }
}

/// Why an event has no action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The id field is absent from the document and the key.
    #[error("id field `{0}` is missing")]
    MissingId(String),
    /// The id is longer than Elasticsearch allows.
    #[error("id is {0} bytes, more than the {MAX_ID_BYTES} Elasticsearch allows")]
    IdTooLong(usize),
    /// The document is not a JSON object.
    #[error("document is not an object")]
    NotAnObject,
    /// A document's text is not JSON (found when it is parsed).
    #[error("document is not JSON: {0}")]
    NotJson(String),
}

/// Whether `ev` is too far ahead of the clocks to be applied now: its
/// cluster time is more than `limit` seconds past both this host's clock
/// (`now_secs`) and the record's Kafka timestamp (`record_secs`, the
/// sender's clock), so a host whose clock is behind still accepts what its
/// producer wrote. Such an event is not bad by itself (its version matches
/// its cluster time, see [`crate::event`]): a clock is wrong somewhere, so
/// the partition waits (and says so) until the clocks agree instead of
/// dead-lettering the stream. `None` when it may be applied now, else how
/// many seconds it is ahead. `limit = 0` turns the check off.
pub fn ahead_of_clocks(
    ev: &SourceEvent,
    now_secs: u64,
    record_secs: Option<u64>,
    limit: u64,
) -> Option<u64> {
    ahead_of_clocks_at(ev.cluster_time.t, now_secs, record_secs, limit)
}

/// [`ahead_of_clocks`] of an event of cluster time `t` (seconds).
pub fn ahead_of_clocks_at(
    t: u32,
    now_secs: u64,
    record_secs: Option<u64>,
    limit: u64,
) -> Option<u64> {
    if limit == 0 {
        return None;
    }
    let reference = now_secs.max(record_secs.unwrap_or(0));
    let t = u64::from(t);
    (t > reference.saturating_add(limit)).then(|| t - reference)
}

impl ActionError {
    /// Short machine-readable name, for the DLQ and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingId(_) => "missing_id",
            Self::IdTooLong(_) => "id_too_long",
            Self::NotAnObject => "invalid_document",
            Self::NotJson(_) => "not_json",
        }
    }
}

/// Builds the action for `ev`, read from `partition`, routed by `route`
/// into `index` (the alias, or a concrete index while reindexing).
pub fn build(
    ev: &SourceEvent,
    route: &TopicConfig,
    index: &str,
    partition: i32,
) -> Result<Action, ActionError> {
    let version = ev.version.as_u64();
    match ev.op {
        Operation::SnapshotStart => Ok(Action::Skip),
        Operation::SnapshotEnd => Ok(Action::SnapshotEnd {
            index: index.to_string(),
            ns: ev.ns.to_string(),
            partition,
            version,
        }),
        Operation::Delete => Ok(Action::Delete {
            index: index.to_string(),
            id: key_id(&ev.key)?,
            version,
        }),
        Operation::Insert | Operation::Update | Operation::Replace | Operation::Snapshot => {
            let sync = sync_object(ev, partition);
            let Some(doc) = &ev.doc else {
                return match (ev.op, &ev.update) {
                    (Operation::Update, Some(update)) => Ok(Action::Patch(Box::new(Patch {
                        index: index.to_string(),
                        id: key_id(&ev.key)?,
                        version,
                        update: update.clone(),
                        before: match &ev.before {
                            Some(b) => Some(document(b, &ev.key, route)?.1),
                            None => None,
                        },
                        sync,
                        projection: route.projection.clone(),
                    }))),
                    // Nothing to apply (a delete follows a failed lookup).
                    _ => Ok(Action::Skip),
                };
            };
            let (id, mut body) = document(doc, &ev.key, route)?;
            body.insert(SYNC_FIELD.to_string(), sync);
            Ok(Action::Index {
                index: index.to_string(),
                id,
                version,
                source: Value::Object(body),
            })
        }
    }
}

/// [`build`] for a [`RawEvent`] of `record`: an index action keeps its
/// document as text ([`Action::IndexDoc`]); the rest is as [`build`] (a
/// patch parses what it needs). `projection` is `route`'s, shared.
pub fn build_raw(
    ev: &RawEvent,
    record: &Arc<RawRecord>,
    route: &TopicConfig,
    projection: &Arc<ProjectionConfig>,
    index: &str,
    partition: i32,
    names: &mut NsNames,
) -> Result<Action, ActionError> {
    let payload = record.payload.as_deref().unwrap_or_default();
    match (ev.op, ev.doc) {
        (
            Operation::Insert | Operation::Update | Operation::Replace | Operation::Snapshot,
            Some(span),
        ) => {
            let text = ev.doc_text(payload).unwrap_or_default();
            if text.first() != Some(&b'{') {
                return Err(ActionError::NotAnObject);
            }
            let id = key_id(&ev.key)?;
            let text = match &ev.inner {
                Some(inner) => DocText::Inner(inner.clone(), span),
                None => DocText::Record(record.clone(), span),
            };
            Ok(Action::IndexDoc {
                index: index.to_string(),
                id,
                version: ev.version.as_u64(),
                body: Box::new(DocBody {
                    text,
                    sync: SyncInfo {
                        version: ev.version.as_u64(),
                        op: ev.op,
                        ns: names.get(&ev.ns),
                        partition,
                        cluster_time: ev.cluster_time,
                        parent: None,
                    },
                    projection: projection.clone(),
                }),
            })
        }
        (Operation::Update, None) if ev.update.is_some() => {
            // A patch: its pre-image (when any) parsed, as the tree path does.
            let before = ev
                .before_text(payload)
                .map(serde_json::from_slice::<Value>)
                .transpose()
                .map_err(|e| ActionError::NotJson(e.to_string()))?;
            let tree = SourceEvent {
                op: ev.op,
                ns: ev.ns.clone(),
                key: ev.key.clone(),
                doc: None,
                update: ev.update.clone(),
                before,
                version: ev.version,
                cluster_time: ev.cluster_time,
                wall_time_ms: ev.wall_time_ms,
                format: ev.format,
            };
            build(&tree, route, index, partition)
        }
        _ => {
            let tree = SourceEvent {
                op: ev.op,
                ns: ev.ns.clone(),
                key: ev.key.clone(),
                doc: None,
                update: None,
                before: None,
                version: ev.version,
                cluster_time: ev.cluster_time,
                wall_time_ms: ev.wall_time_ms,
                format: ev.format,
            };
            build(&tree, route, index, partition)
        }
    }
}

/// `db.coll` names, one shared string per namespace: a queued document's
/// `_sync.ns` costs no allocation of its own (issue 17). Bounded: past
/// [`NsNames::MAX`] namespaces (a topic carrying that many collections),
/// it starts over.
#[derive(Debug, Default)]
pub struct NsNames(std::collections::HashMap<Namespace, Arc<str>>);

impl NsNames {
    /// Namespaces kept at most.
    pub const MAX: usize = 1024;

    /// The shared name of `ns`.
    pub fn get(&mut self, ns: &Namespace) -> Arc<str> {
        if let Some(n) = self.0.get(ns) {
            return n.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let name: Arc<str> = Arc::from(ns.to_string());
        self.0.insert(ns.clone(), name.clone());
        name
    }
}

/// The `_sync` object of the document an event writes.
fn sync_object(ev: &SourceEvent, partition: i32) -> Value {
    json!({
        "version": ev.version.as_u64(),
        "op": ev.op.as_str(),
        "ns": ev.ns.to_string(),
        "partition": partition,
        "cluster_time": {"t": ev.cluster_time.t, "i": ev.cluster_time.i},
    })
}

/// The Elasticsearch id and body (without `_sync`) of a MongoDB document
/// (Extended JSON) with document key `key`: what an index action of it
/// writes, so the verifier can compare with what the index holds.
pub fn document(
    doc: &Value,
    key: &Value,
    route: &TopicConfig,
) -> Result<(String, Map<String, Value>), ActionError> {
    if !doc.is_object() {
        return Err(ActionError::NotAnObject);
    }
    let id = key_id(key)?;
    Ok((id, document_body(doc, &route.projection)?))
}

/// The body (without `_sync`) an index action of the MongoDB document
/// `doc` writes: [`to_search_json`], without `_id`, projected.
pub fn document_body(doc: &Value, p: &ProjectionConfig) -> Result<Map<String, Value>, ActionError> {
    let Value::Object(mut body) = to_search_json(doc) else {
        return Err(ActionError::NotAnObject);
    };
    body.remove("_id");
    Ok(project(body, p))
}

/// The Elasticsearch `_id` of the document with key `key` (`{"_id": ..}`
/// plus any shard key): [`render_id`] of its `_id`.
pub fn key_id(key: &Value) -> Result<String, ActionError> {
    let value = key
        .get("_id")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ActionError::MissingId("_id".to_string()))?;
    let id = render_id(value);
    if id.len() > MAX_ID_BYTES {
        return Err(ActionError::IdTooLong(id.len()));
    }
    Ok(id)
}

/// The Elasticsearch `_id` of a MongoDB `_id` (Extended JSON). One-to-one,
/// so two MongoDB documents never share an Elasticsearch document:
///
/// - ObjectId: its 24 hex digits (the common case stays readable);
/// - number (int32, int64, double): its decimal text (`5`, `-2`, `1.5`);
///   MongoDB's unique `_id` index holds numbers by value, so `5` and
///   `NumberLong(5)` are one document there too;
/// - string: itself, unless it could be read as one of the other forms
///   ([`string_is_ambiguous`]): then `s:` and itself (`"5"` is `s:5`, a
///   string of 24 hex digits is `s:65a1...`);
/// - anything else (booleans, null, dates, UUIDs and other binaries,
///   Decimal128, embedded documents, arrays): its canonical Extended JSON
///   text, which begins with `{`, `[`, `t`, `f` or `n`.
pub fn render_id(value: &Value) -> String {
    match value {
        Value::String(s) if string_is_ambiguous(s) => format!("s:{s}"),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) if m.len() == 1 => match m.iter().next().map(|(k, v)| (k.as_str(), v)) {
            Some(("$oid", Value::String(s))) => s.clone(),
            Some(("$numberInt" | "$numberLong" | "$numberDouble", Value::String(s))) => s.clone(),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}

/// The MongoDB `_id` (Extended JSON) that [`render_id`] turns into
/// `es_id`: its inverse (a number comes back as a plain JSON number,
/// which MongoDB compares by value with an int32, int64 or double `_id`).
pub fn parse_id(es_id: &str) -> Value {
    if let Some(s) = es_id.strip_prefix("s:") {
        return Value::String(s.to_string());
    }
    if es_id.len() == 24 && es_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return json!({ "$oid": es_id });
    }
    if matches!(es_id, "NaN" | "Infinity" | "-Infinity") {
        return json!({ "$numberDouble": es_id });
    }
    if string_is_ambiguous(es_id) {
        if let Ok(v) = serde_json::from_str::<Value>(es_id) {
            return v;
        }
    }
    Value::String(es_id.to_string())
}

/// Whether a string `_id` could be taken for the rendering of another type
/// (and so gets the `s:` tag): empty, a number's text, 24 hex digits (an
/// ObjectId), `true`/`false`/`null`, `Infinity`/`-Infinity`/`NaN`, text
/// beginning with `{` or `[` (Extended JSON), or already beginning with the
/// tag `s:`.
pub fn string_is_ambiguous(s: &str) -> bool {
    let number_like = s
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && s.bytes().any(|b| b.is_ascii_digit());
    let object_id = s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit());
    s.is_empty()
        || number_like
        || object_id
        || matches!(
            s,
            "true" | "false" | "null" | "Infinity" | "-Infinity" | "NaN"
        )
        || s.starts_with(['{', '['])
        || s.starts_with("s:")
}

/// Applies include, then exclude, then rename to the top-level fields.
pub fn project(mut body: Map<String, Value>, p: &ProjectionConfig) -> Map<String, Value> {
    if !p.include.is_empty() {
        body.retain(|k, _| p.include.iter().any(|f| f == k));
    }
    for f in &p.exclude {
        body.remove(f);
    }
    if p.rename.is_empty() {
        return body;
    }
    body.into_iter()
        .map(|(k, v)| match p.rename.get(&k) {
            Some(to) => (to.clone(), v),
            None => (k, v),
        })
        .collect()
}

/// Extracts the id of an action (for logs).
pub fn action_id(a: &Action) -> Option<&str> {
    match a {
        Action::Index { id, .. } | Action::IndexDoc { id, .. } | Action::Delete { id, .. } => {
            Some(id)
        }
        Action::Patch(p) => Some(&p.id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_name_is_made_once_and_shared() {
        let mut names = NsNames::default();
        let ns = |c: &str| Namespace {
            db: "mountain".into(),
            coll: c.into(),
        };
        let a = names.get(&ns("card"));
        assert_eq!(&*a, "mountain.card");
        assert!(Arc::ptr_eq(&a, &names.get(&ns("card"))));
        assert_eq!(&*names.get(&ns("reply")), "mountain.reply");
        for i in 0..NsNames::MAX + 5 {
            names.get(&ns(&format!("c{i}")));
        }
        assert!(names.0.len() <= NsNames::MAX, "bounded");
        assert_eq!(&*names.get(&ns("card")), "mountain.card");
    }
    use crate::event::Format;
    use shared::wire::event::{ClusterTime, Namespace};
    use shared::wire::version::Version;
    use std::collections::BTreeMap;

    fn route() -> TopicConfig {
        TopicConfig {
            topic: "live.mountain.card".into(),
            alias: "cards".into(),
            index_file: "x.json".into(),
            id_field: "_id".into(),
            projection: ProjectionConfig::default(),
        }
    }

    fn ev(op: Operation, doc: Option<Value>) -> SourceEvent {
        SourceEvent {
            op,
            ns: Namespace {
                db: "mountain".into(),
                coll: "card".into(),
            },
            key: json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}}),
            doc,
            update: None,
            before: None,
            version: Version::from_u64(77),
            cluster_time: ClusterTime { t: 10, i: 2 },
            wall_time_ms: None,
            format: Format::Native,
        }
    }

    #[test]
    fn events_ahead_of_both_clocks_wait() {
        let e = ev(Operation::Insert, None); // cluster time t = 10
        assert_eq!(ahead_of_clocks(&e, 10, None, 1), None);
        assert_eq!(ahead_of_clocks(&e, 5, None, 5), None);
        assert_eq!(ahead_of_clocks(&e, 4, None, 5), Some(6));
        // This host's clock is behind, the sender's is not: accepted.
        assert_eq!(ahead_of_clocks(&e, 1, Some(9), 5), None);
        // Both behind: it waits.
        assert_eq!(ahead_of_clocks(&e, 1, Some(2), 5), Some(8));
        // 0 turns the check off.
        assert_eq!(ahead_of_clocks(&e, 0, None, 0), None);
    }

    fn card() -> Value {
        json!({
            "_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "title": "한라산 등반",
            "created_at": {"$date": "2024-01-02T03:04:05.678Z"}, "likes": 3,
            "secret": "x", "tags": ["a"]
        })
    }

    #[test]
    fn writes_become_external_index_with_sync_metadata() {
        for op in [
            Operation::Insert,
            Operation::Update,
            Operation::Replace,
            Operation::Snapshot,
        ] {
            let a = build(&ev(op, Some(card())), &route(), "cards", 2).unwrap();
            let Action::Index {
                index,
                id,
                version,
                source,
            } = a
            else {
                panic!("{op:?}")
            };
            assert_eq!(
                (index.as_str(), id.as_str(), version),
                ("cards", "65a1b2c3d4e5f60718293a4b", 77)
            );
            assert!(source.get("_id").is_none(), "_id is metadata, not source");
            assert_eq!(source["created_at"], "2024-01-02T03:04:05.678Z");
            assert_eq!(
                source["_sync"],
                json!({"version": 77, "op": op.as_str(), "ns": "mountain.card", "partition": 2,
                       "cluster_time": {"t": 10, "i": 2}})
            );
        }
    }

    #[test]
    fn delete_uses_the_key() {
        let a = build(&ev(Operation::Delete, None), &route(), "cards", 0).unwrap();
        assert_eq!(
            a,
            Action::Delete {
                index: "cards".into(),
                id: "65a1b2c3d4e5f60718293a4b".into(),
                version: 77
            }
        );
    }

    #[test]
    fn update_without_doc_patches_or_does_nothing() {
        assert_eq!(
            build(&ev(Operation::Update, None), &route(), "c", 0).unwrap(),
            Action::Skip
        );
        let mut e = ev(Operation::Update, None);
        e.update = Some(
            serde_json::from_value(
                json!({"updated_fields": {"likes": 4}, "removed_fields": ["secret"]}),
            )
            .unwrap(),
        );
        e.before = Some(card());
        let Action::Patch(p) = build(&e, &route(), "cards", 3).unwrap() else {
            panic!()
        };
        assert_eq!((p.id.as_str(), p.version), ("65a1b2c3d4e5f60718293a4b", 77));
        let before = p.before.clone().unwrap();
        assert!(
            before.get("_id").is_none(),
            "the pre-image is in search form"
        );
        let after = p.apply_to(before);
        assert_eq!(after["likes"], 4);
        assert!(after.get("secret").is_none());
        assert_eq!(after["created_at"], "2024-01-02T03:04:05.678Z");
        assert_eq!(after[SYNC_FIELD]["version"], 77);
        assert_eq!(after[SYNC_FIELD]["partition"], 3);
        assert_eq!(
            build(&ev(Operation::SnapshotStart, None), &route(), "c", 0).unwrap(),
            Action::Skip
        );
    }

    #[test]
    fn snapshot_end_carries_partition_and_version() {
        let a = build(&ev(Operation::SnapshotEnd, None), &route(), "cards", 4).unwrap();
        assert_eq!(
            a,
            Action::SnapshotEnd {
                index: "cards".into(),
                ns: "mountain.card".into(),
                partition: 4,
                version: 77
            }
        );
    }

    #[test]
    fn ids_render_by_type() {
        assert_eq!(
            render_id(&json!({"$oid": "65a1b2c3d4e5f60718293a4b"})),
            "65a1b2c3d4e5f60718293a4b"
        );
        assert_eq!(render_id(&json!("plain")), "plain");
        assert_eq!(render_id(&json!("설악산-1")), "설악산-1");
        assert_eq!(render_id(&json!(42)), "42");
        assert_eq!(
            render_id(&json!({"$numberLong": "9007199254740993"})),
            "9007199254740993"
        );
        assert_eq!(render_id(&json!({"a": 1, "b": "x"})), r#"{"a":1,"b":"x"}"#);
        assert_eq!(render_id(&json!(true)), "true");
    }

    #[test]
    fn ids_of_different_values_never_collide() {
        let ids = [
            json!({"$oid": "65a1b2c3d4e5f60718293a4b"}),
            json!("65a1b2c3d4e5f60718293a4b"),
            json!("s:65a1b2c3d4e5f60718293a4b"),
            json!("s:s:65a1b2c3d4e5f60718293a4b"),
            json!(5),
            json!("5"),
            json!("s:5"),
            json!(-1.5),
            json!("-1.5"),
            json!("1e3"),
            json!({"$numberDouble": "NaN"}),
            json!("NaN"),
            json!(true),
            json!("true"),
            json!(null),
            json!("null"),
            json!(""),
            json!("s:"),
            json!({"$date": "2024-01-02T03:04:05.678Z"}),
            json!(r#"{"$date":"2024-01-02T03:04:05.678Z"}"#),
            json!({"$binary": {"base64": "AQID", "subType": "04"}}),
            json!({"a": 1}),
            json!(r#"{"a":1}"#),
            json!([1, 2]),
            json!("[1,2]"),
            json!("plain"),
            json!("s"),
        ];
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            if let Some(other) = seen.insert(render_id(id), id) {
                panic!("{id} and {other} both render as {}", render_id(id));
            }
        }
        for id in &ids {
            let back = parse_id(&render_id(id));
            assert_eq!(render_id(&back), render_id(id), "{id} comes back as {back}");
        }
        assert_eq!(
            parse_id("65a1b2c3d4e5f60718293a4b"),
            json!({"$oid": "65a1b2c3d4e5f60718293a4b"})
        );
        assert_eq!(parse_id("s:5"), json!("5"));
        assert_eq!(parse_id("5"), json!(5));
        assert_eq!(render_id(&json!("5")), "s:5");
        assert_eq!(
            render_id(&json!("65a1b2c3d4e5f60718293a4b")),
            "s:65a1b2c3d4e5f60718293a4b"
        );
    }

    #[test]
    fn missing_or_long_ids_are_errors() {
        let mut e = ev(Operation::Delete, None);
        e.key = json!({});
        assert_eq!(
            build(&e, &route(), "c", 0).unwrap_err().kind(),
            "missing_id"
        );
        e.key = json!({"_id": null});
        assert_eq!(
            build(&e, &route(), "c", 0).unwrap_err().kind(),
            "missing_id"
        );
        let mut e = ev(Operation::Insert, Some(json!({"_id": "x".repeat(600)})));
        e.key = json!({"_id": "x".repeat(600)});
        assert_eq!(
            build(&e, &route(), "c", 0).unwrap_err(),
            ActionError::IdTooLong(600)
        );
    }

    #[test]
    fn non_object_document_is_an_error() {
        let err = build(&ev(Operation::Insert, Some(json!([1]))), &route(), "c", 0).unwrap_err();
        assert_eq!(err.kind(), "invalid_document");
    }

    #[test]
    fn projection_include_exclude_rename() {
        let mut r = route();
        r.projection = ProjectionConfig {
            include: vec![
                "title".into(),
                "likes".into(),
                "secret".into(),
                "_id".into(),
            ],
            exclude: vec!["secret".into()],
            rename: BTreeMap::from([("likes".to_string(), "like_count".to_string())]),
        };
        let Action::Index { id, source, .. } =
            build(&ev(Operation::Insert, Some(card())), &r, "c", 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(id, "65a1b2c3d4e5f60718293a4b");
        let keys: Vec<&str> = source
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["title", "like_count", "_sync"]);
    }
}
