//! An `index` item's document as it waits in the queue: where its JSON
//! text is, the `_sync` object it gets, the topic's projection; and how
//! its `_source` line is written (streamed, or by the tree path when the
//! streaming pass leaves it).

use super::stream::{self, StreamError, TopLevel};
use super::EncodeError;
use crate::action::{self, SYNC_FIELD};
use crate::config::ProjectionConfig;
use crate::event::Span;
use crate::record::RawRecord;
use serde::Serialize;
use serde_json::{Map, Value};
use shared::wire::event::{ClusterTime, Operation};
use std::sync::Arc;

/// Where a document's JSON text is.
#[derive(Debug, Clone)]
pub enum DocText {
    /// In the record's value.
    Record(Arc<RawRecord>, Span),
    /// In the text a connector record carried as a JSON string.
    Inner(Arc<str>, Span),
}

impl DocText {
    /// The text (empty if the span is outside it, which decoding never
    /// makes).
    pub fn bytes(&self) -> &[u8] {
        let (all, s) = match self {
            Self::Record(r, s) => (r.payload.as_deref().unwrap_or_default(), s),
            Self::Inner(t, s) => (t.as_bytes(), s),
        };
        all.get(s.start..s.end).unwrap_or_default()
    }
}

/// The `_sync` object of a written document: where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncInfo {
    /// The change's version.
    pub version: u64,
    /// Its operation.
    pub op: Operation,
    /// `db.coll`, shared by the queued documents of a namespace
    /// ([`crate::action::NsNames`]).
    pub ns: Arc<str>,
    /// The Kafka partition it was read from.
    pub partition: i32,
    /// Its cluster time.
    pub cluster_time: ClusterTime,
    /// For a child of the roll-up: its parent's Elasticsearch id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl SyncInfo {
    /// As a JSON object (the tree path's `_sync`).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Bytes of its JSON, about.
    pub fn len_hint(&self) -> usize {
        120 + self.ns.len() + self.parent.as_ref().map_or(0, |p| p.len() + 12)
    }
}

/// An `index` item's document, still as text.
#[derive(Debug, Clone)]
pub struct DocBody {
    /// Where the document's JSON text is.
    pub text: DocText,
    /// What `_sync` gets.
    pub sync: SyncInfo,
    /// The topic's projection.
    pub projection: Arc<ProjectionConfig>,
}

impl PartialEq for DocBody {
    fn eq(&self, other: &Self) -> bool {
        self.text.bytes() == other.text.bytes()
            && self.sync == other.sync
            && self.projection == other.projection
    }
}

impl DocBody {
    /// Bytes of the `_source` line, about (the text's length: the
    /// rewrite only shortens wrappers).
    pub fn len_hint(&self) -> usize {
        self.text.bytes().len() + self.sync.len_hint() + 1
    }

    /// Appends the `_source` line (with its newline) to `out`; on an error
    /// `out` is left as it was.
    pub fn write_source(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let p = &*self.projection;
        let skip = |k: &str| {
            k == "_id"
                || (!p.include.is_empty() && !p.include.iter().any(|f| f == k))
                || p.exclude.iter().any(|f| f == k)
        };
        let rename = |k: &str| p.rename.get(k).map(String::as_str);
        let append = |out: &mut Vec<u8>| {
            out.push(b'"');
            out.extend_from_slice(SYNC_FIELD.as_bytes());
            out.extend_from_slice(b"\":");
            let _ = serde_json::to_writer(&mut *out, &self.sync);
        };
        let top = TopLevel {
            skip: &skip,
            rename: &rename,
            append: &append,
            reserved: SYNC_FIELD,
            renames: !p.rename.is_empty(),
        };
        match stream::write_document(self.text.bytes(), &top, out) {
            Ok(()) => {
                out.push(b'\n');
                Ok(())
            }
            Err(StreamError::Fallback) => {
                out.truncate(start);
                let tree = self.source_tree()?;
                let _ = serde_json::to_writer(&mut *out, &tree);
                out.push(b'\n');
                Ok(())
            }
            Err(StreamError::Json(e)) => {
                out.truncate(start);
                Err(EncodeError::NotJson(e.to_string()))
            }
        }
    }

    /// The `_source` by the tree path: [`action::document_body`] plus
    /// `_sync`.
    pub fn source_tree(&self) -> Result<Map<String, Value>, EncodeError> {
        let doc: Value = serde_json::from_slice(self.text.bytes())
            .map_err(|e| EncodeError::NotJson(e.to_string()))?;
        let mut body =
            action::document_body(&doc, &self.projection).map_err(|_| EncodeError::NotAnObject)?;
        body.insert(SYNC_FIELD.to_string(), self.sync.to_value());
        Ok(body)
    }
}
