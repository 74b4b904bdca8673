//! Records ahead of the clocks ([`crate::action::ahead_of_clocks`]): the
//! partition holds them (and everything after them) in its queue, says why
//! on `/status`, logs once when the hold begins and once when it ends, and
//! lets them go when the clocks have caught up. Never dead-lettered: the
//! record is not bad, a clock is.

use super::partition::{Queued, Waiting, Work};
use super::poller::Tp;
use super::Loop;
use crate::record::RawRecord;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

impl Loop {
    /// Queues `work` held until the clocks reach cluster time `t`.
    #[allow(clippy::too_many_arguments)] // the record, its work and the hold
    pub(super) fn hold_for_clock(
        &mut self,
        tp: &Tp,
        epoch: u64,
        offset: i64,
        record: Arc<RawRecord>,
        work: Work,
        t: u64,
        ahead: u64,
    ) {
        let limit = self.cfg.consumer.max_future_seconds;
        let Some(part) = self.part(tp, epoch) else {
            return;
        };
        if part.waiting.is_none() {
            tracing::warn!(
                topic = %tp.0,
                partition = tp.1,
                offset,
                cluster_time = t,
                ahead_secs = ahead,
                limit_secs = limit,
                "record ahead of this host's clock and of its Kafka timestamp: partition waits for the clocks"
            );
        }
        part.waiting = Some(Waiting::Clock(format!(
            "waiting for the clocks: offset {offset} has cluster time {t}, {ahead} s ahead of this \\
             host's clock and of the record's timestamp (consumer.max_future_seconds = {limit}); \\
             fix the clock, or raise the limit"
        )));
        part.enqueue(Queued {
            offset,
            received: Instant::now(),
            work,
            record,
            clock: Some(t),
        });
        self.metrics.clock_holds.inc();
    }

    /// Lets held records go whose cluster time the clocks have reached
    /// (called every second).
    pub(super) fn release_clock_holds(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let limit = self.cfg.consumer.max_future_seconds;
        for (tp, p) in &mut self.parts {
            let mut held = 0;
            for q in p.queue_mut() {
                let Some(t) = q.clock else { continue };
                let sender = q
                    .record
                    .timestamp
                    .and_then(|ms| u64::try_from(ms / 1000).ok());
                if t <= now.max(sender.unwrap_or(0)).saturating_add(limit) {
                    q.clock = None;
                } else {
                    held += 1;
                }
            }
            if held == 0 && matches!(p.waiting, Some(Waiting::Clock(_))) {
                tracing::info!(topic = %tp.0, partition = tp.1, "clocks caught up: partition goes on");
                p.waiting = None;
            }
        }
    }
}
