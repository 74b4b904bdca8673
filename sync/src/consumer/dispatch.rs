//! Dispatch: when a bulk request is due, building it round-robin from the
//! heads of idle partitions, and the tasks (bulk requests, dead-letter
//! writes) that report back to the loop. A bulk task first resolves the
//! batch's patches ([`crate::bulk::resolve`]), retrying the read until it
//! succeeds, then sends.

use super::clock::sendable;
use super::partition::{Queued, Work};
use super::{Loop, Report, Tp};
use crate::bulk::request::Item;
use crate::bulk::resolve::{self, Body, Resolved, Target};
use crate::bulk::service::{BulkService, Final};
use crate::dlq::{DlqReason, RawRecord};
use crate::metrics::Metrics;
use elasticsearch::Elasticsearch;
use shared::retry::RetryConfig;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bulk item metadata.
struct Meta {
    tp: Tp,
    epoch: u64,
    offset: i64,
    index: String,
    kind: &'static str,
    record: Arc<RawRecord>,
}

/// An item taken from a partition queue for one bulk request.
struct Taken {
    body: Body,
    target: Target,
    meta: Meta,
}

impl Loop {
    /// When the oldest waiting bulk item is due (its linger time is over).
    /// `None` while no request could start anyway (every slot in flight,
    /// or leaving): the loop then waits for a report instead of waking at
    /// a deadline already past, which would spin a core while
    /// Elasticsearch, on the same host, needs it.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        if self.in_flight >= self.cfg.bulk.max_in_flight
            || self.hard_stop.is_cancelled()
            || self.leaving.is_some()
            || self.left
        {
            return None;
        }
        self.parts
            .values()
            .filter(|p| !p.busy)
            .filter_map(|p| p.queue.front())
            .filter(|q| sendable(q))
            .map(|q| q.received + self.limits.linger)
            .min()
            .map(tokio::time::Instant::from_std)
    }

    /// Starts bulk requests and cleanups while slots are free.
    pub(super) fn pump(&mut self) {
        if self.hard_stop.is_cancelled() || self.leaving.is_some() || self.left {
            return;
        }
        while self.in_flight < self.cfg.bulk.max_in_flight {
            // Cleanups at the head of idle partitions first.
            let cleanup = self
                .parts
                .iter()
                .find(|(_, p)| {
                    !p.busy
                        && matches!(
                            p.queue.front(),
                            Some(q @ Queued {
                                work: Work::Cleanup { .. },
                                ..
                            }) if q.ready()
                        )
                })
                .map(|(tp, _)| tp.clone());
            if let Some(tp) = cleanup {
                self.start_cleanup(&tp);
                continue;
            }
            // Is a bulk due?
            let now = Instant::now();
            let (mut count, mut bytes, mut due) = (0usize, 0usize, false);
            for p in self.parts.values().filter(|p| !p.busy) {
                let Some(head) = p.queue.front().filter(|q| sendable(q)) else {
                    continue;
                };
                count += p.queued_items;
                bytes += p.queued_bytes;
                due |= now >= head.received + self.limits.linger;
            }
            if count == 0
                || !(due || count >= self.limits.max_actions || bytes >= self.limits.max_bytes)
            {
                return;
            }
            if !self.start_bulk() {
                return;
            }
        }
    }

    /// Starts one bulk request; `false` if there was nothing to send.
    fn start_bulk(&mut self) -> bool {
        let mut keys: Vec<Tp> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.busy)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        if keys.is_empty() {
            return false;
        }
        self.rr = self.rr.wrapping_add(1);
        let start = self.rr % keys.len();
        keys.rotate_left(start);
        let mut batch: Vec<Taken> = Vec::new();
        let mut bytes = 0usize;
        let mut release = Vec::new();
        'parts: for tp in keys {
            let Some(p) = self.parts.get_mut(&tp) else {
                continue;
            };
            let mut took = false;
            while let Some(q) = p.queue.front().filter(|q| sendable(q)) {
                let Work::Bulk { size, .. } = &q.work else {
                    break;
                };
                let fits = batch.is_empty()
                    || (batch.len() < self.limits.max_actions
                        && bytes + size <= self.limits.max_bytes);
                if !fits {
                    if took {
                        p.busy = true;
                        release.push((tp.clone(), p.epoch));
                    }
                    break 'parts;
                }
                let Some(q) = p.queue.pop_front() else { break };
                let Work::Bulk {
                    body,
                    target,
                    size,
                    kind,
                } = q.work
                else {
                    break;
                };
                p.queued_items = p.queued_items.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(size);
                bytes += size;
                let index = target.index.clone();
                batch.push(Taken {
                    body,
                    target,
                    meta: Meta {
                        tp: tp.clone(),
                        epoch: p.epoch,
                        offset: q.offset,
                        index,
                        kind,
                        record: q.record,
                    },
                });
                took = true;
            }
            if took {
                p.busy = true;
                release.push((tp.clone(), p.epoch));
            }
        }
        if batch.is_empty() {
            return false;
        }
        self.in_flight += 1;
        #[allow(clippy::cast_precision_loss)]
        self.metrics.bulk_in_flight.observe(self.in_flight as f64);
        self.tasks += 1;
        let job = BulkJob {
            svc: self.bulk.clone(),
            es: self.es.clone(),
            retry: self.cfg.retry.clone(),
            stop: self.hard_stop.clone(),
            metrics: self.metrics.clone(),
            tx: self.tx.clone(),
        };
        let tx = self.tx.clone();
        tracing::debug!(items = batch.len(), bytes, "sending bulk");
        tokio::spawn(async move {
            let done = job.run(batch).await;
            let _ = tx.send(Report::Finished {
                release,
                done,
                slot: true,
            });
        });
        true
    }

    pub(super) fn spawn_dlq(
        &mut self,
        tp: Tp,
        epoch: u64,
        record: Arc<RawRecord>,
        why: DlqReason,
        index: String,
    ) {
        self.tasks += 1;
        let dlq = self.dlq.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        let wait = super::partition::dlq_wait(&self.tx, &tp, epoch);
        tokio::spawn(async move {
            let ok = dlq.send(&record, &why, &stop, &wait).await.is_some();
            let mut done = Vec::new();
            if ok {
                metrics.count(&index, "dead_lettered", 1);
                done.push((tp, epoch, record.offset));
            }
            let _ = tx.send(Report::Finished {
                release: Vec::new(),
                done,
                slot: false,
            });
        });
    }
}

/// What a bulk task needs.
struct BulkJob {
    svc: BulkService,
    es: Elasticsearch,
    retry: RetryConfig,
    stop: CancellationToken,
    metrics: Metrics,
    /// Hands permanent failures to dead-letter tasks.
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
}

impl BulkJob {
    /// Resolves, sends and dead-letters `batch`; returns the offsets done.
    async fn run(self, batch: Vec<Taken>) -> Vec<(Tp, u64, i64)> {
        let Some(resolved) = self.resolve(&batch).await else {
            return Vec::new();
        };
        let mut finals: Vec<Option<Final>> = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        let mut metas = Vec::with_capacity(batch.len());
        for (taken, r) in batch.into_iter().zip(resolved) {
            match r {
                Resolved::Send(lines) => {
                    finals.push(None);
                    items.push(Item {
                        lines,
                        meta: metas.len(),
                    });
                }
                Resolved::Stale => finals.push(Some(Final::Conflict)),
                Resolved::NoBase => {
                    self.metrics.count(&taken.meta.index, "skipped_no_base", 1);
                    tracing::debug!(index = %taken.meta.index, id = %taken.target.id, "patch without a base document: skipped");
                    finals.push(Some(Final::Skipped));
                }
            }
            metas.push(taken.meta);
        }
        for (k, fin) in self.svc.execute(items, &self.stop).await {
            finals[k] = Some(fin);
        }
        let mut done = Vec::with_capacity(metas.len());
        for (meta, fin) in metas.into_iter().zip(finals) {
            if self.finish(&meta, fin.unwrap_or(Final::Abandoned)).await {
                done.push((meta.tp, meta.epoch, meta.offset));
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
        let out = shared::retry::retry_forever(
            &self.retry,
            &self.stop,
            |e: &crate::elastic::EsError, d| {
                metrics.retry("patch_read", 1);
                tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "reading the documents to patch failed; retrying");
            },
            || resolve::resolve(&self.es, &refs),
        )
        .await;
        out.ok()
    }

    /// Counts an item's final outcome (handing a permanent one to a
    /// dead-letter task); `true` when its offset is done now.
    async fn finish(&self, meta: &Meta, fin: Final) -> bool {
        match fin {
            Final::Success => {
                let what = if meta.kind == "delete" {
                    "deleted"
                } else {
                    "indexed"
                };
                self.metrics.count(&meta.index, what, 1);
                true
            }
            Final::Conflict => {
                self.metrics.count(&meta.index, "conflicted", 1);
                true
            }
            Final::Skipped => true,
            Final::Permanent { error_type, reason } => {
                // Written by its own task ([`Loop::spawn_dlq`]): the bulk's
                // slot and the other partitions of the request go on while
                // the dead-letter topic is away; only this partition's
                // commit waits for the write.
                let _ = self.tx.send(Report::DeadLetter {
                    tp: meta.tp.clone(),
                    epoch: meta.epoch,
                    record: meta.record.clone(),
                    why: DlqReason {
                        error_type,
                        reason,
                        index: Some(meta.index.clone()),
                    },
                    index: meta.index.clone(),
                });
                false
            }
            Final::Abandoned => false,
        }
    }
}
