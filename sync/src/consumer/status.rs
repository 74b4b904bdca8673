//! Status and health: partition states, lag and buffer published to
//! `/status` and the metrics every second, and the Elasticsearch
//! reachability check (Kafka's comes with the client's statistics).

use super::Loop;
use crate::elastic;
use crate::metrics::PartitionLabels;
use crate::status::PartitionStatus;
use shared::state::StreamState;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

impl Loop {
    pub(super) fn publish_status(&self) {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Consumption is paused: by an operator, for a long stall (the
        // partitions), or for backpressure (the loop takes no records).
        let paused = self.held || self.poller.paused.load(Ordering::Relaxed) || !self.has_room();
        let mut out = Vec::with_capacity(self.parts.len());
        for ((topic, partition), p) in &self.parts {
            let labels = PartitionLabels {
                topic: topic.to_string(),
                partition: *partition,
            };
            let lag = p.lag();
            if let Some(l) = lag {
                self.metrics.lag_records.get_or_create(&labels).set(l);
            }
            let lag_secs = p
                .oldest_event_secs()
                .map_or(0, |t| now_secs.saturating_sub(t) as i64);
            self.metrics
                .lag_seconds
                .get_or_create(&labels)
                .set(lag_secs);
            out.push(PartitionStatus {
                topic: topic.to_string(),
                partition: *partition,
                state: if p.failed {
                    StreamState::Failed
                } else if paused {
                    StreamState::Paused
                } else if p.waiting.is_some() {
                    StreamState::Retrying
                } else {
                    StreamState::Running
                },
                committable: p.done_upto(),
                high_watermark: p.marks.map(|m| m.high),
                lag_records: lag,
                outstanding: p.outstanding().0,
                in_flight: p.in_flight() > 0,
                waiting: p.waiting.as_ref().map(ToString::to_string),
            });
        }
        for reason in ["index", "cleanup", "clock", "dlq"] {
            let n = self
                .parts
                .values()
                .filter(|p| p.waiting.as_ref().is_some_and(|w| w.label() == reason))
                .count();
            self.metrics
                .waiting
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let (n, _) = self.buffered();
        self.metrics
            .buffered
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        self.status.set_partitions(out, n, paused);
    }

    /// Pings Elasticsearch in the background (one ping at a time).
    pub(super) fn ping_elasticsearch(&self) {
        if self.pinging.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag when the ping ends, even by a panic.
        struct Done(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let es = self.es.clone();
        let status = self.status.clone();
        let done = Done(self.pinging.clone());
        // Not in the loop's JoinSet (it holds nothing of a partition): its
        // only state is the flag, which `Done` clears however it ends.
        tokio::spawn(async move {
            let _done = done;
            let ok = elastic::ping(&es).await;
            status.set_elasticsearch_ok(ok);
        });
    }
}
