//! Bulk request bodies: one NDJSON action line (plus a source line for
//! `index`) per item, collected into a [`Batch`] that is cut at whichever
//! limit of [`BulkLimits`] comes first: action count, bytes, or the linger
//! deadline since its oldest item (defaults and their reasons are in
//! [`crate::config::BulkConfig`]).
//!
//! Delivery guarantee of this stage: none needed, pure data; a batch owns
//! its items until the service reports their outcome.

use crate::action::Action;
use crate::config::BulkConfig;
use serde_json::json;
use std::time::{Duration, Instant};

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
/// `\n`); `None` for actions that are not bulk items.
pub fn encode(action: &Action) -> Option<Vec<u8>> {
    let (head, source) = match action {
        Action::Index {
            index,
            id,
            version,
            source,
        } => (
            json!({"index": {"_index": index, "_id": id, "version": version, "version_type": "external"}}),
            Some(source),
        ),
        Action::Delete { index, id, version } => (
            json!({"delete": {"_index": index, "_id": id, "version": version, "version_type": "external"}}),
            None,
        ),
        Action::Patch(_) | Action::SnapshotEnd { .. } | Action::Skip => return None,
    };
    let mut out = head.to_string().into_bytes();
    out.push(b'\n');
    if let Some(src) = source {
        out.extend_from_slice(src.to_string().as_bytes());
        out.push(b'\n');
    }
    Some(out)
}

/// One bulk item: its NDJSON lines and what the caller attaches to it.
#[derive(Debug, Clone)]
pub struct Item<M> {
    /// The NDJSON lines ([`encode`]).
    pub lines: Vec<u8>,
    /// Caller data (the originating record).
    pub meta: M,
}

/// Items collected for one bulk request.
#[derive(Debug)]
pub struct Batch<M> {
    items: Vec<Item<M>>,
    bytes: usize,
    oldest: Option<Instant>,
}

impl<M> Default for Batch<M> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            oldest: None,
        }
    }
}

impl<M> Batch<M> {
    /// Whether `lines` may still be added under `limits` (an empty batch
    /// takes any item, so an oversized document still goes, alone).
    pub fn fits(&self, lines_len: usize, limits: &BulkLimits) -> bool {
        self.items.is_empty()
            || (self.items.len() < limits.max_actions && self.bytes + lines_len <= limits.max_bytes)
    }

    /// Adds an item received at `received`.
    pub fn push(&mut self, item: Item<M>, received: Instant) {
        self.bytes += item.lines.len();
        self.oldest = Some(self.oldest.map_or(received, |o| o.min(received)));
        self.items.push(item);
    }

    /// Whether a count or byte limit is reached.
    pub fn is_full(&self, limits: &BulkLimits) -> bool {
        self.items.len() >= limits.max_actions || self.bytes >= limits.max_bytes
    }

    /// When the linger deadline of the oldest item passes.
    pub fn deadline(&self, limits: &BulkLimits) -> Option<Instant> {
        self.oldest.map(|o| o + limits.linger)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// NDJSON bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The items.
    pub fn into_items(self) -> Vec<Item<M>> {
        self.items
    }
}

/// The request body for `items`, in order.
pub fn body<M>(items: &[Item<M>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.lines.len()).sum());
    for i in items {
        out.extend_from_slice(&i.lines);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    #[test]
    fn batch_cuts_by_count_bytes_and_time() {
        let limits = BulkLimits {
            max_actions: 3,
            max_bytes: 100,
            linger: Duration::from_millis(50),
        };
        let t0 = Instant::now();
        let mut b: Batch<u32> = Batch::default();
        assert!(b.deadline(&limits).is_none());
        for n in 0..3 {
            assert!(b.fits(10, &limits));
            b.push(
                Item {
                    lines: vec![b'x'; 10],
                    meta: n,
                },
                t0 + Duration::from_millis(n.into()),
            );
        }
        assert!(b.is_full(&limits) && !b.fits(10, &limits), "count limit");
        assert_eq!(b.deadline(&limits), Some(t0 + Duration::from_millis(50)));

        let mut b: Batch<u32> = Batch::default();
        b.push(
            Item {
                lines: vec![b'x'; 60],
                meta: 0,
            },
            t0,
        );
        assert!(!b.fits(60, &limits), "byte limit");
        assert!(!b.is_full(&limits));
        b.push(
            Item {
                lines: vec![b'x'; 40],
                meta: 1,
            },
            t0,
        );
        assert!(b.is_full(&limits));
        assert_eq!(b.bytes(), 100);
        assert_eq!(body(&b.into_items()).len(), 100);

        let empty: Batch<u32> = Batch::default();
        assert!(empty.fits(10_000, &limits), "an oversized item goes alone");
    }
}
