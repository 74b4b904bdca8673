//! Requests of the admin API to the running consumer: operator pause and
//! resume, and leaving and rejoining the group (`replay --coordinate`).

use super::Loop;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The answer to a [`Control`] request.
pub type ControlReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Requests of the admin API to the consumer (`replay --coordinate`).
#[derive(Debug)]
pub enum Control {
    /// Finish in-flight work, drop queued records, commit, and leave the
    /// group (the process keeps running, consuming nothing).
    Leave(ControlReply),
    /// Join the group again; partitions start from their committed offsets.
    Rejoin(ControlReply),
    /// Operator pause: stop fetching (in-flight work finishes, the group
    /// membership and partitions are kept) until [`Control::Resume`].
    Pause(ControlReply),
    /// End an operator pause.
    Resume(ControlReply),
}

impl Loop {
    pub(super) fn on_control(&mut self, c: Control) {
        match c {
            Control::Pause(reply) => {
                tracing::info!("consumption paused by an operator");
                self.held = true;
                self.backpressure();
                let _ = reply.send(if self.paused {
                    Ok(())
                } else {
                    Err("cannot pause".into())
                });
            }
            Control::Resume(reply) => {
                tracing::info!("consumption resumed by an operator");
                self.held = false;
                self.backpressure();
                let _ = reply.send(Ok(()));
            }
            Control::Leave(reply) => {
                if self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                tracing::info!(
                    in_flight = self.tasks,
                    "leave requested: finishing in-flight work"
                );
                for p in self.parts.values_mut() {
                    p.clear_queue();
                }
                if let Some(previous) = self.leaving.replace(reply) {
                    let _ = previous.send(Err("superseded by another leave request".into()));
                }
            }
            Control::Rejoin(reply) => {
                if let Some(l) = self.leaving.take() {
                    let _ = l.send(Err("rejoin requested before the leave completed".into()));
                }
                if !self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let topics: Vec<&str> = self.cfg.topics.iter().map(|t| t.topic.as_str()).collect();
                let out = self.consumer.subscribe(&topics).map_err(|e| e.to_string());
                if out.is_ok() {
                    self.left = false;
                    tracing::info!("rejoined the consumer group");
                }
                let _ = reply.send(out);
            }
        }
    }

    /// Completes a pending leave once nothing is in flight.
    pub(super) fn finish_leave(&mut self) {
        if self.leaving.is_none() || self.tasks > 0 {
            return;
        }
        let out = match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(format!("commit failed: {e}")),
        };
        self.consumer.unsubscribe();
        self.parts.clear();
        self.left = true;
        tracing::info!("left the consumer group (on request)");
        if let Some(reply) = self.leaving.take() {
            let _ = reply.send(out);
        }
    }
}
