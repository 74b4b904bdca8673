//! Writing bulk items straight into the request buffer.
//!
//! A queued `index` item keeps no encoded copy of its document: its
//! [`DocBody`] says where the document's JSON text is (in the record's
//! value, which the queue holds anyway for the dead-letter topic) and what
//! `_sync` gets. When a request is sent, each item's action line and
//! `_source` line are written into one buffer for the whole request
//! ([`crate::bulk::service`]), the source in one streaming pass that
//! rewrites the Extended JSON wrappers ([`stream`]), and that buffer goes
//! to the HTTP client as it is.
//!
//! The source is [`shared::ejson::to_search_json`] of the document, without
//! `_id`, projected, plus `_sync`: the same values as the tree path
//! ([`crate::action::document`], which `verify` compares with), whichever
//! way it is written.
//!
//! Delivery guarantee: none needed, pure functions; a document that turns
//! out not to be JSON (or not an object) is an [`EncodeError`], and its
//! record goes to the dead-letter topic.

pub mod doc;
pub mod stream;

#[cfg(test)]
mod same_as_tree;

pub use doc::{DocBody, DocText, SyncInfo};

use crate::bulk::resolve::Target;

/// Why a document cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Its text is not JSON the tree path would parse.
    #[error("document is not JSON: {0}")]
    NotJson(String),
    /// It is not a JSON object (after the Extended JSON rewrite).
    #[error("document is not an object")]
    NotAnObject,
}

impl EncodeError {
    /// Short machine-readable name, for the DLQ (the names the decoding
    /// and the action building use for the same faults).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::NotAnObject => "invalid_document",
        }
    }
}

/// Appends the action line of `t` (`index` or `delete`, external version)
/// with its newline.
pub fn action_line(out: &mut Vec<u8>, t: &Target) {
    action_line_of(out, &t.index, &t.id, t.version, t.delete);
}

/// Appends an action line: `delete` or `index` of `id` in `index` at
/// external `version`, with its newline.
pub fn action_line_of(out: &mut Vec<u8>, index: &str, id: &str, version: u64, delete: bool) {
    out.extend_from_slice(if delete {
        b"{\"delete\":{\"_index\":"
    } else {
        b"{\"index\":{\"_index\":"
    });
    // Vec<u8> as io::Write cannot fail.
    let _ = serde_json::to_writer(&mut *out, index);
    out.extend_from_slice(b",\"_id\":");
    let _ = serde_json::to_writer(&mut *out, id);
    out.extend_from_slice(b",\"version\":");
    let _ = serde_json::to_writer(&mut *out, &version);
    out.extend_from_slice(b",\"version_type\":\"external\"}}\n");
}

/// Bytes of the action line of `t`, about (exact unless the id or the
/// index needs escapes).
pub fn action_line_len(t: &Target) -> usize {
    // {"index":{"_index":"","_id":"","version":,"version_type":"external"}}\n
    70 + t.index.len() + t.id.len() + 20
}
