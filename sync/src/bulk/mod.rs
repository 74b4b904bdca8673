//! Bulk indexing: [`request`] holds the items of a request and the limits
//! it is cut at; [`resolve`] turns patches into `index` actions just before
//! a batch is sent; [`retry`] classifies a bulk response item by item
//! ([`answer`]: an answer without failures, read without a tree);
//! [`service`] writes each request into one buffer, sends it, retries only
//! the retryable items, and reports every item's final outcome.

pub mod answer;
pub mod request;
pub mod resolve;
pub mod retry;
pub mod service;
