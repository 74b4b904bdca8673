//! One bulk request of one partition: resolve its patches
//! ([`crate::bulk::resolve`], the read retried until it succeeds), send it
//! ([`crate::bulk::service`]), dead-letter its permanent failures, and
//! report the offsets done. While Elasticsearch refuses the index (a block,
//! a closed or missing index), the partition shows it waiting. Each item
//! accepted is reported with its MongoDB commit time to
//! [`crate::freshness`] (which finds when it became searchable).
//!
//! Delivery guarantee: an offset is reported done only when its item was
//! accepted, conflicted, skipped or dead-lettered (the DLQ copy
//! acknowledged); anything abandoned (stop fired) is redelivered later.

use super::partition::{Queued, WaitKind, Waiting, Work};
use super::poller::Tp;
use super::Report;
use crate::bulk::request::Item;
use crate::bulk::resolve::{self, Body, Resolved, Target};
use crate::bulk::service::{BulkService, Final};
use crate::dlq::{DlqReason, DlqWriter, RawRecord};
use crate::metrics::Metrics;
use elasticsearch::Elasticsearch;
use shared::retry::RetryConfig;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a bulk task needs.
pub(super) struct BulkJob {
    pub(super) tp: Tp,
    pub(super) epoch: u64,
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<Report>,
    pub(super) svc: BulkService,
    pub(super) es: Elasticsearch,
    pub(super) retry: RetryConfig,
    pub(super) dlq: DlqWriter,
    /// The partition's cancellation (revoked, restarted, hard stop).
    pub(super) stop: CancellationToken,
    pub(super) metrics: Metrics,
}

/// One record of the request.
struct Taken {
    body: Body,
    target: Target,
    offset: i64,
    kind: &'static str,
    record: Arc<RawRecord>,
    commit_ms: Option<i64>,
}

impl BulkJob {
    /// Resolves, sends and dead-letters `queued`; returns the offsets done.
    pub(super) async fn run(self, queued: Vec<Queued>) -> Vec<i64> {
        let batch: Vec<Taken> = queued
            .into_iter()
            .filter_map(|q| match q.work {
                Work::Bulk {
                    body,
                    target,
                    kind,
                    commit_ms,
                    ..
                } => Some(Taken {
                    body,
                    target,
                    offset: q.offset,
                    kind,
                    record: q.record,
                    commit_ms,
                }),
                Work::Cleanup { .. } => None,
            })
            .collect();
        let Some(resolved) = self.resolve(&batch).await else {
            return Vec::new();
        };
        let mut finals: Vec<Option<Final>> = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        for (k, (taken, r)) in batch.iter().zip(resolved).enumerate() {
            match r {
                Resolved::Send(lines) => {
                    finals.push(None);
                    items.push(Item { lines, meta: k });
                }
                Resolved::Stale => finals.push(Some(Final::Conflict)),
                Resolved::NoBase => {
                    self.metrics
                        .count(&taken.target.index, "skipped_no_base", 1);
                    tracing::debug!(index = %taken.target.index, id = %taken.target.id, "patch without a base document: skipped");
                    finals.push(Some(Final::Skipped));
                }
            }
        }
        let mut waited = false;
        let on_blocked = |_: &[usize], reason: &str| {
            waited = true;
            let _ = self.tx.send(Report::Waiting {
                tp: self.tp.clone(),
                epoch: self.epoch,
                why: Waiting::Index(format!(
                    "Elasticsearch refuses writes to {}, retrying until it accepts them: {reason}",
                    self.tp.0
                )),
            });
        };
        for (k, fin) in self.svc.execute(items, &self.stop, on_blocked).await {
            finals[k] = Some(fin);
        }
        if waited {
            let _ = self.tx.send(Report::WaitOver {
                tp: self.tp.clone(),
                epoch: self.epoch,
                kind: WaitKind::Index,
            });
        }
        let mut done = Vec::with_capacity(batch.len());
        for (taken, fin) in batch.iter().zip(finals) {
            if self.finish(taken, fin.unwrap_or(Final::Abandoned)).await {
                done.push(taken.offset);
            }
        }
        done
    }

    /// The batch's patches resolved (every item [`Resolved::Send`] when it
    /// has none); the read is retried until it succeeds or `stop` fires
    /// (`None`: nothing is done, the records are redelivered).
    async fn resolve(&self, batch: &[Taken]) -> Option<Vec<Resolved>> {
        if !batch.iter().any(|t| matches!(t.body, Body::Patch(_))) {
            return Some(
                batch
                    .iter()
                    .map(|t| match &t.body {
                        Body::Ready(lines) => Resolved::Send(lines.clone()),
                        Body::Patch(_) => Resolved::NoBase,
                    })
                    .collect(),
            );
        }
        let refs: Vec<(&Body, &Target)> = batch.iter().map(|t| (&t.body, &t.target)).collect();
        let metrics = self.metrics.clone();
        shared::retry::retry_forever(
            &self.retry,
            &self.stop,
            |e: &crate::elastic::EsError, d| {
                metrics.retry("patch_read", 1);
                tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "reading the documents to patch failed; retrying");
            },
            || resolve::resolve(&self.es, &refs),
        )
        .await
        .ok()
    }

    /// Counts an item's final outcome (dead-lettering a permanent one);
    /// `true` when its offset is done.
    async fn finish(&self, t: &Taken, fin: Final) -> bool {
        let index = &t.target.index;
        match fin {
            Final::Success => {
                let what = if t.kind == "delete" {
                    "deleted"
                } else {
                    "indexed"
                };
                self.metrics.count(index, what, 1);
                // Freshness hook: accepted now, searchable after a refresh.
                self.metrics.freshness.accepted(index, t.commit_ms);
                true
            }
            Final::Conflict => {
                self.metrics.count(index, "conflicted", 1);
                true
            }
            Final::Skipped => true,
            Final::Permanent { error_type, reason } => {
                let why = DlqReason {
                    error_type,
                    reason,
                    index: Some(index.clone()),
                };
                let ok = self.dlq.send(&t.record, &why, &self.stop).await;
                if ok {
                    self.metrics.count(index, "dead_lettered", 1);
                }
                ok
            }
            Final::Abandoned => false,
        }
    }
}
