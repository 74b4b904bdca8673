//! A record received: decoded, tracked as outstanding, then skipped,
//! queued on its partition (bulk item or snapshot cleanup) or sent to the
//! dead-letter queue.

use super::partition::{Hint, Queued, Work};
use super::poller::Tp;
use super::Loop;
use crate::action::{self, Action};
use crate::bulk::request::encode;
use crate::bulk::resolve::{Body, Target};
use crate::dlq::DlqReason;
use crate::event;
use crate::record::RawRecord;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

impl Loop {
    /// A record handed over by the poller, read in generation `gen` of its
    /// partition.
    pub(super) fn on_record(&mut self, record: RawRecord, gen: u64) {
        let tp: Tp = (record.topic.clone(), record.partition);
        if self.leaving.is_some() || self.left {
            // Not tracked, so never committed: delivered again after a rejoin.
            return;
        }
        let cfg = self.cfg.clone();
        let Some(route) = cfg.route(&record.topic) else {
            return;
        };
        let record = Arc::new(record);
        let offset = record.offset;
        let size = record.size();
        let decoded = event::decode(record.payload.as_deref());
        let event_secs = decoded
            .as_ref()
            .map(|e| u64::from(e.cluster_time.t))
            .ok()
            .or(record.timestamp.map(|t| (t / 1000).max(0) as u64))
            .unwrap_or(0);
        // A record of an assignment (or a restart) that is over.
        let Some(part) = self.part(&tp, gen) else {
            return;
        };
        if !part.receive(offset, event_secs, size) {
            return;
        }
        let epoch = gen;
        let index = route.alias.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record_secs = record.timestamp.and_then(|t| u64::try_from(t / 1000).ok());
        let mut ahead = None;
        let mut hint = Hint::Plain;
        let role = self.rollup.as_ref().and_then(|p| p.role(&tp.0));
        let mut commit_ms = None;
        let built = decoded
            .map_err(|e| DlqReason {
                error_type: e.kind().into(),
                reason: e.to_string(),
                index: None,
            })
            .and_then(|ev| {
                ahead =
                    action::ahead_of_clocks(&ev, now, record_secs, cfg.consumer.max_future_seconds)
                        .map(|secs| (u64::from(ev.cluster_time.t), secs));
                commit_ms = ev.commit_time_ms();
                let mut a = action::build(&ev, route, &index, tp.1).map_err(|e| DlqReason {
                    error_type: e.kind().into(),
                    reason: e.to_string(),
                    index: Some(index.clone()),
                })?;
                if let (Some(plan), Some(role)) = (&self.rollup, role) {
                    hint = crate::rollup::annotate(plan, role, &ev, &mut a);
                }
                Ok(a)
            });
        let work = match built {
            Ok(Action::Skip) => {
                self.metrics.count(&index, "skipped", 1);
                self.mark_done(&tp, epoch, offset);
                return;
            }
            Ok(a @ Action::SnapshotEnd { .. }) => Work::Cleanup { action: a },
            Ok(a) => {
                let kind = a.kind();
                let (body, target, size) = match a {
                    Action::Patch(p) => {
                        let target = Target {
                            index: p.index.clone(),
                            id: p.id.clone(),
                            version: p.version,
                            delete: false,
                        };
                        // Estimated: the patched document is built at send time.
                        (Body::Patch(p), target, size)
                    }
                    a => {
                        let Some(target) = target_of(&a) else { return };
                        let Some(lines) = encode(&a) else { return };
                        let size = lines.len();
                        (Body::Ready(lines), target, size)
                    }
                };
                Work::Bulk {
                    body,
                    target,
                    size,
                    kind,
                    hint,
                    commit_ms,
                }
            }
            Err(why) => {
                let index_label = why.index.clone().unwrap_or_else(|| index.clone());
                self.spawn_dlq(tp, epoch, record, why, index_label);
                return;
            }
        };
        match ahead {
            Some((t, secs)) => self.hold_for_clock(&tp, epoch, offset, record, work, t, secs),
            None => {
                if let Some(p) = self.part(&tp, epoch) {
                    p.enqueue(Queued {
                        offset,
                        received: Instant::now(),
                        work,
                        record,
                        clock: None,
                    });
                }
            }
        }
    }
}

/// What an `index` or `delete` action targets.
fn target_of(a: &Action) -> Option<Target> {
    match a {
        Action::Index {
            index, id, version, ..
        } => Some(Target {
            index: index.clone(),
            id: id.clone(),
            version: *version,
            delete: false,
        }),
        Action::Delete { index, id, version } => Some(Target {
            index: index.clone(),
            id: id.clone(),
            version: *version,
            delete: true,
        }),
        _ => None,
    }
}
