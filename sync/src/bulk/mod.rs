//! Bulk indexing: [`request`] builds NDJSON bodies cut by count, bytes and
//! time; [`resolve`] turns patches into `index` actions just before a
//! batch is sent; [`retry`] classifies a bulk response item by item; [`service`]
//! sends, retries only the retryable items, and reports every item's final
//! outcome.

pub mod request;
pub mod resolve;
pub mod retry;
pub mod service;
