//! The main loop: one `select!` over shutdown, the poller's events (always
//! first), task results and reports, admin requests, records (only while
//! the buffer has room), the next bulk deadline and a 1 s tick; then the
//! shutdown that lets in-flight work finish and commits.

use super::poller::{Event, Polled};
use super::queue::PartitionQueue;
use super::{store, Control, Loop, Report};
use rdkafka::error::KafkaError;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl Loop {
    pub(super) async fn main(
        &mut self,
        mut records: mpsc::Receiver<Polled>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut rx: mpsc::UnboundedReceiver<Report>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.next_deadline();
            // An operator's pause takes effect at once here; the poller
            // pauses the partitions on its next turn.
            let room = self.has_room() && !self.left && !self.held;
            self.metrics.paused.set(i64::from(
                !room
                    || self
                        .poller
                        .paused
                        .load(std::sync::atomic::Ordering::Relaxed),
            ));
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => Step::Shutdown,
                Some(e) = events.recv() => Step::Event(e),
                Some(joined) = self.jobs.join_next_with_id() => Step::Joined(joined),
                Some(report) = rx.recv() => Step::Report(report),
                Some(c) = control.recv() => Step::Control(c),
                Some(Polled(record, gen)) = records.recv(), if room => Step::Record(record, gen),
                () = sleep_until_opt(deadline) => Step::Due,
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Shutdown => break,
                Step::Event(e) => self.on_event(e),
                Step::Joined(joined) => self.on_joined(joined),
                Step::Report(report) => self.on_report(report),
                Step::Control(c) => self.on_control(c),
                Step::Record(record, gen) => self.on_record(record, gen),
                Step::Due => {}
                Step::Tick => {
                    self.release_clock_holds();
                    self.publish_status();
                    self.ping_elasticsearch();
                }
            }
            self.finish_leave();
            self.pump();
        }
        self.shutdown(rx).await
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Assigned(parts) => {
                for (tp, gen) in parts {
                    self.drop_partition(&tp);
                    self.parts.insert(tp, PartitionQueue::new(gen));
                }
            }
            Event::Revoked(parts) => {
                for tp in parts {
                    if let Some(p) = self.parts.get(&tp) {
                        tracing::info!(topic = %tp.0, partition = tp.1, dropped = p.queued(), "partition revoked");
                    }
                    self.drop_partition(&tp);
                }
            }
            Event::Reset(tp, gen) => {
                let failed = self.parts.get(&tp).is_some_and(|p| p.failed);
                self.drop_partition(&tp);
                let mut fresh = PartitionQueue::new(gen);
                fresh.failed = failed;
                self.parts.insert(tp, fresh);
            }
            Event::Stats(marks, up) => {
                self.kafka_ok = up;
                self.status.set_kafka_ok(up);
                for (tp, m) in marks {
                    let Some(p) = self.parts.get_mut(&tp) else {
                        continue;
                    };
                    p.marks = Some(m);
                    if let Some(at) = p.idle_store() {
                        store(&self.consumer, &tp, at, p);
                    }
                }
            }
        }
    }

    async fn shutdown(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
    ) -> Result<(), KafkaError> {
        for p in self.parts.values_mut() {
            p.clear();
        }
        let grace = Duration::from_millis(self.cfg.consumer.shutdown_timeout_ms);
        let until = tokio::time::Instant::now() + grace;
        tracing::info!(
            in_flight = self.jobs.len(),
            "shutting down: finishing in-flight work"
        );
        while !self.jobs.is_empty() {
            let stopping = self.hard_stop.is_cancelled();
            let step = tokio::select! {
                Some(joined) = self.jobs.join_next_with_id() => Step::Joined(joined),
                Some(report) = rx.recv() => Step::Report(report),
                () = tokio::time::sleep_until(until), if !stopping => Step::Due,
            };
            match step {
                Step::Joined(joined) => self.on_joined(joined),
                Step::Report(report) => self.on_report(report),
                _ => {
                    tracing::warn!(
                        in_flight = self.jobs.len(),
                        "shutdown grace over: abandoning in-flight work"
                    );
                    self.hard_stop.cancel();
                }
            }
        }
        // The final commit runs on the poller thread.
        let poller = std::mem::replace(&mut self.poller, super::poller::Poller::stopped());
        poller.stop().await;
        self.publish_status();
        tracing::info!("consumer stopped");
        Ok(())
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Waiting { tp, epoch, why } => {
                if let Some(p) = self.part(&tp, epoch) {
                    p.waiting = Some(why);
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
                if self.part(&tp, epoch).is_some() {
                    self.spawn_dlq(tp, epoch, record, why, index);
                }
            }
            Report::WaitOver { tp, epoch, kind } => {
                if let Some(p) = self.part(&tp, epoch) {
                    // The end of one episode clears only its own reason.
                    if p.waiting.as_ref().is_some_and(|w| w.kind() == kind) {
                        p.waiting = None;
                    }
                }
            }
        }
    }
}

/// What one turn of the loop does.
enum Step {
    Shutdown,
    Event(Event),
    Joined(Result<(tokio::task::Id, super::jobs::Outcome), tokio::task::JoinError>),
    Report(Report),
    Control(Control),
    Record(crate::record::RawRecord, u64),
    Due,
    Tick,
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
