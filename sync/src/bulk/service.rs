//! Sending bulk requests with the `elasticsearch` crate.
//!
//! Each request's items are written into one buffer ([`super::request::ItemBody`]:
//! a queued document streamed from its record's text), handed to the HTTP
//! client as it is (`Bytes`, no copy), and Elasticsearch is asked for only
//! the fields the classification reads (`filter_path`); an answer without
//! errors is taken without parsing its items into a tree
//! ([`super::retry::classify_body`]).
//!
//! [`BulkService::execute`] sends a batch, classifies the answer with
//! [`super::retry::classify`], and sends again only the items classified
//! retryable, after an exponential backoff with jitter (the `backoff` crate
//! through [`shared::retry::RetryConfig`]), until every item has a final
//! outcome: success, conflict, or permanent failure. A request refused as
//! over `http.max_content_length` (413) is split in halves until it fits;
//! a single document that does not fit is a permanent failure.
//!
//! Delivery guarantee: every item gets a final outcome unless `stop` fires
//! (shutdown grace exhausted, or the partition was revoked): then the
//! remaining items are returned as [`Final::Abandoned`], their offsets are
//! not committed, and they are delivered again later. When
//! `retry.max_elapsed_ms` is set and exhausted, remaining items become
//! permanent failures (`retries_exhausted`) and go to the dead-letter topic.

use super::request::Item;
use super::retry::{classify_body, Outcome};
use crate::metrics::Metrics;
use backoff::backoff::Backoff as _;
use bytes::Bytes;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use shared::retry::RetryConfig;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a bulk answer is asked to hold: whether any item failed, and each
/// item's status, error and result (`result` tells a delete of a missing
/// document, 404 `not_found`, from a missing index). `_index`, `_id`,
/// `_version`, `_shards` and the rest are left out.
pub const FILTER_PATH: &str = "errors,items.*.status,items.*.error,items.*.result";

const NDJSON: &str = "application/x-ndjson";

/// The final outcome of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// Applied.
    Success,
    /// Version conflict: the index holds this or a newer version.
    Conflict,
    /// Will not succeed: dead-letter it.
    Permanent {
        /// Error type.
        error_type: String,
        /// Reason.
        reason: String,
    },
    /// Given up because of `stop`; redelivered later.
    Abandoned,
    /// Not sent: nothing to write (a patch without a base document).
    Skipped,
}

/// Sends bulk requests.
#[derive(Clone)]
pub struct BulkService {
    client: Elasticsearch,
    retry: RetryConfig,
    metrics: Metrics,
    /// Requests answer only once their documents are searchable
    /// (`refresh=wait_for`).
    wait_for_refresh: bool,
}

impl BulkService {
    /// A service on `client`.
    pub fn new(client: Elasticsearch, retry: RetryConfig, metrics: Metrics) -> Self {
        Self {
            client,
            retry,
            metrics,
            wait_for_refresh: false,
        }
    }

    /// This service, its requests answering once their documents are
    /// searchable (`refresh=wait_for`: the next scheduled refresh, never an
    /// extra one).
    pub fn waiting_for_refresh(&self) -> Self {
        Self {
            wait_for_refresh: true,
            ..self.clone()
        }
    }

    /// One bulk request of `payload` (sent as it is, no copy): HTTP status
    /// and body, `(None, None)` on a transport error. Elasticsearch is
    /// asked for only what the classification reads ([`FILTER_PATH`]).
    async fn send_once(&self, payload: Bytes) -> (Option<u16>, Option<Bytes>) {
        let size = payload.len();
        let started = Instant::now();
        let mut query: Vec<(&str, &str)> = vec![("filter_path", FILTER_PATH)];
        if self.wait_for_refresh {
            query.push(("refresh", "wait_for"));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        let resp = self
            .client
            .transport()
            .send(
                Method::Post,
                "/_bulk",
                headers,
                Some(&query),
                Some(payload),
                None,
            )
            .await;
        let out = match resp {
            Ok(r) => {
                let status = r.status_code().as_u16();
                (Some(status), r.bytes().await.ok())
            }
            Err(e) => {
                tracing::warn!(error = %e, bytes = size, "bulk request failed");
                (None, None)
            }
        };
        self.metrics
            .bulk_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.bulk_bytes.observe(size as f64);
        out
    }

    /// Sends `items` as one bulk request and classifies the answer. An item
    /// whose document cannot be written is a permanent failure (not sent).
    /// A request refused as too large (HTTP 413, over the node's
    /// `http.max_content_length`) is sent again in halves, each on its own,
    /// down to single items; a single item refused so can never fit and is
    /// a permanent failure naming its size. `None` when `stop` fires.
    async fn send_splitting<M>(
        &self,
        items: &[&Item<'_, M>],
        stop: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
        let mut out: Vec<Option<Outcome>> = vec![None; items.len()];
        // Items (indexes into `items`) still to send, last part first.
        let mut parts: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
        while let Some(part) = parts.pop() {
            let (payload, sent) = write_body(items, &part, &mut out);
            if sent.is_empty() {
                continue;
            }
            let bytes = payload.len();
            let (status, body) = tokio::select! {
                r = self.send_once(Bytes::from(payload)) => r,
                () = stop.cancelled() => return None,
            };
            let outcomes = classify_body(status, body.as_deref(), sent.len());
            if outcomes.first() == Some(&Outcome::TooLarge) {
                if sent.len() > 1 {
                    self.metrics.retry("413", sent.len() as u64);
                    tracing::warn!(
                        items = sent.len(),
                        bytes,
                        "bulk request over http.max_content_length (413): sending it in halves"
                    );
                    let (a, b) = sent.split_at(sent.len() / 2);
                    parts.push(b.to_vec());
                    parts.push(a.to_vec());
                } else {
                    out[sent[0]] = Some(Outcome::Permanent {
                        error_type: "request_too_large".into(),
                        reason: format!(
                            "a single document of {bytes} bytes of bulk NDJSON is over the node's \
                             http.max_content_length (HTTP 413)"
                        ),
                    });
                }
                continue;
            }
            for (&i, o) in sent.iter().zip(outcomes) {
                out[i] = Some(o);
            }
        }
        Some(
            out.into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome::Retry {
                        reason: "malformed_response".into(),
                    })
                })
                .collect(),
        )
    }

    /// Sends `items` until each has a final outcome (see the module docs).
    /// Outcomes are returned in the order of `items`. `on_blocked` is told,
    /// after each round that had blocked items, which items and why (the
    /// caller shows its partitions waiting); it is not called again once
    /// nothing is blocked.
    pub async fn execute<M>(
        &self,
        items: Vec<Item<'_, M>>,
        stop: &CancellationToken,
        mut on_blocked: impl FnMut(&[usize], &str),
    ) -> Vec<(M, Final)> {
        let mut done: Vec<Option<Final>> = vec![None; items.len()];
        // Why each item was last retried (for its dead letter, if it comes to that).
        let mut last_reason: Vec<Option<String>> = vec![None; items.len()];
        let mut blocked_now: Vec<bool> = vec![false; items.len()];
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let mut schedule = self.retry.backoff();
        let mut rounds = 0u32;
        let started = Instant::now();
        let mut was_blocked = false;
        while !todo.is_empty() {
            let sending: Vec<&Item<'_, M>> = todo.iter().map(|&i| &items[i]).collect();
            let Some(outcomes) = self.send_splitting(&sending, stop).await else {
                break;
            };
            let mut again = Vec::new();
            let mut reasons: Vec<(String, u64)> = Vec::new();
            let mut blocked: Vec<usize> = Vec::new();
            let mut blocked_reason = String::new();
            for (&i, outcome) in todo.iter().zip(outcomes) {
                blocked_now[i] = false;
                match outcome {
                    Outcome::Success => done[i] = Some(Final::Success),
                    Outcome::Conflict => done[i] = Some(Final::Conflict),
                    Outcome::Permanent { error_type, reason } => {
                        done[i] = Some(Final::Permanent { error_type, reason })
                    }
                    // (send_splitting resolves every 413; kept for completeness.)
                    Outcome::TooLarge => {
                        done[i] = Some(Final::Permanent {
                            error_type: "request_too_large".into(),
                            reason: "over the node's http.max_content_length (HTTP 413)".into(),
                        })
                    }
                    Outcome::Retry { reason } => {
                        count(&mut reasons, &reason);
                        last_reason[i] = Some(reason);
                        again.push(i);
                    }
                    Outcome::Blocked { error_type, reason } => {
                        count(&mut reasons, &error_type);
                        if blocked_reason.is_empty() {
                            blocked_reason = format!("{error_type}: {reason}");
                        }
                        blocked_now[i] = true;
                        blocked.push(i);
                        again.push(i);
                    }
                }
            }
            todo = again;
            if todo.is_empty() {
                break;
            }
            if !blocked.is_empty() {
                if !was_blocked {
                    tracing::warn!(
                        items = blocked.len(),
                        reason = %blocked_reason,
                        "Elasticsearch refuses writes to the index: retrying until an operator fixes it"
                    );
                }
                was_blocked = true;
                on_blocked(&blocked, &blocked_reason);
            }
            rounds += 1;
            let delay = match schedule.next_backoff() {
                Some(d) => d,
                None => {
                    // Out of time (retry.max_elapsed_ms): transient failures
                    // are dead-lettered; blocked ones never are, the
                    // operator's fix must still let them land.
                    let (exhausted, keep): (Vec<usize>, Vec<usize>) =
                        todo.iter().partition(|&&i| !blocked_now[i]);
                    for i in exhausted {
                        let why = last_reason[i].as_deref().unwrap_or("unknown");
                        done[i] = Some(Final::Permanent {
                            error_type: "retries_exhausted".into(),
                            reason: format!(
                                "still rejected ({why}) after retry.max_elapsed_ms = {} ms",
                                self.retry.max_elapsed_ms
                            ),
                        });
                    }
                    todo = keep;
                    if todo.is_empty() {
                        break;
                    }
                    std::time::Duration::from_millis(self.retry.max_ms)
                }
            };
            for (reason, n) in &reasons {
                self.metrics.retry(reason, *n);
            }
            if rounds == 1 || !was_blocked {
                tracing::info!(
                    items = todo.len(),
                    ?reasons,
                    delay_ms = delay.as_millis() as u64,
                    "retrying bulk items"
                );
            } else {
                tracing::debug!(items = todo.len(), ?reasons, "retrying bulk items");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => break,
            }
        }
        if was_blocked && todo.is_empty() {
            tracing::info!(
                seconds = started.elapsed().as_secs(),
                "the index accepts writes again: blocked items written"
            );
        }
        items
            .into_iter()
            .zip(done)
            .map(|(item, d)| (item.meta, d.unwrap_or(Final::Abandoned)))
            .collect()
    }
}

fn count(reasons: &mut Vec<(String, u64)>, reason: &str) {
    match reasons.iter_mut().find(|r| r.0 == reason) {
        Some(r) => r.1 += 1,
        None => reasons.push((reason.to_string(), 1)),
    }
}

/// The request body of the items `part` of `items`, written into one
/// buffer sized for them; the items written (in order). An item that
/// cannot be written gets its permanent outcome in `out`.
fn write_body<M>(
    items: &[&Item<'_, M>],
    part: &[usize],
    out: &mut [Option<Outcome>],
) -> (Vec<u8>, Vec<usize>) {
    let hint: usize = part.iter().map(|&i| items[i].body.len_hint()).sum();
    let mut buf = Vec::with_capacity(hint);
    let mut sent = Vec::with_capacity(part.len());
    for &i in part {
        match items[i].body.write(&mut buf) {
            Ok(()) => sent.push(i),
            Err(e) => {
                out[i] = Some(Outcome::Permanent {
                    error_type: e.kind().into(),
                    reason: e.to_string(),
                });
            }
        }
    }
    (buf, sent)
}
