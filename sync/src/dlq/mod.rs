//! The dead-letter topic (default `{prefix}.dlq.sync`): what cannot be
//! indexed goes there with its reason, and the record counts as done.
//!
//! A dead-lettered record is either (headers and pointer schema in
//! [`shared::wire::dlq`], documented in `docs/sync.md`):
//!
//! - a **copy**: the original key and value bytes unchanged (so it can be
//!   produced back to its topic once fixed, `es-sync dlq replay`) and the
//!   original headers, plus these headers:
//!
//! | header | value |
//! |---|---|
//! | `dlq.error.type` | machine-readable type: `not_json`, `unknown_operation`, `missing_id`, `bad_version`, `document_parsing_exception`, ... |
//! | `dlq.error.reason` | human-readable reason |
//! | `dlq.source.topic` | original topic |
//! | `dlq.source.partition` | original partition, decimal |
//! | `dlq.source.offset` | original offset, decimal |
//! | `dlq.source.timestamp` | original record timestamp (ms), when known |
//! | `dlq.index` | target index or alias, when known |
//! | `dlq.failed_at` | time of dead-lettering, ms since the epoch |
//!
//! - a **pointer** when the copy would be over the dead-letter topic's
//!   `max.message.bytes` (read from the broker, [`probe`]; the size is the
//!   one the broker counts, [`shared::wire::record_size`]): the same added
//!   headers, `dlq.pointer`, and a small JSON value naming the original's
//!   topic, partition, offset, key, size and reason ([`outgoing`]).
//!
//! Delivery guarantee: at-least-once. The producer is idempotent with
//! `acks=all`; a record counts as done only after the broker acknowledged
//! its dead-letter copy or pointer, so a crash before that delivers it
//! again (and it may be dead-lettered twice). A write that fails (topic
//! missing, not authorized, broker away) is retried with backoff until it
//! works: the partition waits meanwhile, shown on `/status`, counted in
//! `es_sync_dlq_write_errors_total` and `es_sync_dlq_unavailable`, logged
//! once per episode ([`writer`]).

pub mod fault;
pub mod outgoing;
pub mod probe;
pub mod writer;

pub use outgoing::Form;
pub use shared::wire::dlq::headers;
pub use writer::DlqWriter;

/// Why a record is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqReason {
    /// Machine-readable type.
    pub error_type: String,
    /// Human-readable reason.
    pub reason: String,
    /// Target index, when known.
    pub index: Option<String>,
}
