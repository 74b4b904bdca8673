//! Bulk indexing: [`request`] builds NDJSON bodies cut by count, bytes and
//! time; [`retry`] classifies a bulk response item by item; [`service`]
//! sends, retries only the retryable items, and reports every item's final
//! outcome.

pub mod request;
pub mod retry;
pub mod service;
