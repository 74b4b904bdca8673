//! Starting and supervising the tasks: bulk requests and snapshot cleanups
//! while slots are free (`bulk.max_in_flight`), round-robin over the
//! partitions that have one due ([`super::queue::Next`]), and dead-letter
//! writes. Every task runs in the loop's `JoinSet`: its result releases
//! what it held; a panic is logged and counted, releases it too, and
//! restarts its partition from its first record not done.

use super::bulk_job::BulkJob;
use super::partition::Work;
use super::poller::{Command, Tp};
use super::queue::Next;
use super::Loop;
use crate::dlq::DlqReason;
use crate::record::RawRecord;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// What a task holds, released when it ends (or panics).
#[derive(Debug)]
pub(super) struct Unit {
    pub(super) tp: Tp,
    pub(super) epoch: u64,
    pub(super) kind: Kind,
}

/// The kind of a task.
#[derive(Debug)]
pub(super) enum Kind {
    /// A bulk request with the documents it holds in flight.
    Bulk(Vec<String>),
    /// A snapshot cleanup.
    Cleanup,
    /// A dead-letter write of an undecodable record.
    Dlq,
}

impl Kind {
    /// Whether it uses a `bulk.max_in_flight` slot.
    fn slot(&self) -> bool {
        matches!(self, Self::Bulk(_) | Self::Cleanup)
    }
}

/// What a task reports when it ends.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) unit: Unit,
    /// Offsets done.
    pub(super) done: Vec<i64>,
}

impl Loop {
    /// When the next bulk request is due; `None` while none could start
    /// anyway (every slot in flight, leaving, stopping): the loop then
    /// waits for a task instead of waking at a deadline already past.
    pub(super) fn next_deadline(&self) -> Option<tokio::time::Instant> {
        if !self.may_start() {
            return None;
        }
        let now = Instant::now();
        self.parts
            .values()
            .filter_map(|p| match p.next(&self.limits, now) {
                Next::BulkAt(at) => Some(at),
                Next::Bulk | Next::Cleanup => Some(now),
                Next::Nothing => None,
            })
            .min()
            .map(tokio::time::Instant::from_std)
    }

    fn may_start(&self) -> bool {
        self.in_flight < self.cfg.bulk.max_in_flight
            && !self.held
            && !self.hard_stop.is_cancelled()
            && self.leaving.is_none()
            && !self.left
    }

    /// Starts bulk requests and cleanups while slots are free.
    pub(super) fn pump(&mut self) {
        while self.may_start() {
            let now = Instant::now();
            let mut due: Vec<(Tp, Next)> = self
                .parts
                .iter()
                .filter_map(|(tp, p)| match p.next(&self.limits, now) {
                    n @ (Next::Bulk | Next::Cleanup) => Some((tp.clone(), n)),
                    _ => None,
                })
                .collect();
            if due.is_empty() {
                return;
            }
            due.sort_by(|a, b| a.0.cmp(&b.0));
            self.rr = self.rr.wrapping_add(1);
            let (tp, next) = due.swap_remove(self.rr % due.len());
            match next {
                Next::Cleanup => self.start_cleanup(&tp),
                _ => self.start_bulk(&tp),
            }
        }
    }

    fn start_bulk(&mut self, tp: &Tp) {
        let limits = self.limits;
        let Some(p) = self.parts.get_mut(tp) else {
            return;
        };
        let epoch = p.epoch;
        let taken = p.take_bulk(&limits);
        if taken.is_empty() {
            return;
        }
        let ids: Vec<String> = taken
            .iter()
            .filter_map(|q| match &q.work {
                Work::Bulk { target, .. } => Some(target.id.clone()),
                Work::Cleanup { .. } => None,
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        self.metrics
            .bulk_in_flight
            .observe((self.in_flight + 1) as f64);
        let job = BulkJob {
            tp: tp.clone(),
            epoch,
            tx: self.tx.clone(),
            svc: self.bulk.clone(),
            es: self.es.clone(),
            retry: self.cfg.retry.clone(),
            stop: self.stop_of(tp, epoch),
            metrics: self.metrics.clone(),
            rollup: self
                .rollup
                .as_ref()
                .and_then(|p| p.role(&tp.0).map(|r| (p.clone(), r))),
        };
        let unit = Unit {
            tp: tp.clone(),
            epoch,
            kind: Kind::Bulk(ids.clone()),
        };
        let (tp2, fault) = (tp.clone(), crate::test_faults::panic_on(&ids));
        self.spawn(unit, async move {
            if let Some(id) = fault {
                panic!("test fault: a bulk task holding document {id} panics");
            }
            // Test builds only: a panic in a chosen bulk task of a topic,
            // armed in a running binary by `SEARCH_PIPELINE_FAULTS=
            // sync.bulk:{topic}=1@N` (the chaos suite).
            shared::faults::panic_point(|| format!("sync.bulk:{}", tp2.0));
            let done = job.run(taken).await;
            Outcome {
                unit: Unit {
                    tp: tp2,
                    epoch,
                    kind: Kind::Bulk(ids),
                },
                done,
            }
        });
    }

    /// Spawns a supervised task holding `unit`.
    pub(super) fn spawn(
        &mut self,
        unit: Unit,
        task: impl Future<Output = Outcome> + Send + 'static,
    ) {
        if unit.kind.slot() {
            self.in_flight += 1;
        }
        let handle = self.jobs.spawn(task);
        self.units.insert(handle.id(), unit);
    }

    /// A task ended (or panicked, or was cancelled).
    pub(super) fn on_joined(
        &mut self,
        joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((id, out)) => {
                self.units.remove(&id);
                self.release(&out.unit);
                for offset in out.done {
                    self.mark_done(&out.unit.tp, out.unit.epoch, offset);
                }
            }
            Err(e) => {
                let Some(unit) = self.units.remove(&e.id()) else {
                    return;
                };
                self.release(&unit);
                if e.is_panic() {
                    self.panicked(&unit, e);
                }
            }
        }
    }

    fn release(&mut self, unit: &Unit) {
        if unit.kind.slot() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let Some(p) = self.part(&unit.tp, unit.epoch) else {
            return;
        };
        match &unit.kind {
            Kind::Bulk(ids) => p.bulk_finished(ids.iter().map(String::as_str)),
            Kind::Cleanup => p.cleanup_finished(),
            Kind::Dlq => {}
        }
    }

    /// A task panicked: its records are not done; the partition starts
    /// again from its first record not done, and is not ready until it
    /// makes progress.
    fn panicked(&mut self, unit: &Unit, e: tokio::task::JoinError) {
        self.panics += 1;
        self.metrics.task_panics.inc();
        let message = e
            .try_into_panic()
            .ok()
            .and_then(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            })
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(
            topic = %unit.tp.0,
            partition = unit.tp.1,
            task = ?unit.kind,
            panic = %message,
            "a task panicked: restarting its partition from its first record not done"
        );
        let Some(p) = self.part(&unit.tp, unit.epoch) else {
            return;
        };
        p.failed = true;
        if let Some(at) = p.restart_offset() {
            if let Some(stop) = self.stops.remove(&(unit.tp.clone(), unit.epoch)) {
                stop.cancel();
            }
            self.poller.send(Command::Seek(unit.tp.clone(), at));
        }
    }

    /// Dead-letters an undecodable record (not a slot: it touches no index).
    pub(super) fn spawn_dlq(
        &mut self,
        tp: Tp,
        epoch: u64,
        record: Arc<RawRecord>,
        why: DlqReason,
        index: String,
    ) {
        let dlq = self.dlq.clone();
        let stop = self.stop_of(&tp, epoch);
        let metrics = self.metrics.clone();
        let wait = super::partition::dlq_wait(&self.tx, &tp, epoch);
        let unit = Unit {
            tp: tp.clone(),
            epoch,
            kind: Kind::Dlq,
        };
        self.spawn(unit, async move {
            let ok = dlq.send(&record, &why, &stop, &wait).await.is_some();
            let mut done = Vec::new();
            if ok {
                metrics.count(&index, "dead_lettered", 1);
                done.push(record.offset);
            }
            Outcome {
                unit: Unit {
                    tp,
                    epoch,
                    kind: Kind::Dlq,
                },
                done,
            }
        });
    }
}
