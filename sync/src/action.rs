//! From a [`SourceEvent`] to what Elasticsearch must do.
//!
//! - insert, update, replace, snapshot: `index` of the whole document with
//!   `version_type=external` and the event's version;
//! - delete: `delete` with `version_type=external` and the event's version;
//! - update without a document (it was deleted before the lookup) and
//!   `snapshot_start`: nothing (the delete that follows does the work);
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
use crate::event::SourceEvent;
use serde_json::{json, Map, Value};
use shared::ejson::to_search_json;
use shared::event::Operation;

/// The field holding the sync metadata in every document.
pub const SYNC_FIELD: &str = "_sync";

/// Longest `_id` Elasticsearch accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// What to do in Elasticsearch for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Index the whole document (external version).
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
    /// Delete the document (external version).
    Delete {
        /// Target index or alias.
        index: String,
        /// Elasticsearch `_id`.
        id: String,
        /// External version.
        version: u64,
    },
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

impl Action {
    /// Operation name for metrics (`index`, `delete`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Index { .. } => "index",
            Self::Delete { .. } => "delete",
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
    /// The event's cluster time is far ahead of the clock.
    #[error("cluster time {t} is {ahead} s ahead of this host's clock (limit {limit} s)")]
    FutureVersion {
        /// Cluster time seconds of the event.
        t: u32,
        /// Seconds ahead.
        ahead: u64,
        /// The configured limit.
        limit: u64,
    },
}

/// Refuses an event from the future (see `consumer.max_future_seconds`).
pub fn check_not_future(ev: &SourceEvent, now_secs: u64, limit: u64) -> Result<(), ActionError> {
    let t = u64::from(ev.cluster_time.t);
    if t > now_secs + limit {
        return Err(ActionError::FutureVersion {
            t: ev.cluster_time.t,
            ahead: t - now_secs,
            limit,
        });
    }
    Ok(())
}

impl ActionError {
    /// Short machine-readable name, for the DLQ and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingId(_) => "missing_id",
            Self::IdTooLong(_) => "id_too_long",
            Self::NotAnObject => "invalid_document",
            Self::FutureVersion { .. } => "future_version",
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
        Operation::Delete => {
            let id = find_id(&route.id_field, None, &ev.key)?;
            Ok(Action::Delete {
                index: index.to_string(),
                id,
                version,
            })
        }
        Operation::Insert | Operation::Update | Operation::Replace | Operation::Snapshot => {
            let Some(doc) = &ev.doc else {
                // An update whose lookup found nothing: a delete follows.
                return Ok(Action::Skip);
            };
            let (id, mut body) = document(doc, &ev.key, route)?;
            body.insert(
                SYNC_FIELD.to_string(),
                json!({
                    "version": version,
                    "op": ev.op.as_str(),
                    "ns": ev.ns.to_string(),
                    "partition": partition,
                    "cluster_time": {"t": ev.cluster_time.t, "i": ev.cluster_time.i},
                }),
            );
            Ok(Action::Index {
                index: index.to_string(),
                id,
                version,
                source: Value::Object(body),
            })
        }
    }
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
    let id = find_id(&route.id_field, Some(doc), key)?;
    let Value::Object(mut body) = to_search_json(doc) else {
        return Err(ActionError::NotAnObject);
    };
    body.remove("_id");
    Ok((id, project(body, &route.projection)))
}

/// The `_id` from `field` (dotted path), looked up in the document, then in
/// the key (which holds `_id` and any shard key).
fn find_id(field: &str, doc: Option<&Value>, key: &Value) -> Result<String, ActionError> {
    let lookup = |root: &Value| {
        field
            .split('.')
            .try_fold(root, |v, seg| v.get(seg))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let value = doc
        .and_then(lookup)
        .or_else(|| lookup(key))
        .ok_or_else(|| ActionError::MissingId(field.to_string()))?;
    let id = render_id(&value);
    if id.len() > MAX_ID_BYTES {
        return Err(ActionError::IdTooLong(id.len()));
    }
    if id.is_empty() {
        return Err(ActionError::MissingId(field.to_string()));
    }
    Ok(id)
}

/// ObjectId -> hex, string as is, number -> decimal, anything else ->
/// its canonical (compact) Extended JSON text.
pub fn render_id(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) if m.len() == 1 => match m.iter().next().map(|(k, v)| (k.as_str(), v)) {
            Some(("$oid", Value::String(s))) => s.clone(),
            Some(("$numberInt" | "$numberLong", Value::String(s))) => s.clone(),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
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
        Action::Index { id, .. } | Action::Delete { id, .. } => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Format;
    use shared::event::{ClusterTime, Namespace};
    use shared::version::Version;
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
            version: Version::from_u64(77),
            cluster_time: ClusterTime { t: 10, i: 2 },
            format: Format::Native,
        }
    }

    #[test]
    fn events_far_in_the_future_are_refused() {
        let e = ev(Operation::Insert, None);
        assert!(check_not_future(&e, 10, 0).is_ok());
        assert!(check_not_future(&e, 5, 5).is_ok());
        let err = check_not_future(&e, 4, 5).unwrap_err();
        assert_eq!(err.kind(), "future_version");
        assert!(err.to_string().contains("6 s ahead"), "{err}");
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
    fn update_without_doc_and_snapshot_start_do_nothing() {
        assert_eq!(
            build(&ev(Operation::Update, None), &route(), "c", 0).unwrap(),
            Action::Skip
        );
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
        assert_eq!(render_id(&json!({"$oid": "abc"})), "abc");
        assert_eq!(render_id(&json!("plain")), "plain");
        assert_eq!(render_id(&json!(42)), "42");
        assert_eq!(
            render_id(&json!({"$numberLong": "9007199254740993"})),
            "9007199254740993"
        );
        assert_eq!(render_id(&json!({"a": 1, "b": "x"})), r#"{"a":1,"b":"x"}"#);
        assert_eq!(render_id(&json!(true)), "true");
    }

    #[test]
    fn custom_id_field_and_missing_id() {
        let mut r = route();
        r.id_field = "author.id".into();
        let mut doc = card();
        doc["author"] = json!({"id": 9});
        let Action::Index { id, .. } =
            build(&ev(Operation::Insert, Some(doc)), &r, "c", 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(id, "9");
        let err = build(&ev(Operation::Insert, Some(card())), &r, "c", 0).unwrap_err();
        assert_eq!(err.kind(), "missing_id");
        let long = json!({"_id": "x".repeat(600)});
        let err = build(&ev(Operation::Insert, Some(long.clone())), &route(), "c", 0);
        // the doc id wins over the key
        assert_eq!(err.unwrap_err(), ActionError::IdTooLong(600));
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
