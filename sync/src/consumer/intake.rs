//! A record received: decoded, tracked as outstanding, then skipped,
//! queued on its partition (bulk item or snapshot cleanup) or sent to the
//! dead-letter queue.

use super::partition::{Queued, Work};
use super::{Loop, Tp};
use crate::action::{self, Action};
use crate::bulk::request::encode;
use crate::bulk::resolve::{Body, Target};
use crate::dlq::{DlqReason, RawRecord};
use crate::event;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

impl Loop {
    pub(super) fn on_message(&mut self, m: &BorrowedMessage<'_>) {
        if self.leaving.is_some() || self.left {
            // Not tracked, so never committed: delivered again after a rejoin.
            return;
        }
        let record = Arc::new(RawRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        });
        let tp: Tp = (record.topic.clone(), record.partition);
        let cfg = self.cfg.clone();
        let Some(route) = cfg.route(&record.topic) else {
            return;
        };
        let offset = record.offset;
        let size = record.size();
        let decoded = event::decode(record.payload.as_deref());
        let event_secs = decoded
            .as_ref()
            .map(|e| u64::from(e.cluster_time.t))
            .ok()
            .or(record.timestamp.map(|t| (t / 1000).max(0) as u64))
            .unwrap_or(0);
        let part = self.partition(&tp);
        if !part.tracker.received(offset) {
            return;
        }
        part.outstanding.insert(offset, (event_secs, size));
        part.outstanding_bytes += size;
        let epoch = part.epoch;
        let index = route.alias.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record_secs = record.timestamp.and_then(|t| u64::try_from(t / 1000).ok());
        let mut ahead = None;
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
                action::build(&ev, route, &index, tp.1).map_err(|e| DlqReason {
                    error_type: e.kind().into(),
                    reason: e.to_string(),
                    index: Some(index.clone()),
                })
            });
        match built {
            Ok(Action::Skip) => {
                self.metrics.count(&index, "skipped", 1);
                self.mark_done(&tp, epoch, offset);
            }
            Ok(a @ Action::SnapshotEnd { .. }) => {
                let part = self.partition(&tp);
                let work = Work::Cleanup { action: a };
                match ahead {
                    Some((t, secs)) => self.hold_for_clock(&tp, offset, record, work, t, secs),
                    None => part.queue.push_back(Queued {
                        offset,
                        received: Instant::now(),
                        work,
                        record,
                        clock: None,
                    }),
                }
            }
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
                        let size = record.size();
                        (Body::Patch(p), target, size)
                    }
                    a => {
                        let Some(target) = target_of(&a) else { return };
                        let Some(lines) = encode(&a) else { return };
                        let size = lines.len();
                        (Body::Ready(lines), target, size)
                    }
                };
                let part = self.partition(&tp);
                part.queued_items += 1;
                part.queued_bytes += size;
                let work = Work::Bulk {
                    body,
                    target,
                    size,
                    kind,
                };
                match ahead {
                    Some((t, secs)) => self.hold_for_clock(&tp, offset, record, work, t, secs),
                    None => self.partition(&tp).queue.push_back(Queued {
                        offset,
                        received: Instant::now(),
                        work,
                        record,
                        clock: None,
                    }),
                }
            }
            Err(why) => {
                let index_label = why.index.clone().unwrap_or_else(|| index.clone());
                self.spawn_dlq(tp, epoch, record, why, index_label);
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
