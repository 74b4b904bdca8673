//! Applying an update's `updateDescription` (the MongoDB Kafka Connector's
//! default output: no `fullDocument`) onto the document the index holds.
//!
//! The index holds the search form of the document
//! ([`shared::ejson::to_search_json`], projected by the topic's
//! projection, without `_id`). A delta is applied to that form: each path's
//! top-level field goes through the projection (an excluded or not included
//! field is left out, a renamed one is renamed), each value is turned into
//! its search form. The order is MongoDB's: arrays are truncated first
//! (`truncatedArrays`), then fields set (`updatedFields`), then removed
//! (`removedFields`).
//!
//! Paths are dotted; a segment of digits is an array index when the value
//! at that point is an array and a field name otherwise (as MongoDB reads
//! it). `disambiguatedPaths` (MongoDB 6.1+), when given for a path, spells
//! its segments out and wins.
//!
//! Delivery guarantee: none needed, a pure function. It is applied only on
//! top of a document whose version is older than the update's (see
//! [`crate::bulk::resolve`]), so replays and duplicates stay harmless.

use crate::config::ProjectionConfig;
use serde_json::{Map, Value};
use shared::ejson::to_search_json;
use shared::wire::event::UpdateDescription;

/// Longest array index a delta may address: MongoDB pads an array with
/// nulls up to an index it sets, and a corrupt delta must not make us
/// allocate gigabytes.
const MAX_INDEX: usize = 1 << 20;

/// A path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// A field name.
    Field(String),
    /// An array index (as spelled out by `disambiguatedPaths`).
    Index(usize),
    /// Digits: an index in an array, a field name in a document.
    Either(String, usize),
}

/// Applies `update` to `body` (the indexed search form) under `projection`.
pub fn apply(
    body: &mut Map<String, Value>,
    update: &UpdateDescription,
    projection: &ProjectionConfig,
) {
    for t in &update.truncated_arrays {
        let (Some(field), Some(size)) = (
            t.get("field").and_then(Value::as_str),
            t.get("newSize").and_then(size_of),
        ) else {
            continue;
        };
        if let Some(segs) = segments(field, update, projection) {
            if let Some(Value::Array(a)) = walk(body, &segs) {
                a.truncate(size);
            }
        }
    }
    for (path, value) in &update.updated_fields {
        if let Some(segs) = segments(path, update, projection) {
            set(body, &segs, to_search_json(value));
        }
    }
    for path in &update.removed_fields {
        if let Some(segs) = segments(path, update, projection) {
            remove(body, &segs);
        }
    }
}

/// `newSize` as written by MongoDB (int) or as relaxed/canonical
/// Extended JSON.
fn size_of(v: &Value) -> Option<usize> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::Object(m) => m
            .get("$numberInt")
            .or_else(|| m.get("$numberLong"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        _ => None,
    }?;
    usize::try_from(n).ok()
}

/// The segments of `path`, its top-level field mapped through the
/// projection; `None` when the field is not indexed (or is `_id`).
fn segments(path: &str, update: &UpdateDescription, p: &ProjectionConfig) -> Option<Vec<Seg>> {
    let mut segs: Vec<Seg> = match update
        .disambiguated_paths
        .get(path)
        .and_then(Value::as_array)
    {
        Some(parts) => parts
            .iter()
            .map(|s| match s {
                Value::String(f) => Some(Seg::Field(f.clone())),
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Seg::Index),
                _ => None,
            })
            .collect::<Option<_>>()?,
        None => path
            .split('.')
            .map(|s| match s.parse::<usize>() {
                Ok(i) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    Seg::Either(s.to_string(), i)
                }
                _ => Seg::Field(s.to_string()),
            })
            .collect(),
    };
    let top = match segs.first()? {
        Seg::Field(f) | Seg::Either(f, _) => f.clone(),
        Seg::Index(_) => return None,
    };
    if top == "_id"
        || (!p.include.is_empty() && !p.include.contains(&top))
        || p.exclude.contains(&top)
    {
        return None;
    }
    if let Some(to) = p.rename.get(&top) {
        segs[0] = Seg::Field(to.clone());
    }
    Some(segs)
}

/// The value at `segs`, if it exists.
fn walk<'a>(body: &'a mut Map<String, Value>, segs: &[Seg]) -> Option<&'a mut Value> {
    let (first, rest) = segs.split_first()?;
    let mut cur = body.get_mut(field_name(first)?)?;
    for seg in rest {
        cur = match cur {
            Value::Array(a) => a.get_mut(index_of(seg)?)?,
            Value::Object(m) => m.get_mut(field_name(seg)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn field_name(seg: &Seg) -> Option<&str> {
    match seg {
        Seg::Field(f) | Seg::Either(f, _) => Some(f),
        Seg::Index(_) => None,
    }
}

fn index_of(seg: &Seg) -> Option<usize> {
    match seg {
        Seg::Index(i) | Seg::Either(_, i) => Some(*i).filter(|i| *i <= MAX_INDEX),
        Seg::Field(_) => None,
    }
}

/// Sets the value at `segs`, creating documents on the way (and padding
/// arrays with nulls, as MongoDB does).
fn set(body: &mut Map<String, Value>, segs: &[Seg], value: Value) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let Some(name) = field_name(first) else {
        return;
    };
    if rest.is_empty() {
        body.insert(name.to_string(), value);
        return;
    }
    let slot = body
        .entry(name.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    set_in(slot, rest, value);
}

fn set_in(cur: &mut Value, segs: &[Seg], value: Value) {
    let Some((seg, rest)) = segs.split_first() else {
        *cur = value;
        return;
    };
    if !cur.is_object() && !cur.is_array() {
        *cur = Value::Object(Map::new());
    }
    match cur {
        Value::Array(a) => {
            let Some(i) = index_of(seg) else { return };
            if a.len() <= i {
                a.resize(i + 1, Value::Null);
            }
            if rest.is_empty() {
                a[i] = value;
            } else {
                set_in(&mut a[i], rest, value);
            }
        }
        Value::Object(m) => {
            let Some(name) = field_name(seg) else { return };
            if rest.is_empty() {
                m.insert(name.to_string(), value);
            } else {
                let slot = m
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                set_in(slot, rest, value);
            }
        }
        _ => {}
    }
}

/// Removes the field at `segs` (an array element becomes null, as
/// MongoDB's `$unset` leaves it).
fn remove(body: &mut Map<String, Value>, segs: &[Seg]) {
    let Some((last, parent)) = segs.split_last() else {
        return;
    };
    if parent.is_empty() {
        if let Some(name) = field_name(last) {
            body.remove(name);
        }
        return;
    }
    match walk(body, parent) {
        Some(Value::Object(m)) => {
            if let Some(name) = field_name(last) {
                m.remove(name);
            }
        }
        Some(Value::Array(a)) => {
            if let Some(slot) = index_of(last).and_then(|i| a.get_mut(i)) {
                *slot = Value::Null;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn desc(v: Value) -> UpdateDescription {
        serde_json::from_value(v).unwrap()
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn applied(b: Value, d: Value) -> Value {
        let mut b = body(b);
        apply(&mut b, &desc(d), &ProjectionConfig::default());
        Value::Object(b)
    }

    #[test]
    fn sets_and_removes_top_level_and_nested_fields() {
        let out = applied(
            json!({"title": "a", "likes": 1, "draft": true, "author": {"id": 1, "name": "김"}}),
            json!({"updated_fields": {"likes": 2, "author.name": "이", "meta.lang": "ko"},
                   "removed_fields": ["draft", "author.id"]}),
        );
        assert_eq!(
            out,
            json!({"title": "a", "likes": 2, "author": {"name": "이"}, "meta": {"lang": "ko"}})
        );
    }

    #[test]
    fn values_take_their_search_form() {
        let out = applied(
            json!({}),
            json!({"updated_fields": {
                "at": {"$date": "2024-01-02T03:04:05.678Z"},
                "ref": {"$oid": "65a1b2c3d4e5f60718293a4b"},
                "big": {"$numberLong": "9007199254740993"}}}),
        );
        assert_eq!(
            out,
            json!({"at": "2024-01-02T03:04:05.678Z", "ref": "65a1b2c3d4e5f60718293a4b",
                   "big": "9007199254740993"})
        );
    }

    #[test]
    fn array_indexes_truncation_and_padding() {
        // [a,b,c,d] -> pop twice, then set [1] and append at [3] (padded).
        let out = applied(
            json!({"tags": ["a", "b", "c", "d"], "n": {"0": "zero"}}),
            json!({"updated_fields": {"tags.1": "B", "tags.3": "D", "n.0": "ZERO"},
                   "truncated_arrays": [{"field": "tags", "newSize": 2}]}),
        );
        assert_eq!(
            out,
            json!({"tags": ["a", "B", null, "D"], "n": {"0": "ZERO"}}),
            "digits index an array, name a field of a document"
        );
        let out = applied(
            json!({"tags": ["a", "b"]}),
            json!({"removed_fields": ["tags.0"], "truncated_arrays": [{"field": "tags", "newSize": {"$numberInt": "1"}}]}),
        );
        assert_eq!(out, json!({"tags": [null]}));
    }

    #[test]
    fn nested_arrays_of_documents() {
        let out = applied(
            json!({"comments": [{"by": "a", "n": 1}, {"by": "b", "n": 2}]}),
            json!({"updated_fields": {"comments.1.n": 3}, "removed_fields": ["comments.0.by"]}),
        );
        assert_eq!(out, json!({"comments": [{"n": 1}, {"by": "b", "n": 3}]}));
    }

    #[test]
    fn disambiguated_paths_win() {
        // A field named "a.b" and a field named "1" inside an array element.
        let out = applied(
            json!({"a.b": 1, "arr": [{"1": "x"}]}),
            json!({"updated_fields": {"a.b": 2, "arr.0.1": "y"},
                   "disambiguated_paths": {"a.b": ["a.b"], "arr.0.1": ["arr", 0, "1"]}}),
        );
        assert_eq!(out, json!({"a.b": 2, "arr": [{"1": "y"}]}));
    }

    #[test]
    fn projection_applies_to_the_top_level_field() {
        let p = ProjectionConfig {
            include: vec![],
            exclude: vec!["secret".into()],
            rename: BTreeMap::from([("likes".to_string(), "like_count".to_string())]),
        };
        let mut b = body(json!({"like_count": 1, "title": "t"}));
        apply(
            &mut b,
            &desc(
                json!({"updated_fields": {"likes": 5, "secret": "s", "_id": "x"},
                         "removed_fields": ["title"]}),
            ),
            &p,
        );
        assert_eq!(Value::Object(b), json!({"like_count": 5}));
        let only = ProjectionConfig {
            include: vec!["title".into()],
            ..ProjectionConfig::default()
        };
        let mut b = body(json!({"title": "t"}));
        apply(
            &mut b,
            &desc(json!({"updated_fields": {"title": "u", "body": "b"}})),
            &only,
        );
        assert_eq!(Value::Object(b), json!({"title": "u"}));
    }

    #[test]
    fn odd_deltas_never_panic_or_explode() {
        let out = applied(
            json!({"s": "scalar", "arr": [1]}),
            json!({"updated_fields": {"s.x": 1, "arr.99999999999": 2, "": 3, "arr.x": 4},
                   "removed_fields": ["nope.deep", "arr.5", ""],
                   "truncated_arrays": [{"field": "s", "newSize": 0}, {"field": "arr"}, 7]}),
        );
        assert_eq!(
            out["s"],
            json!({"x": 1}),
            "a scalar on the path becomes a document"
        );
        assert_eq!(out["arr"], json!([1]), "an absurd index is ignored");
    }
}
