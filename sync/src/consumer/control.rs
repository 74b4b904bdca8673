//! Requests of the admin API to the running consumer: operator pause and
//! resume, and leaving and rejoining the group (`replay --coordinate`).

use super::poller::Command;
use super::Loop;

/// The answer to a [`Control`] request.
pub type ControlReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Requests of the admin API to the consumer (`replay --coordinate`).
#[derive(Debug)]
pub enum Control {
    /// Finish in-flight work (starting none), commit what is done, and
    /// leave the group (the process keeps running, consuming nothing);
    /// what was received and not done is delivered again after the rejoin.
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
                self.poller.send(Command::Hold(true));
                let _ = reply.send(Ok(()));
            }
            Control::Resume(reply) => {
                tracing::info!("consumption resumed by an operator");
                self.held = false;
                self.poller.send(Command::Hold(false));
                let _ = reply.send(Ok(()));
            }
            Control::Leave(reply) => {
                if self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                // Queued records stay (not done, so not committed): they
                // are delivered again after the rejoin, or go on being
                // processed if the leave is called off.
                tracing::info!(
                    in_flight = self.in_flight,
                    "leave requested: finishing in-flight work"
                );
                if let Some(previous) = self.leaving.replace(reply) {
                    let _ = previous.send(Err("superseded by another leave request".into()));
                }
            }
            Control::Rejoin(reply) => {
                if let Some(l) = self.leaving.take() {
                    // A leave that did not finish in time is called off: the
                    // partitions and their records are all still here.
                    tracing::warn!("rejoin requested before the leave completed: leave called off");
                    let _ = l.send(Err("rejoin requested before the leave completed".into()));
                }
                if !self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                self.left = false;
                tracing::info!("rejoining the consumer group");
                self.poller.send(Command::Subscribe(reply));
            }
        }
    }

    /// Completes a pending leave once nothing is in flight: commit what is
    /// done, leave the group (on the poller thread).
    pub(super) fn finish_leave(&mut self) {
        if self.leaving.is_none() || !self.jobs.is_empty() {
            return;
        }
        let Some(reply) = self.leaving.take() else {
            return;
        };
        let parts: Vec<_> = self.parts.keys().cloned().collect();
        for tp in parts {
            self.drop_partition(&tp);
        }
        self.left = true;
        tracing::info!("leaving the consumer group (on request)");
        self.poller.send(Command::Unsubscribe(reply));
    }
}
