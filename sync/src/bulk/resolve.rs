//! Turning the patches of a batch ([`Action::Patch`]: updates that carry
//! only what changed) into `index` actions, just before the batch is sent.
//!
//! A patch applies to the newest state of its document: an earlier item of
//! the same batch when there is one, else the document the index holds,
//! read with one realtime `_mget` for all of them. The consumer sends the
//! items of a partition in order and starts a partition's next batch only
//! after its previous one finished ([`crate::consumer`]), so that state is
//! exactly the state after every earlier change of the document.
//!
//! - base newer than or as new as the patch (a replay, a duplicate): the
//!   patch is done, as a version conflict would be;
//! - base older: the patched document is indexed at the patch's version;
//! - no base (never indexed, or deleted): the pre-image when the event
//!   carries one, else nothing can be built: the patch is skipped and
//!   counted (`skipped_no_base`). This happens on a replay of a document
//!   deleted later (its delete is applied, so skipping is right), or when
//!   the document's earlier history is no longer in the topic.
//!
//! Delivery guarantee: none by itself; a failed `_mget` fails the batch's
//! resolution and the caller retries it (nothing is sent until it
//! succeeds).

use super::request::encode;
use crate::action::{Action, Patch};
use crate::elastic::{self, EsError, Fetched};
use crate::encode::{action_line, action_line_len, DocBody, EncodeError};
use elasticsearch::Elasticsearch;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One item of a batch before resolution.
#[derive(Debug)]
pub enum Body {
    /// NDJSON lines of an `index` or `delete` ([`encode`]).
    Ready(Vec<u8>),
    /// An `index` whose document is still the record's text
    /// ([`crate::encode`]).
    Doc(Box<DocBody>),
    /// A `delete` (its line is its target's).
    Delete,
    /// A patch to resolve.
    Patch(Box<Patch>),
}

impl Body {
    /// Appends the lines of this item, of target `t`, to `out`; on an
    /// error `out` is left as it was. A patch is never written (it is
    /// resolved into lines first).
    pub fn write(&self, t: &Target, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Ready(lines) => out.extend_from_slice(lines),
            Self::Doc(d) => {
                let start = out.len();
                action_line(out, t);
                if let Err(e) = d.write_source(out) {
                    out.truncate(start);
                    return Err(e);
                }
            }
            Self::Delete => action_line(out, t),
            Self::Patch(_) => {
                return Err(EncodeError::NotJson(
                    "a patch is resolved before it is written".into(),
                ))
            }
        }
        Ok(())
    }

    /// Bytes it writes, about (a patch: its update's size).
    pub fn len_hint(&self, t: &Target) -> usize {
        match self {
            Self::Ready(lines) => lines.len(),
            Self::Doc(d) => action_line_len(t) + d.len_hint(),
            Self::Delete => action_line_len(t),
            Self::Patch(p) => {
                action_line_len(t)
                    + serde_json::to_vec(&p.update).map_or(0, |v| v.len())
                    + p.sync.to_string().len()
            }
        }
    }
}

/// What a queued item targets: (index, id), its version, whether it
/// deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index or alias (shared by the queued items of a topic).
    pub index: Arc<str>,
    /// Elasticsearch `_id`.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// A `delete`.
    pub delete: bool,
}

/// The outcome of resolving one item.
#[derive(Debug, PartialEq)]
pub enum Resolved {
    /// Send the item as it was queued.
    Queued,
    /// Send these NDJSON lines (a patched document).
    Send(Vec<u8>),
    /// Nothing to send: the index already holds this or a newer version.
    Stale,
    /// Nothing to send: no base to apply the patch to.
    NoBase,
}

/// The newest known state of a document while walking a batch.
#[derive(Debug, Clone)]
enum State {
    /// Indexed by an earlier item of the batch (that item) at a version.
    Lines(usize, u64),
    /// A document (patched, or fetched) at a version.
    Doc(Map<String, Value>, u64),
    /// Deleted (or never indexed) as of a version (0: unknown).
    Gone(u64),
}

/// Resolves `items` (in partition order); `items[k].1` is the target of
/// item `k`. Reads the index only when a patch has no earlier item of its
/// document in the batch.
pub async fn resolve(
    es: &Elasticsearch,
    items: &[(&Body, &Target)],
) -> Result<Vec<Resolved>, EsError> {
    let wanted = to_fetch(items);
    let fetched = if wanted.is_empty() {
        Vec::new()
    } else {
        elastic::mget(es, &wanted).await?
    };
    let known: HashMap<(String, String), State> = wanted
        .into_iter()
        .zip(fetched)
        .map(|(k, f)| {
            let s = match f {
                Fetched::Found { version, source } => State::Doc(source, version),
                Fetched::Missing => State::Gone(0),
            };
            (k, s)
        })
        .collect();
    Ok(apply_all(items, known))
}

/// The documents whose first item in the batch is a patch.
fn to_fetch(items: &[(&Body, &Target)]) -> Vec<(String, String)> {
    let mut seen: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (body, t) in items {
        if seen.insert((&*t.index, t.id.as_str())) && matches!(body, Body::Patch(_)) {
            out.push((t.index.to_string(), t.id.clone()));
        }
    }
    out
}

/// The pure part of [`resolve`]: `known` holds the fetched documents.
fn apply_all(
    items: &[(&Body, &Target)],
    mut known: HashMap<(String, String), State>,
) -> Vec<Resolved> {
    let mut out: Vec<Resolved> = Vec::with_capacity(items.len());
    for (k, (body, t)) in items.iter().enumerate() {
        let key = (t.index.to_string(), t.id.clone());
        match body {
            Body::Ready(_) | Body::Doc(_) | Body::Delete => {
                let state = if t.delete {
                    State::Gone(t.version)
                } else {
                    State::Lines(k, t.version)
                };
                known.insert(key, state);
                out.push(Resolved::Queued);
            }
            Body::Patch(p) => {
                let base = match known.get(&key) {
                    Some(State::Lines(at, v)) => match (&out[*at], items[*at].0) {
                        (Resolved::Queued, Body::Ready(lines)) => source_of(lines).map(|s| (s, *v)),
                        (Resolved::Queued, Body::Doc(d)) => d.source_tree().ok().map(|s| (s, *v)),
                        (Resolved::Send(lines), _) => source_of(lines).map(|s| (s, *v)),
                        _ => None,
                    },
                    Some(State::Doc(d, v)) => Some((d.clone(), *v)),
                    Some(State::Gone(_)) | None => None,
                };
                let gone_at = match known.get(&key) {
                    Some(State::Gone(v)) => *v,
                    _ => 0,
                };
                let result = match base {
                    Some((_, v)) if v >= p.version => Resolved::Stale,
                    None if gone_at >= p.version => Resolved::Stale,
                    Some((doc, _)) => patched(p, doc, &mut known, key),
                    None => match &p.before {
                        Some(before) => patched(p, before.clone(), &mut known, key),
                        None => Resolved::NoBase,
                    },
                };
                out.push(result);
            }
        }
    }
    out
}

fn patched(
    p: &Patch,
    base: Map<String, Value>,
    known: &mut HashMap<(String, String), State>,
    key: (String, String),
) -> Resolved {
    let doc = p.apply_to(base);
    let action = Action::Index {
        index: p.index.clone(),
        id: p.id.clone(),
        version: p.version,
        source: Value::Object(doc.clone()),
    };
    known.insert(key, State::Doc(doc, p.version));
    match encode(&action) {
        Some(lines) => Resolved::Send(lines),
        None => Resolved::NoBase,
    }
}

/// The `_source` of an `index` item's NDJSON lines.
pub fn source_of(lines: &[u8]) -> Option<Map<String, Value>> {
    let nl = lines.iter().position(|b| *b == b'\n')?;
    match serde_json::from_slice(&lines[nl + 1..]).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProjectionConfig;
    use serde_json::json;

    fn target(id: &str, version: u64, delete: bool) -> Target {
        Target {
            index: "cards".into(),
            id: id.into(),
            version,
            delete,
        }
    }

    fn index(id: &str, version: u64, source: Value) -> (Body, Target) {
        let a = Action::Index {
            index: "cards".into(),
            id: id.into(),
            version,
            source,
        };
        (Body::Ready(encode(&a).unwrap()), target(id, version, false))
    }

    fn delete(id: &str, version: u64) -> (Body, Target) {
        let a = Action::Delete {
            index: "cards".into(),
            id: id.into(),
            version,
        };
        (Body::Ready(encode(&a).unwrap()), target(id, version, true))
    }

    fn patch(id: &str, version: u64, set: Value, before: Option<Value>) -> (Body, Target) {
        let p = Patch {
            index: "cards".into(),
            id: id.into(),
            version,
            update: serde_json::from_value(json!({"updated_fields": set})).unwrap(),
            before: before.map(|b| b.as_object().unwrap().clone()),
            sync: json!({"version": version}),
            projection: ProjectionConfig::default(),
        };
        (Body::Patch(Box::new(p)), target(id, version, false))
    }

    fn run(items: &[(Body, Target)], fetched: Vec<((&str, &str), Fetched)>) -> Vec<Resolved> {
        let refs: Vec<(&Body, &Target)> = items.iter().map(|(b, t)| (b, t)).collect();
        let known = fetched
            .into_iter()
            .map(|((i, d), f)| {
                let s = match f {
                    Fetched::Found { version, source } => State::Doc(source, version),
                    Fetched::Missing => State::Gone(0),
                };
                ((i.to_string(), d.to_string()), s)
            })
            .collect();
        apply_all(&refs, known)
    }

    fn sent(r: &Resolved) -> (Value, Value) {
        let Resolved::Send(lines) = r else {
            panic!("{r:?}")
        };
        let lines = lines.clone();
        let text = std::str::from_utf8(&lines).unwrap();
        let mut it = text.lines();
        let head: Value = serde_json::from_str(it.next().unwrap()).unwrap();
        let src: Value = serde_json::from_str(it.next().unwrap_or("null")).unwrap();
        (head, src)
    }

    #[test]
    fn only_patches_without_an_earlier_item_are_fetched() {
        let items = [
            index("a", 10, json!({"t": 1})),
            patch("a", 20, json!({"t": 2}), None),
            patch("b", 20, json!({"t": 2}), None),
            delete("c", 5),
            patch("c", 20, json!({"t": 2}), None),
            patch("b", 30, json!({"t": 3}), None),
        ];
        let refs: Vec<(&Body, &Target)> = items.iter().map(|(b, t)| (b, t)).collect();
        assert_eq!(
            to_fetch(&refs),
            vec![("cards".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn a_patch_applies_to_the_batch_item_before_it_then_chains() {
        let items = [
            index(
                "a",
                10,
                json!({"t": 1, "keep": true, "_sync": {"version": 10}}),
            ),
            patch("a", 20, json!({"t": 2}), None),
            patch("a", 30, json!({"n": 3}), None),
        ];
        let out = run(&items, vec![]);
        let (head, src) = sent(&out[1]);
        assert_eq!(head["index"]["version"], 20);
        assert_eq!(src, json!({"t": 2, "keep": true, "_sync": {"version": 20}}));
        let (head, src) = sent(&out[2]);
        assert_eq!(head["index"]["version"], 30);
        assert_eq!(
            src,
            json!({"t": 2, "keep": true, "n": 3, "_sync": {"version": 30}})
        );
    }

    #[test]
    fn a_patch_applies_to_the_fetched_document_only_if_older() {
        let doc = |v: u64| Fetched::Found {
            version: v,
            source: json!({"t": 1, "_sync": {"version": v}})
                .as_object()
                .unwrap()
                .clone(),
        };
        let items = [patch("a", 20, json!({"t": 2}), None)];
        let (_, src) = sent(&run(&items, vec![(("cards", "a"), doc(10))])[0]);
        assert_eq!(src["t"], 2);
        // A replay: the index already holds this version or a newer one.
        assert_eq!(
            run(&items, vec![(("cards", "a"), doc(20))]),
            vec![Resolved::Stale]
        );
        assert_eq!(
            run(&items, vec![(("cards", "a"), doc(25))]),
            vec![Resolved::Stale]
        );
        // A sink rewrite (roll-up) of the base stays below the next change.
        assert!(matches!(
            run(&items, vec![(("cards", "a"), doc(19))])[0],
            Resolved::Send(_)
        ));
    }

    #[test]
    fn without_a_base_the_pre_image_is_used_else_nothing() {
        let items = [patch(
            "a",
            20,
            json!({"t": 2}),
            Some(json!({"t": 1, "x": 0})),
        )];
        let (_, src) = sent(&run(&items, vec![(("cards", "a"), Fetched::Missing)])[0]);
        assert_eq!(src, json!({"t": 2, "x": 0, "_sync": {"version": 20}}));
        let items = [patch("a", 20, json!({"t": 2}), None)];
        assert_eq!(
            run(&items, vec![(("cards", "a"), Fetched::Missing)]),
            vec![Resolved::NoBase]
        );
        // Deleted later in the same batch order (a replay): stale.
        let items = [delete("a", 30), patch("a", 20, json!({"t": 2}), None)];
        assert_eq!(run(&items, vec![])[1], Resolved::Stale);
        // Deleted before: nothing to patch.
        let items = [delete("a", 10), patch("a", 20, json!({"t": 2}), None)];
        assert_eq!(run(&items, vec![])[1], Resolved::NoBase);
    }
}
