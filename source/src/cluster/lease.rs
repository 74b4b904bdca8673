//! Stream leases: partition `p` of the leases topic is the lease of the
//! `p`-th stream (streams sorted by name). Every instance joins one Kafka
//! consumer group on that topic; the group coordinator gives each partition
//! to exactly one live member (cooperative-sticky, so a rebalance moves
//! only the leases that must move). A member that stops heart-beating for
//! `cluster.session_timeout_ms` loses its leases to the others.
//!
//! Leases decide who *should* stream; the per-stream `transactional.id`
//! makes it safe when two briefly think they do: the new owner's
//! `init_transactions` fences the old one, whose next commit fails.
//!
//! The consumer is polled on its own thread (blocking librdkafka calls stay
//! off the async runtime). A revocation blocks in the rebalance callback
//! until the coordinator has stopped those streams (their batch in flight
//! committed), so a lease is only handed over after its stream stopped.

use crate::config::SourceConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use shared::shutdown::CancellationToken;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A change of this instance's leases.
#[derive(Debug)]
pub enum LeaseEvent {
    /// These partitions (streams) are now ours.
    Assigned(Vec<i32>),
    /// These are no longer ours; reply on the sender once they stopped.
    Revoked(Vec<i32>, std_mpsc::SyncSender<()>),
}

struct LeaseContext {
    tx: mpsc::UnboundedSender<LeaseEvent>,
    revoke_wait: Duration,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions(tpl);
            if parts.is_empty() {
                return;
            }
            let (ack, done) = std_mpsc::sync_channel(1);
            if self.tx.send(LeaseEvent::Revoked(parts, ack)).is_ok() {
                let _ = done.recv_timeout(self.revoke_wait);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                if !parts.is_empty() {
                    let _ = self.tx.send(LeaseEvent::Assigned(parts));
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "lease rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Joins the lease group; events arrive on the returned channel until
/// `cancel` fires (then the leases are given back and the thread ends).
pub fn join(
    cfg: &SourceConfig,
    instance: &str,
    revoke_wait: Duration,
    cancel: CancellationToken,
) -> Result<
    (
        mpsc::UnboundedReceiver<LeaseEvent>,
        std::thread::JoinHandle<()>,
    ),
    rdkafka::error::KafkaError,
> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut c = crate::kafka::client_config(&cfg.kafka);
    c.set("group.id", cfg.lease_group())
        .set("client.id", format!("mongo-source-lease-{instance}"))
        .set(
            "session.timeout.ms",
            cfg.cluster.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            cfg.cluster.heartbeat_interval_ms.to_string(),
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest");
    let consumer: BaseConsumer<LeaseContext> =
        c.create_with_context(LeaseContext { tx, revoke_wait })?;
    consumer.subscribe(&[&cfg.leases_topic()])?;
    let group = cfg.lease_group();
    let thread = std::thread::Builder::new()
        .name("lease".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                // Test builds only: the lease thread dies (the coordinator
                // sees its channel close, stops the streams, joins again).
                shared::faults::panic_point(|| format!("source.lease.poll:{group}"));
                // Nothing is ever written to the leases topic: polling only
                // drives heartbeats and rebalance callbacks.
                let _ = consumer.poll(Duration::from_millis(100));
            }
            consumer.unsubscribe();
            for _ in 0..20 {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the lease thread");
            rdkafka::error::KafkaError::Subscription(e.to_string())
        })?;
    Ok((rx, thread))
}
