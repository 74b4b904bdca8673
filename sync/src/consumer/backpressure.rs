//! Backpressure: pause every assigned partition while too many records
//! (or bytes) are received and not done, or while an operator holds the
//! consumer; resume below half of the limits.

use super::Loop;
use rdkafka::consumer::Consumer;

impl Loop {
    pub(super) fn buffered(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(n, b), p| {
            (n + p.tracker.outstanding(), b + p.outstanding_bytes)
        })
    }

    pub(super) fn backpressure(&mut self) {
        let (n, bytes) = self.buffered();
        self.metrics.buffered.set(n as i64);
        let c = &self.cfg.consumer;
        let over = self.held || n >= c.max_buffered_records || bytes >= c.max_buffered_bytes;
        let under =
            !self.held && n <= c.max_buffered_records / 2 && bytes <= c.max_buffered_bytes / 2;
        if !self.paused && over {
            if let Ok(a) = self.consumer.assignment() {
                match self.consumer.pause(&a) {
                    Ok(()) => {
                        self.paused = true;
                        self.metrics.paused.set(1);
                        tracing::info!(buffered = n, bytes, "consumption paused (backpressure)");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot pause consumption"),
                }
            }
        } else if self.paused && under {
            if let Ok(a) = self.consumer.assignment() {
                match self.consumer.resume(&a) {
                    Ok(()) => {
                        self.paused = false;
                        self.metrics.paused.set(0);
                        tracing::info!(buffered = n, "consumption resumed");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot resume consumption"),
                }
            }
        }
    }
}
