//! Per-partition state: the queue of records waiting to be sent, the
//! offset tracker, what is outstanding (for backpressure and lag), and
//! storing an offset once every record before it is done.

use super::{Loop, Tp};
use crate::action::Action;
use crate::bulk::resolve::{Body, Target};
use crate::dlq::RawRecord;
use crate::offsets::OffsetTracker;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use shared::state::StreamState;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// What waits in a partition queue.
pub(super) enum Work {
    Bulk {
        body: Body,
        target: Target,
        /// NDJSON bytes (estimated for a patch).
        size: usize,
        kind: &'static str,
    },
    Cleanup {
        action: Action,
    },
}

pub(super) struct Queued {
    pub(super) offset: i64,
    pub(super) received: Instant,
    pub(super) work: Work,
    pub(super) record: Arc<RawRecord>,
    /// Held until the clocks reach this cluster time (seconds) minus
    /// `consumer.max_future_seconds` ([`crate::action::ahead_of_clocks`]).
    pub(super) clock: Option<u64>,
}

impl Queued {
    /// Whether it may be sent now (not held for the clock).
    pub(super) fn ready(&self) -> bool {
        self.clock.is_none()
    }
}

pub(super) struct Partition {
    pub(super) epoch: u64,
    pub(super) tracker: OffsetTracker,
    pub(super) queue: VecDeque<Queued>,
    /// Bulk items in `queue` and their NDJSON bytes (kept so deciding
    /// whether a request is due costs O(partitions), not O(records)).
    pub(super) queued_items: usize,
    pub(super) queued_bytes: usize,
    pub(super) busy: bool,
    /// offset -> (event time seconds, bytes) of records not done.
    pub(super) outstanding: BTreeMap<i64, (u64, usize)>,
    pub(super) outstanding_bytes: usize,
    pub(super) high_watermark: Option<i64>,
    pub(super) stored: Option<i64>,
    pub(super) state: StreamState,
    /// Why the partition waits, shown on `/status` (`None` when it does not).
    pub(super) waiting: Option<Waiting>,
}

/// Why a partition waits instead of going on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// A record ahead of the clocks ([`super::clock`]).
    Clock(String),
    /// A snapshot cleanup keeps failing ([`super::cleanup`]).
    Cleanup(String),
    /// A record's dead-letter write keeps failing ([`crate::dlq::writer`]).
    Dlq(String),
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clock(m) | Self::Cleanup(m) | Self::Dlq(m) => f.write_str(m),
        }
    }
}

/// The hook a dead-letter write of partition `tp` reports its waits
/// through ([`crate::dlq::DlqWriter::send`]).
pub(super) fn dlq_wait(
    tx: &tokio::sync::mpsc::UnboundedSender<super::Report>,
    tp: &Tp,
    epoch: u64,
) -> impl Fn(Option<&str>) + Send + Sync {
    let (tx, tp) = (tx.clone(), tp.clone());
    move |why| {
        let _ = tx.send(super::Report::Waiting {
            tp: tp.clone(),
            epoch,
            why: why.map(|m| Waiting::Dlq(m.to_string())),
        });
    }
}

impl Partition {
    pub(super) fn clear_queue(&mut self) {
        self.queue.clear();
        self.queued_items = 0;
        self.queued_bytes = 0;
    }
}

impl Loop {
    pub(super) fn partition(&mut self, tp: &Tp) -> &mut Partition {
        let epoch = self.next_epoch;
        let entry = self.parts.entry(tp.clone()).or_insert_with(|| Partition {
            epoch,
            tracker: OffsetTracker::default(),
            queue: VecDeque::new(),
            queued_items: 0,
            queued_bytes: 0,
            busy: false,
            outstanding: BTreeMap::new(),
            outstanding_bytes: 0,
            high_watermark: None,
            stored: None,
            state: StreamState::Running,
            waiting: None,
        });
        if entry.epoch == epoch {
            self.next_epoch += 1;
        }
        entry
    }

    pub(super) fn mark_done(&mut self, tp: &Tp, epoch: u64, offset: i64) {
        let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) else {
            return;
        };
        if let Some((_, size)) = p.outstanding.remove(&offset) {
            p.outstanding_bytes = p.outstanding_bytes.saturating_sub(size);
        }
        if let Some(next) = p.tracker.done(offset) {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .is_ok()
            {
                match self.consumer.store_offsets(&tpl) {
                    Ok(()) => p.stored = Some(next),
                    Err(e) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, offset = next, error = %e, "cannot store offset")
                    }
                }
            }
        }
    }
}
