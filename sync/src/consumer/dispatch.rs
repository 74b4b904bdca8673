//! Dispatch: when a bulk request is due, building it round-robin from the
//! heads of idle partitions, and the tasks (bulk requests, dead-letter
//! writes) that report back to the loop.

use super::partition::{Queued, Work};
use super::{Loop, Report, Tp};
use crate::bulk::request::{Batch, Item};
use crate::bulk::service::Final;
use crate::dlq::{DlqReason, RawRecord};
use std::sync::Arc;
use std::time::Instant;

/// Bulk item metadata.
struct Meta {
    tp: Tp,
    epoch: u64,
    offset: i64,
    index: String,
    kind: &'static str,
    record: Arc<RawRecord>,
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
            .filter(|q| matches!(q.work, Work::Bulk { .. }))
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
                            Some(Queued {
                                work: Work::Cleanup { .. },
                                ..
                            })
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
                count += p.queued_items;
                bytes += p.queued_bytes;
                if let Some(Queued {
                    work: Work::Bulk { .. },
                    received,
                    ..
                }) = p.queue.front()
                {
                    due |= now >= *received + self.limits.linger;
                }
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
        let mut batch: Batch<Meta> = Batch::default();
        let mut release = Vec::new();
        'parts: for tp in keys {
            let Some(p) = self.parts.get_mut(&tp) else {
                continue;
            };
            let mut took = false;
            while let Some(q) = p.queue.front() {
                let Work::Bulk { lines, .. } = &q.work else {
                    break;
                };
                if !batch.fits(lines.len(), &self.limits) {
                    if took {
                        p.busy = true;
                        release.push((tp.clone(), p.epoch));
                    }
                    break 'parts;
                }
                let Some(q) = p.queue.pop_front() else { break };
                let Work::Bulk { lines, index, kind } = q.work else {
                    break;
                };
                p.queued_items = p.queued_items.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(lines.len());
                batch.push(
                    Item {
                        lines,
                        meta: Meta {
                            tp: tp.clone(),
                            epoch: p.epoch,
                            offset: q.offset,
                            index,
                            kind,
                            record: q.record,
                        },
                    },
                    q.received,
                );
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
        let svc = self.bulk.clone();
        let dlq = self.dlq.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        tracing::debug!(items = batch.len(), bytes = batch.bytes(), "sending bulk");
        tokio::spawn(async move {
            let results = svc.execute(batch.into_items(), &stop).await;
            let mut done = Vec::with_capacity(results.len());
            for (meta, fin) in results {
                let finished = match fin {
                    Final::Success => {
                        metrics.count(
                            &meta.index,
                            if meta.kind == "delete" {
                                "deleted"
                            } else {
                                "indexed"
                            },
                            1,
                        );
                        true
                    }
                    Final::Conflict => {
                        metrics.count(&meta.index, "conflicted", 1);
                        true
                    }
                    Final::Permanent { error_type, reason } => {
                        let why = DlqReason {
                            error_type,
                            reason,
                            index: Some(meta.index.clone()),
                        };
                        let ok = dlq.send(&meta.record, &why, &stop).await;
                        if ok {
                            metrics.count(&meta.index, "dead_lettered", 1);
                        }
                        ok
                    }
                    Final::Abandoned => false,
                };
                if finished {
                    done.push((meta.tp, meta.epoch, meta.offset));
                }
            }
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
        tokio::spawn(async move {
            let ok = dlq.send(&record, &why, &stop).await;
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
