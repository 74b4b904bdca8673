//! What waits in a partition's queue ([`Queued`]: a bulk item or a
//! snapshot cleanup) and why a partition may wait ([`Waiting`]).

use crate::action::Action;
use crate::bulk::resolve::{Body, Target};
use crate::record::RawRecord;
pub(super) use crate::rollup::Hint;
use std::sync::Arc;
use std::time::Instant;

/// What waits in a partition queue.
#[derive(Debug)]
pub(super) enum Work {
    Bulk {
        body: Body,
        target: Target,
        /// NDJSON bytes (estimated for a patch).
        size: usize,
        /// What it means for the roll-up.
        hint: Hint,
        /// MongoDB commit time, ms ([`crate::event::SourceEvent::commit_time_ms`]).
        commit_ms: Option<i64>,
    },
    Cleanup {
        action: Action,
    },
}

#[derive(Debug)]
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

/// Why a partition waits instead of going on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Waiting {
    /// A record ahead of the clocks ([`super::clock`]).
    Clock(String),
    /// A snapshot cleanup keeps failing ([`super::cleanup`]).
    Cleanup(String),
    /// Elasticsearch refuses writes to the index (a block, a closed or
    /// missing index, a permission; [`crate::bulk::retry`]).
    Index(String),
    /// A record's dead-letter write keeps failing ([`crate::dlq::writer`]).
    Dlq(String),
}

/// The kind of a [`Waiting`], to end one wait without ending another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitKind {
    Clock,
    Cleanup,
    Index,
    Dlq,
}

impl Waiting {
    pub(super) fn kind(&self) -> WaitKind {
        match self {
            Self::Clock(_) => WaitKind::Clock,
            Self::Cleanup(_) => WaitKind::Cleanup,
            Self::Index(_) => WaitKind::Index,
            Self::Dlq(_) => WaitKind::Dlq,
        }
    }

    /// Short label for the metric.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Clock(_) => "clock",
            Self::Cleanup(_) => "cleanup",
            Self::Index(_) => "index",
            Self::Dlq(_) => "dlq",
        }
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clock(m) | Self::Cleanup(m) | Self::Index(m) | Self::Dlq(m) => f.write_str(m),
        }
    }
}

/// The hook a dead-letter write of partition `tp` reports its waits
/// through ([`crate::dlq::DlqWriter::send`]): a reason while the topic
/// cannot be written, `None` once it can.
pub(super) fn dlq_wait(
    tx: &tokio::sync::mpsc::UnboundedSender<super::Report>,
    tp: &super::poller::Tp,
    epoch: u64,
) -> impl Fn(Option<&str>) + Send + Sync {
    let (tx, tp) = (tx.clone(), tp.clone());
    move |why| {
        let _ = tx.send(match why {
            Some(m) => super::Report::Waiting {
                tp: tp.clone(),
                epoch,
                why: Waiting::Dlq(m.to_string()),
            },
            None => super::Report::WaitOver {
                tp: tp.clone(),
                epoch,
                kind: WaitKind::Dlq,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to `consumer.max_buffered_records` of these wait at once, in
    /// `VecDeque`s that keep up to twice their length: a field added here
    /// costs that many times its size (issue 17 took the entry from 200
    /// to 184 bytes: no action kind, which the target's `delete` already
    /// says; the alias shared by the topic's items).
    #[test]
    fn a_queue_entry_stays_small() {
        assert!(
            std::mem::size_of::<Queued>() <= 184,
            "Queued is {} bytes",
            std::mem::size_of::<Queued>()
        );
    }
}
