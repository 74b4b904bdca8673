//! A change event over the Kafka record limit, cut to fit: its largest
//! text fields shortened (on a UTF-8 character boundary) until the record
//! fits, with a `_truncated` field in the document saying which and how
//! large the event was (policy `truncate`, the default).
//!
//! Why cut rather than only dead-letter (the seed incident: one 1.1 MB
//! post): a dead-lettered post vanishes from search, and an update that
//! makes a post too large would leave its older version searchable. A cut
//! post is still found by everything but the end of its longest text, at
//! the change's own version (so the older version is replaced), and the
//! dead-letter topic gets a pointer (`record_truncated`, naming the fields)
//! so nothing is cut silently. The update description and the pre-image
//! are dropped (the document is enough, and they may hold the same large
//! text). When cutting text cannot make it fit (a huge array of numbers),
//! the event is only dead-lettered, as before.

use crate::kafka::record::Record;
use serde_json::{json, Map, Value};
use shared::wire::event::ChangeEvent;

/// The field added to a cut document.
pub const MARKER: &str = "_truncated";

/// Room kept below the limit when cutting (the marker, rounding).
const SLACK: usize = 512;

/// A cut event's record and what was cut.
#[derive(Debug)]
pub struct Cut {
    /// The record of the cut event.
    pub record: Record,
    /// The fields cut (dotted paths).
    pub fields: Vec<String>,
    /// Bytes of the record before the cut.
    pub original: usize,
}

/// `ev` cut so its record fits `limit` (see the module documentation);
/// `None` when it cannot be (no document, or not enough text).
pub fn to_fit(
    ev: &ChangeEvent,
    topic: &str,
    partition: Option<i32>,
    key: Option<String>,
    limit: usize,
) -> Option<Cut> {
    let original = Record::event(topic, partition, key.clone(), ev).wire_size();
    let mut ev = ev.clone();
    ev.update = None;
    ev.before = None;
    let mut fields: Vec<String> = Vec::new();
    for _ in 0..64 {
        {
            let Some(Value::Object(doc)) = ev.doc.as_mut() else {
                return None;
            };
            doc.insert(
                MARKER.to_string(),
                json!({"fields": fields, "original_size": original}),
            );
        }
        let record = Record::event(topic, partition, key.clone(), &ev);
        let size = record.wire_size();
        if size <= limit {
            return (!fields.is_empty()).then_some(Cut {
                record,
                fields,
                original,
            });
        }
        let over = size - limit + SLACK;
        let Some(Value::Object(doc)) = ev.doc.as_mut() else {
            return None;
        };
        let (path, len) = largest_string(doc)?;
        if len == 0 {
            return None;
        }
        let keep = len.saturating_sub(over);
        cut_at(doc, &path, keep);
        let dotted = path.join(".");
        if !fields.contains(&dotted) {
            fields.push(dotted);
        }
    }
    None
}

/// The path and byte length of the longest string of `doc` (not `_id`,
/// not the marker).
fn largest_string(doc: &Map<String, Value>) -> Option<(Vec<String>, usize)> {
    fn walk(v: &Value, path: &mut Vec<String>, best: &mut Option<(Vec<String>, usize)>) {
        match v {
            Value::String(s) if best.as_ref().is_none_or(|(_, l)| s.len() > *l) => {
                *best = Some((path.clone(), s.len()));
            }
            Value::Object(m) => {
                for (k, v) in m {
                    path.push(k.clone());
                    walk(v, path, best);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    let mut path = Vec::new();
    for (k, v) in doc {
        if k == "_id" || k == MARKER {
            continue;
        }
        path.push(k.clone());
        walk(v, &mut path, &mut best);
        path.pop();
    }
    best
}

/// Shortens the string at `path` to at most `keep` bytes, on a character
/// boundary.
fn cut_at(doc: &mut Map<String, Value>, path: &[String], keep: usize) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let mut cur = doc.get_mut(first);
    for seg in rest {
        cur = match cur {
            Some(Value::Object(m)) => m.get_mut(seg),
            Some(Value::Array(a)) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
    }
    if let Some(Value::String(s)) = cur {
        let mut at = keep.min(s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::event::{ClusterTime, Namespace, Operation, SCHEMA};

    fn ev(doc: Value) -> ChangeEvent {
        ChangeEvent {
            schema: SCHEMA.into(),
            op: Operation::Insert,
            ns: Namespace {
                db: "mountain".into(),
                coll: "card".into(),
            },
            key: json!({"_id": "c1"}),
            doc: Some(doc),
            update: None,
            before: None,
            cluster_time: ClusterTime { t: 1, i: 1 },
            wall_time: None,
            version: 1 << 31,
            txn: None,
            snapshot: None,
        }
    }

    #[test]
    fn the_largest_korean_text_is_cut_on_a_character_boundary_to_fit() {
        // 1.1 MB of Hangul (3 bytes each), like the post of the incident.
        let body = "설악산단풍".repeat(80_000);
        let e = ev(json!({"_id": "c1", "title": "큰 글", "body": body, "tags": ["x"]}));
        let limit = 1_048_576;
        let cut = to_fit(&e, "t", None, Some("\"c1\"".into()), limit).unwrap();
        assert!(cut.record.wire_size() <= limit);
        assert!(cut.original > limit);
        assert_eq!(cut.fields, vec!["body".to_string()]);
        let back: ChangeEvent = serde_json::from_slice(&cut.record.value).unwrap();
        let doc = back.doc.unwrap();
        let kept = doc["body"].as_str().unwrap();
        assert!(
            body.starts_with(kept) && kept.len() > 1_000_000,
            "a prefix, most of it"
        );
        assert_eq!(doc["title"], "큰 글");
        assert_eq!(doc[MARKER]["fields"], json!(["body"]));
        assert_eq!(doc[MARKER]["original_size"], cut.original);
        assert_eq!(back.version, e.version, "the change's own version");
    }

    #[test]
    fn several_fields_and_nested_ones_are_cut_in_turn() {
        let e = ev(
            json!({"_id": "c1", "a": "x".repeat(600), "n": {"b": "y".repeat(500)}, "c": "z".repeat(400)}),
        );
        let cut = to_fit(&e, "t", None, None, 1_200).unwrap();
        assert!(cut.record.wire_size() <= 1_200);
        assert!(cut.fields.contains(&"a".to_string()), "{:?}", cut.fields);
    }

    #[test]
    fn what_text_cannot_fix_is_not_cut() {
        let nums: Vec<u32> = (0..100_000).collect();
        let e = ev(json!({"_id": "c1", "n": nums}));
        assert!(to_fit(&e, "t", None, None, 10_000).is_none());
        let mut delete = ev(json!({}));
        delete.doc = None;
        assert!(to_fit(&delete, "t", None, None, 10).is_none());
    }
}
