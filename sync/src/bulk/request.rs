//! Bulk request items: one NDJSON action line (plus a source line for
//! `index`) per item, written into the request's buffer when it is sent
//! ([`ItemBody`]); and the limits a request is cut at, [`BulkLimits`]
//! (action count, bytes, or the linger deadline since its oldest item,
//! applied by [`crate::consumer`]'s partition queue; defaults and their
//! reasons are in [`crate::config::BulkConfig`]).
//!
//! Delivery guarantee of this stage: none needed, pure data.

use super::resolve::{source_of, Body, Target};
use crate::action::Action;
use crate::config::BulkConfig;
use crate::encode::{action_line_of, EncodeError};
use serde_json::{Map, Value};
use std::time::Duration;

/// The cut limits of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// Most items.
    pub max_actions: usize,
    /// Most bytes of NDJSON (a single larger item still goes alone).
    pub max_bytes: usize,
    /// Longest wait from the oldest item to the send.
    pub linger: Duration,
}

impl From<&BulkConfig> for BulkLimits {
    fn from(c: &BulkConfig) -> Self {
        Self {
            max_actions: c.max_actions,
            max_bytes: c.max_bytes,
            linger: Duration::from_millis(c.linger_ms),
        }
    }
}

/// The NDJSON lines of one `index` or `delete` action (each line ends with
/// `\n`); `None` for actions that are not bulk items, or a document that
/// cannot be written ([`crate::encode`]).
pub fn encode(action: &Action) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match action {
        Action::Index {
            index,
            id,
            version,
            source,
        } => {
            action_line_of(&mut out, index, id, *version, false);
            let _ = serde_json::to_writer(&mut out, source);
            out.push(b'\n');
        }
        Action::IndexDoc {
            index,
            id,
            version,
            body,
        } => {
            action_line_of(&mut out, index, id, *version, false);
            body.write_source(&mut out).ok()?;
        }
        Action::Delete { index, id, version } => {
            action_line_of(&mut out, index, id, *version, true);
        }
        Action::Patch(_) | Action::SnapshotEnd { .. } | Action::Skip => return None,
    }
    Some(out)
}

/// What one bulk item writes into the request.
#[derive(Debug, Clone)]
pub enum ItemBody<'a> {
    /// NDJSON lines built before (a patched document, a roll-up's
    /// compare-and-set).
    Lines(Vec<u8>),
    /// A queued item written as it is ([`Body::write`]).
    Queued(&'a Body, &'a Target),
}

impl ItemBody<'_> {
    /// Appends the item's lines to `out`; on an error `out` is left as it
    /// was.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Lines(l) => {
                out.extend_from_slice(l);
                Ok(())
            }
            Self::Queued(b, t) => b.write(t, out),
        }
    }

    /// Bytes it writes, about.
    pub fn len_hint(&self) -> usize {
        match self {
            Self::Lines(l) => l.len(),
            Self::Queued(b, t) => b.len_hint(t),
        }
    }

    /// The `_source` of an `index` item, as a tree.
    pub fn source(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Lines(l) => source_of(l),
            Self::Queued(Body::Ready(l), _) => source_of(l),
            Self::Queued(Body::Doc(d), _) => d.source_tree().ok(),
            Self::Queued(Body::Delete | Body::Patch(_), _) => None,
        }
    }
}

/// One bulk item and what the caller attaches to it.
#[derive(Debug)]
pub struct Item<'a, M> {
    /// What it writes.
    pub body: ItemBody<'a>,
    /// Caller data (the originating record).
    pub meta: M,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_and_delete_lines_use_external_versions() {
        let idx = Action::Index {
            index: "cards".into(),
            id: "a\"b".into(),
            version: 12,
            source: json!({"title": "한라산\n"}),
        };
        let text = String::from_utf8(encode(&idx).unwrap()).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(
            lines.len(),
            2,
            "the newline in the title is escaped: {text}"
        );
        let head: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            head,
            json!({"index": {"_index": "cards", "_id": "a\"b", "version": 12, "version_type": "external"}})
        );
        let src: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(src["title"], "한라산\n");

        let del = Action::Delete {
            index: "cards".into(),
            id: "x".into(),
            version: 13,
        };
        let text = String::from_utf8(encode(&del).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"delete\":{\"_index\":\"cards\",\"_id\":\"x\",\"version\":13,\"version_type\":\"external\"}}\n"
        );
        assert!(encode(&Action::Skip).is_none());
    }
}
