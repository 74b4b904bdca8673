//! The main loop: one `select!` over shutdown, task reports, admin
//! requests, Kafka messages, the next bulk deadline and a 1 s tick; then
//! the shutdown that lets in-flight work finish and commits.

use super::rebalance::RebalanceEvent;
use super::{Control, Loop, Report};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl Loop {
    pub(super) async fn main(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
        rb_rx: std::sync::mpsc::Receiver<RebalanceEvent>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let consumer = self.consumer.clone();
        loop {
            self.drain_rebalances(&rb_rx);
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(report) = rx.recv() => self.on_report(report),
                Some(c) = control.recv() => self.on_control(c),
                msg = consumer.recv() => {
                    self.drain_rebalances(&rb_rx);
                    match msg {
                        Ok(m) => self.on_message(&m),
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                () = sleep_until_opt(deadline) => {}
                _ = tick.tick() => {
                    ticks += 1;
                    self.release_clock_holds();
                    self.publish_status();
                    // Watermarks (lag) and reachability every 2 s.
                    if ticks % 2 == 1 {
                        self.spawn_health_checks();
                    }
                }
            }
            self.finish_leave();
            self.pump();
            self.backpressure();
        }
        self.shutdown(rx).await
    }

    async fn shutdown(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
    ) -> Result<(), KafkaError> {
        for p in self.parts.values_mut() {
            p.clear_queue();
        }
        let grace = Duration::from_millis(self.cfg.consumer.shutdown_timeout_ms);
        let until = tokio::time::Instant::now() + grace;
        tracing::info!(
            in_flight = self.tasks,
            "shutting down: finishing in-flight work"
        );
        while self.tasks > 0 {
            tokio::select! {
                Some(report) = rx.recv() => self.on_report(report),
                () = tokio::time::sleep_until(until), if !self.hard_stop.is_cancelled() => {
                    tracing::warn!(in_flight = self.tasks, "shutdown grace over: abandoning in-flight work");
                    self.hard_stop.cancel();
                }
                else => break,
            }
            for p in self.parts.values_mut() {
                p.clear_queue();
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed"),
        }
        self.publish_status();
        tracing::info!("consumer stopped");
        Ok(())
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Finished {
                release,
                done,
                slot,
            } => {
                self.tasks = self.tasks.saturating_sub(1);
                if slot {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                for (tp, epoch) in release {
                    if let Some(p) = self.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
                        p.busy = false;
                    }
                }
                for (tp, epoch, offset) in done {
                    self.mark_done(&tp, epoch, offset);
                }
            }
            Report::DeadLetter {
                tp,
                epoch,
                record,
                why,
                index,
            } => {
                // A revoked partition's record is the new owner's to redo.
                if self.parts.get(&tp).is_some_and(|p| p.epoch == epoch) {
                    self.spawn_dlq(tp, epoch, record, why, index);
                }
            }
            Report::Waiting { tp, epoch, why } => {
                if let Some(p) = self.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
                    match why {
                        Some(w) => p.waiting = Some(w),
                        // The end of a cleanup or dead-letter episode clears
                        // only such a reason, never a clock hold.
                        None => {
                            if matches!(
                                p.waiting,
                                Some(
                                    super::partition::Waiting::Cleanup(_)
                                        | super::partition::Waiting::Dlq(_)
                                )
                            ) {
                                p.waiting = None;
                            }
                        }
                    }
                }
            }
            Report::Watermarks(marks) => {
                for (tp, high) in marks {
                    if let Some(p) = self.parts.get_mut(&tp) {
                        p.high_watermark = Some(high);
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
