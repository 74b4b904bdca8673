//! A record received: decoded, tracked as outstanding, then skipped,
//! queued on its partition (bulk item or snapshot cleanup) or sent to the
//! dead-letter queue.

use super::partition::{Queued, Work};
use super::{Loop, Tp};
use crate::action::{self, Action};
use crate::bulk::request::encode;
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
        let built = decoded
            .map_err(|e| DlqReason {
                error_type: e.kind().into(),
                reason: e.to_string(),
                index: None,
            })
            .and_then(|ev| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                action::check_not_future(&ev, now, cfg.consumer.max_future_seconds)
                    .and_then(|()| action::build(&ev, route, &index, tp.1))
                    .map_err(|e| DlqReason {
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
                part.queue.push_back(Queued {
                    offset,
                    received: Instant::now(),
                    work: Work::Cleanup { action: a },
                    record,
                });
            }
            Ok(a) => {
                let kind = a.kind();
                let Some(lines) = encode(&a) else { return };
                let part = self.partition(&tp);
                part.queued_items += 1;
                part.queued_bytes += lines.len();
                part.queue.push_back(Queued {
                    offset,
                    received: Instant::now(),
                    work: Work::Bulk { lines, index, kind },
                    record,
                });
            }
            Err(why) => {
                let index_label = why.index.clone().unwrap_or_else(|| index.clone());
                self.spawn_dlq(tp, epoch, record, why, index_label);
            }
        }
    }
}
