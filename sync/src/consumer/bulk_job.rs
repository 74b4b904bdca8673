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

use super::partition::{Hint, Queued, WaitKind, Waiting, Work};
use super::poller::Tp;
use super::Report;
use crate::bulk::request::{Item, ItemBody};
use crate::bulk::resolve::{self, Body, Resolved, Target};
use crate::bulk::service::{BulkService, Final};
use crate::dlq::DlqReason;
use crate::metrics::Metrics;
use crate::record::RawRecord;
use crate::rollup::{self, Plan, Role};
use elasticsearch::Elasticsearch;
use shared::retry::RetryConfig;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Rounds of compare-and-set for the parents of one request.
const PARENT_ROUNDS: usize = 10;

/// What a bulk task needs.
pub(super) struct BulkJob {
    pub(super) tp: Tp,
    pub(super) epoch: u64,
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<Report>,
    pub(super) svc: BulkService,
    pub(super) es: Elasticsearch,
    pub(super) retry: RetryConfig,
    /// The partition's cancellation (revoked, restarted, hard stop).
    pub(super) stop: CancellationToken,
    pub(super) metrics: Metrics,
    /// The roll-up and this partition's role in it.
    pub(super) rollup: Option<(Arc<Plan>, Role)>,
}

/// One record of the request.
struct Taken {
    body: Body,
    target: Target,
    offset: i64,
    hint: Hint,
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
                    hint,
                    commit_ms,
                    ..
                } => Some(Taken {
                    body,
                    target,
                    offset: q.offset,
                    hint,
                    record: q.record,
                    commit_ms,
                }),
                Work::Cleanup { .. } => None,
            })
            .collect();
        let Some(resolved) = self.resolve(&batch).await else {
            return Vec::new();
        };
        let finals = match self.rollup.clone() {
            Some((plan, Role::Parent)) => self.send_parents(&plan, &batch, resolved).await,
            Some((plan, Role::Child)) => self.send_children(&plan, &batch, resolved).await,
            None => Some(self.send(&self.svc, &batch, resolved).await),
        };
        let Some(finals) = finals else {
            return Vec::new();
        };
        let mut done = Vec::with_capacity(batch.len());
        for (taken, fin) in batch.iter().zip(finals) {
            if self.finish(taken, fin.unwrap_or(Final::Abandoned)).await {
                done.push(taken.offset);
            }
        }
        done
    }

    /// Sends the resolved items of `batch` with `svc`; the final outcome of
    /// each (stale and skipped patches included).
    async fn send(
        &self,
        svc: &BulkService,
        batch: &[Taken],
        resolved: Vec<Resolved>,
    ) -> Vec<Option<Final>> {
        let mut finals: Vec<Option<Final>> = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for (k, (taken, r)) in batch.iter().zip(resolved).enumerate() {
            match r {
                Resolved::Queued => {
                    finals.push(None);
                    items.push(Item {
                        body: ItemBody::Queued(&taken.body, &taken.target),
                        meta: k,
                    });
                }
                Resolved::Send(lines) => {
                    finals.push(None);
                    items.push(Item {
                        body: ItemBody::Lines(lines),
                        meta: k,
                    });
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
        for (k, fin) in self.execute(svc, items).await {
            finals[k] = Some(fin);
        }
        finals
    }

    /// [`BulkService::execute`], the partition shown waiting while
    /// Elasticsearch refuses the index.
    async fn execute(&self, svc: &BulkService, items: Vec<Item<'_, usize>>) -> Vec<(usize, Final)> {
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
        let out = svc.execute(items, &self.stop, on_blocked).await;
        if waited {
            let _ = self.tx.send(Report::WaitOver {
                tp: self.tp.clone(),
                epoch: self.epoch,
                kind: WaitKind::Index,
            });
        }
        out
    }

    /// Children (replies): sent so that they are searchable when the
    /// request answers, then the roll-ups of the parents they point at now
    /// and pointed at before are computed again (see [`crate::rollup`]).
    /// `None` when stopped before the roll-up was written.
    async fn send_children(
        &self,
        plan: &Plan,
        batch: &[Taken],
        resolved: Vec<Resolved>,
    ) -> Option<Vec<Option<Final>>> {
        let ids: BTreeSet<String> = batch.iter().map(|t| t.target.id.clone()).collect();
        let requests = &self.metrics.rollup_requests;
        let held = self
            .forever("roll-up: reading the children's parents", || {
                rollup::store::children(&self.es, plan, &ids, requests)
            })
            .await?;
        let leaving = Leaving::of(batch, &held);
        // Parents that children leave (deleted, moved) are flagged before
        // the request: once it is applied, nothing in the children's index
        // names them any more.
        self.forever("roll-up: flagging the parents children leave", || {
            rollup::store::flag_pending(&self.es, plan, &leaving.parents, requests)
        })
        .await?;
        // A request that looks redelivered may follow one applied without
        // its roll-up (a crash in between): the parents it left are found
        // by their flags.
        let mut parents: BTreeSet<String> =
            held.values().filter_map(|c| c.parent.clone()).collect();
        if leaving.redelivered {
            parents.extend(
                self.forever("roll-up: reading the flagged parents", || {
                    rollup::store::pending(&self.es, plan, requests)
                })
                .await?,
            );
        }
        let finals = self
            .send(&self.svc.waiting_for_refresh(), batch, resolved)
            .await;
        shared::faults::stop_point(|| {
            format!(
                "sync.rollup.children_sent:{}",
                if leaving.parents.is_empty() {
                    "plain"
                } else {
                    "leaving"
                }
            )
        });
        parents.extend(batch.iter().filter_map(|t| match &t.hint {
            Hint::Child(Some(p)) => Some(p.clone()),
            _ => None,
        }));
        self.recompute(plan, &parents).await?;
        Some(finals)
    }

    /// Parents (cards): each change of a parent that exists is written as a
    /// compare-and-set carrying its current roll-up (refused if a roll-up
    /// or another write came in between: read again and retried); a parent
    /// that did not exist is written with its external version and its
    /// roll-up computed afterwards. `None` when stopped.
    async fn send_parents(
        &self,
        plan: &Plan,
        batch: &[Taken],
        resolved: Vec<Resolved>,
    ) -> Option<Vec<Option<Final>>> {
        let mut finals: Vec<Option<Final>> = vec![None; batch.len()];
        let mut lines: Vec<Option<ItemBody<'_>>> = Vec::with_capacity(batch.len());
        lines.resize_with(batch.len(), || None);
        for (k, r) in resolved.into_iter().enumerate() {
            match r {
                Resolved::Queued => {
                    lines[k] = Some(ItemBody::Queued(&batch[k].body, &batch[k].target));
                }
                Resolved::Send(l) => lines[k] = Some(ItemBody::Lines(l)),
                Resolved::Stale => finals[k] = Some(Final::Conflict),
                Resolved::NoBase => finals[k] = Some(Final::Skipped),
            }
        }
        // A write superseded by a later change of the same parent in this
        // request is not sent (the later one is the newest state).
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (k, t) in batch.iter().enumerate() {
            if lines[k].is_some() {
                last.insert(t.target.id.as_str(), k);
            }
        }
        let mut pending: Vec<usize> = Vec::new();
        let mut superseded: HashSet<usize> = HashSet::new();
        for (k, t) in batch.iter().enumerate() {
            if lines[k].is_none() {
                continue;
            }
            if !t.target.delete && last.get(t.target.id.as_str()) != Some(&k) {
                finals[k] = Some(Final::Conflict);
                superseded.insert(k);
            } else {
                pending.push(k);
            }
        }
        let mut recompute: BTreeSet<String> = BTreeSet::new();
        for _round in 0..PARENT_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let ids: BTreeSet<String> = pending
                .iter()
                .filter(|&&k| !batch[k].target.delete)
                .map(|&k| batch[k].target.id.clone())
                .collect();
            let current = self
                .forever("roll-up: reading the parents", || {
                    rollup::store::fetch(
                        &self.es,
                        &plan.parent_index,
                        &ids,
                        &self.metrics.rollup_requests,
                        "read_parents",
                    )
                })
                .await?;
            let mut items = Vec::new();
            let mut cas: HashSet<usize> = HashSet::new();
            for &k in &pending {
                let t = &batch[k];
                let Some(original) = &lines[k] else { continue };
                if t.hint == Hint::ParentSnapshot {
                    recompute.insert(t.target.id.clone());
                }
                if t.target.delete {
                    items.push(Item {
                        body: original.clone(),
                        meta: k,
                    });
                    continue;
                }
                match current.get(&t.target.id).cloned().flatten() {
                    Some(stored) if stored.version >= t.target.version => {
                        finals[k] = Some(Final::Conflict);
                    }
                    Some(stored) => {
                        let Some(mut source) = original.source() else {
                            finals[k] = Some(Final::Skipped);
                            continue;
                        };
                        match rollup::store::carried(plan, &stored.source) {
                            Some(r) => r.apply(&plan.cfg, &mut source),
                            None => {
                                recompute.insert(t.target.id.clone());
                            }
                        }
                        // A flag set for a roll-up not yet written stays
                        // until that roll-up is written.
                        if rollup::store::is_pending(&stored.source) {
                            rollup::store::set_pending(&mut source, true);
                            recompute.insert(t.target.id.clone());
                        }
                        cas.insert(k);
                        items.push(Item {
                            body: ItemBody::Lines(rollup::store::cas_lines(
                                &t.target.index,
                                &t.target.id,
                                &stored,
                                &source,
                            )),
                            meta: k,
                        });
                    }
                    None => {
                        recompute.insert(t.target.id.clone());
                        items.push(Item {
                            body: original.clone(),
                            meta: k,
                        });
                    }
                }
            }
            let mut again = Vec::new();
            for (k, fin) in self.execute(&self.svc, items).await {
                // A compare-and-set refused: something wrote the parent in
                // between; read it again.
                if fin == Final::Conflict && cas.contains(&k) {
                    again.push(k);
                } else {
                    finals[k] = Some(fin);
                }
            }
            pending = again;
        }
        // A parent the index already holds at this version or newer (a
        // redelivery, a replay): its earlier delivery may have ended before
        // its roll-up was written (a crash in between), so compute it again
        // (a no-op write when it holds).
        for (k, t) in batch.iter().enumerate() {
            if !t.target.delete && finals[k] == Some(Final::Conflict) && !superseded.contains(&k) {
                recompute.insert(t.target.id.clone());
            }
        }
        // Still conflicting after every round: abandoned, redelivered.
        self.recompute(plan, &recompute).await?;
        Some(finals)
    }

    /// Writes the roll-ups of `parents` (retried until it works).
    async fn recompute(&self, plan: &Plan, parents: &BTreeSet<String>) -> Option<()> {
        if parents.is_empty() {
            return Some(());
        }
        let written = self
            .forever("roll-up: recomputing", || {
                rollup::store::recompute(&self.es, plan, parents, &self.metrics.rollup_requests)
            })
            .await?;
        self.metrics.rollups.inc_by(written as u64);
        Some(())
    }

    /// `op` retried until it works, whatever fails (an operator's fault:
    /// a closed index, a write block on the parents' index...); `None` when
    /// the partition stops. While it fails the partition shows it waiting
    /// (`/status`, with the latest error), with one warning for the episode
    /// and one line when it works again, not one per retry.
    async fn forever<T, F, Fut>(&self, what: &str, op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::elastic::EsError>>,
    {
        self.forever_counted("rollup", what, op).await
    }

    /// [`Self::forever`], its retries counted under `metric`
    /// (`es_sync_retries_total{reason}`).
    async fn forever_counted<T, F, Fut>(&self, metric: &'static str, what: &str, op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::elastic::EsError>>,
    {
        let metrics = self.metrics.clone();
        let mut failures: u64 = 0;
        let out = shared::retry::retry_forever(
            &self.retry,
            &self.stop,
            |e: &crate::elastic::EsError, d| {
                metrics.retry(metric, 1);
                if failures == 0 {
                    tracing::warn!(
                        error = %e,
                        what,
                        topic = %self.tp.0,
                        partition = self.tp.1,
                        "a read or write around the bulk fails: retrying until it works, the partition waits"
                    );
                } else {
                    tracing::debug!(error = %e, delay_ms = d.as_millis() as u64, what, "retrying");
                }
                // Every retry, not only the first: the reason shown is the
                // latest (an index being closed answers "preparing to
                // close" first, then `index_closed_exception`).
                let _ = self.tx.send(Report::Waiting {
                    tp: self.tp.clone(),
                    epoch: self.epoch,
                    why: Waiting::Index(format!(
                        "{what} fails on {}, retrying until it works: {e}",
                        self.tp.0
                    )),
                });
                failures += 1;
            },
            op,
        )
        .await
        .ok();
        if failures > 0 {
            if out.is_some() {
                tracing::info!(
                    what,
                    failures,
                    topic = %self.tp.0,
                    partition = self.tp.1,
                    "works again: the partition goes on"
                );
            }
            let _ = self.tx.send(Report::WaitOver {
                tp: self.tp.clone(),
                epoch: self.epoch,
                kind: WaitKind::Index,
            });
        }
        out
    }

    /// The batch's patches resolved (every item [`Resolved::Send`] when it
    /// has none); the read is retried until it succeeds or `stop` fires
    /// (`None`: nothing is done, the records are redelivered).
    async fn resolve(&self, batch: &[Taken]) -> Option<Vec<Resolved>> {
        if !batch.iter().any(|t| matches!(t.body, Body::Patch(_))) {
            return Some(batch.iter().map(|_| Resolved::Queued).collect());
        }
        let refs: Vec<(&Body, &Target)> = batch.iter().map(|t| (&t.body, &t.target)).collect();
        // A closed or missing index fails this read like the bulk after it
        // would: the partition shows it waiting on `/status` meanwhile.
        self.forever_counted("patch_read", "reading the documents to patch", || {
            resolve::resolve(&self.es, &refs)
        })
        .await
    }

    /// Counts an item's final outcome (dead-lettering a permanent one);
    /// `true` when its offset is done.
    async fn finish(&self, t: &Taken, fin: Final) -> bool {
        let index = &t.target.index;
        match fin {
            Final::Success => {
                let what = if t.target.delete {
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
                // Written by a task of its own ([`Report::DeadLetter`]): the
                // bulk's slot and the other documents go on while the
                // dead-letter topic is away; only this record's offset waits.
                let _ = self.tx.send(Report::DeadLetter {
                    tp: self.tp.clone(),
                    epoch: self.epoch,
                    record: t.record.clone(),
                    why: DlqReason {
                        error_type,
                        reason,
                        index: Some(index.to_string()),
                    },
                    index: index.to_string(),
                });
                false
            }
            Final::Abandoned => false,
        }
    }
}

/// What a request of children does to the parents as the index holds
/// them ([`rollup::store::PENDING_SYNC_FIELD`]).
#[derive(Debug, Default, PartialEq)]
struct Leaving {
    /// Parents that children of the request leave: a deleted child's
    /// parent, a moved child's previous parent.
    parents: BTreeSet<String>,
    /// Whether the request looks redelivered: a delete of a child the
    /// index does not hold, or a child the index holds at the change's
    /// version or newer.
    redelivered: bool,
}

impl Leaving {
    fn of(batch: &[Taken], held: &HashMap<String, rollup::store::Child>) -> Self {
        let mut out = Leaving::default();
        for t in batch {
            let now = held.get(&t.target.id);
            match now {
                None if t.target.delete => out.redelivered = true,
                Some(c) if c.version >= t.target.version => out.redelivered = true,
                _ => {}
            }
            let Some(previous) = now.and_then(|c| c.parent.as_ref()) else {
                continue;
            };
            let moved = matches!(&t.hint, Hint::Child(Some(p)) if p != previous);
            if t.target.delete || moved {
                out.parents.insert(previous.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollup::store::Child;

    fn taken(id: &str, version: u64, delete: bool, parent: Option<&str>) -> Taken {
        Taken {
            body: Body::Ready(Vec::new()),
            target: Target {
                index: "replies".into(),
                id: id.into(),
                version,
                delete,
            },
            offset: 0,
            hint: Hint::Child(parent.map(str::to_string)),
            record: Arc::new(RawRecord::default()),
            commit_ms: None,
        }
    }

    fn held(list: &[(&str, Option<&str>, u64)]) -> HashMap<String, Child> {
        list.iter()
            .map(|(id, p, v)| {
                (
                    id.to_string(),
                    Child {
                        parent: p.map(str::to_string),
                        version: *v,
                    },
                )
            })
            .collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deleted_and_moved_children_flag_the_parents_they_leave() {
        let batch = [
            taken("r1", 10, true, None),       // deleted from a
            taken("r2", 10, false, Some("c")), // moved from b to c
            taken("r3", 10, false, Some("a")), // updated, same parent
            taken("r4", 10, false, Some("d")), // new
            taken("r5", 10, false, None),      // a patch not naming a parent
        ];
        let now = held(&[
            ("r1", Some("a"), 5),
            ("r2", Some("b"), 5),
            ("r3", Some("a"), 5),
            ("r5", Some("e"), 5),
        ]);
        let l = Leaving::of(&batch, &now);
        assert_eq!(l.parents, set(&["a", "b"]));
        assert!(!l.redelivered, "first deliveries");
    }

    #[test]
    fn a_request_already_applied_looks_redelivered() {
        // The delete's child is gone: applied before a crash.
        let l = Leaving::of(&[taken("r1", 10, true, None)], &held(&[]));
        assert!(l.redelivered);
        assert!(l.parents.is_empty(), "nothing left names its parent");
        // A move already applied: the child names its new parent at the
        // change's version.
        let l = Leaving::of(
            &[taken("r2", 10, false, Some("c"))],
            &held(&[("r2", Some("c"), 10)]),
        );
        assert!(l.redelivered);
        assert!(l.parents.is_empty());
    }

    #[test]
    fn the_pending_flag_is_set_read_and_cleared_in_sync() {
        let mut source = serde_json::Map::new();
        assert!(!rollup::store::is_pending(&source));
        rollup::store::set_pending(&mut source, true);
        assert!(rollup::store::is_pending(&source));
        assert_eq!(source["_sync"]["rollup_pending"], true);
        rollup::store::set_pending(&mut source, false);
        assert!(!rollup::store::is_pending(&source));
        assert_eq!(source["_sync"], serde_json::json!({}));
    }
}
