//! A record received: decoded (its document left as text in the record,
//! [`crate::event::raw`]), tracked as outstanding, then skipped, queued on
//! its partition (bulk item or snapshot cleanup) or sent to the dead-letter
//! queue.
//!
//! Memory: a queued record holds one copy of its value (the record, kept
//! for the dead-letter topic and read again when its request is written,
//! [`crate::encode`]) and a few small fields; the buffer limits
//! (`consumer.max_buffered_*`) count all of it ([`held_bytes`]).

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

/// What a queued record holds besides its record: the queue entry, the
/// document's place and `_sync`, the target's strings, the offset
/// tracker's entry (allocator overhead included, rounded up).
const QUEUED_OVERHEAD: usize =
    std::mem::size_of::<Queued>() + std::mem::size_of::<crate::encode::DocBody>() + 160;

/// Bytes a received record holds while it is queued (see the module
/// documentation).
pub(super) fn held_bytes(record: &RawRecord) -> usize {
    record.size() + QUEUED_OVERHEAD
}

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
        // Shared by the topic's queued documents (made once per topic).
        let TopicShared { projection, alias } = match self.topic_shared.get(&*record.topic) {
            Some(s) => s.clone(),
            None => self
                .topic_shared
                .entry(record.topic.to_string())
                .or_insert_with(|| TopicShared {
                    projection: Arc::new(route.projection.clone()),
                    alias: Arc::from(route.alias.as_str()),
                })
                .clone(),
        };
        let record = Arc::new(record);
        let offset = record.offset;
        let decoded = event::decode_raw(record.payload.as_deref());
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
        if !part.receive(offset, event_secs, held_bytes(&record)) {
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
        let payload = record.payload.as_deref().unwrap_or_default();
        let built = decoded
            .map_err(|e| DlqReason {
                error_type: e.kind().into(),
                reason: e.to_string(),
                index: None,
            })
            .and_then(|ev| {
                ahead = action::ahead_of_clocks_at(
                    ev.cluster_time.t,
                    now,
                    record_secs,
                    cfg.consumer.max_future_seconds,
                )
                .map(|secs| (u64::from(ev.cluster_time.t), secs));
                commit_ms = ev.commit_time_ms();
                let mut a = action::build_raw(
                    &ev,
                    &record,
                    route,
                    &projection,
                    &index,
                    tp.1,
                    &mut self.ns_names,
                )
                .map_err(|e| DlqReason {
                    error_type: e.kind().into(),
                    reason: e.to_string(),
                    index: Some(index.clone()),
                })?;
                if let (Some(plan), Some(role)) = (&self.rollup, role) {
                    hint = crate::rollup::annotate_raw(plan, role, &ev, payload, &mut a);
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
                let Some((body, target)) = queued_body(a, &alias) else {
                    return;
                };
                let size = body.len_hint(&target);
                Work::Bulk {
                    body,
                    target,
                    size,
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

/// What the queued documents of one topic share.
#[derive(Debug, Clone)]
pub(super) struct TopicShared {
    /// The topic's projection.
    pub(super) projection: Arc<crate::config::ProjectionConfig>,
    /// Its alias, the target of its items.
    pub(super) alias: Arc<str>,
}

/// What a bulk action waits in the queue as: its body and target (`None`
/// for actions that are not bulk items); `alias` is the topic's, shared by
/// the targets that name it.
fn queued_body(a: Action, alias: &Arc<str>) -> Option<(Body, Target)> {
    let target = |index: String, id: String, version: u64, delete: bool| Target {
        index: if *index == **alias {
            alias.clone()
        } else {
            Arc::from(index)
        },
        id,
        version,
        delete,
    };
    Some(match a {
        Action::IndexDoc {
            index,
            id,
            version,
            body,
        } => (Body::Doc(body), target(index, id, version, false)),
        Action::Delete { index, id, version } => (Body::Delete, target(index, id, version, true)),
        Action::Patch(p) => {
            let t = target(p.index.clone(), p.id.clone(), p.version, false);
            (Body::Patch(p), t)
        }
        a @ Action::Index { .. } => {
            let lines = encode(&a)?;
            let Action::Index {
                index, id, version, ..
            } = a
            else {
                return None;
            };
            (Body::Ready(lines), target(index, id, version, false))
        }
        Action::SnapshotEnd { .. } | Action::Skip => return None,
    })
}
