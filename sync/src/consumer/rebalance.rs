//! Rebalances: the consumer context that commits the done offsets when
//! partitions are revoked and tells the loop, and the loop's handling of
//! those events (revoked partitions dropped, assigned ones created, and
//! paused at once while consumption is paused).

use super::{Loop, Tp};
use crate::metrics::PartitionLabels;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};

/// A rebalance seen by the consumer context.
#[derive(Debug)]
pub(super) enum RebalanceEvent {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// Consumer context: commits on revocation and tells the loop.
pub struct Ctx {
    pub(super) tx: std::sync::mpsc::Sender<RebalanceEvent>,
}

impl ClientContext for Ctx {}

fn tpl_parts(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl_parts(tpl);
            match base.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = ?parts, "revoked; committed done offsets"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit on revocation failed"),
            }
            let _ = self.tx.send(RebalanceEvent::Revoked(parts));
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = tpl_parts(tpl);
                tracing::info!(partitions = ?parts, "assigned");
                let _ = self.tx.send(RebalanceEvent::Assigned(parts));
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The consumer type.
pub type SyncConsumer = StreamConsumer<Ctx>;

impl Loop {
    pub(super) fn drain_rebalances(&mut self, rb_rx: &std::sync::mpsc::Receiver<RebalanceEvent>) {
        while let Ok(ev) = rb_rx.try_recv() {
            match ev {
                RebalanceEvent::Revoked(parts) => {
                    for tp in parts {
                        if let Some(p) = self.parts.remove(&tp) {
                            self.metrics.lag_records.remove(&PartitionLabels {
                                topic: tp.0.clone(),
                                partition: tp.1,
                            });
                            tracing::info!(topic = %tp.0, partition = tp.1, dropped = p.queue.len(), "partition revoked");
                        }
                    }
                }
                RebalanceEvent::Assigned(parts) => {
                    for tp in &parts {
                        self.partition(tp);
                    }
                    if self.paused {
                        let mut tpl = TopicPartitionList::new();
                        for (t, p) in &parts {
                            tpl.add_partition(t, *p);
                        }
                        if let Err(e) = self.consumer.pause(&tpl) {
                            tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                        }
                    }
                }
            }
        }
    }
}
