//! What waits in a partition's queue ([`Queued`]: a bulk item or a
//! snapshot cleanup) and why a partition may wait ([`Waiting`]).

use crate::action::Action;
use crate::bulk::resolve::{Body, Target};
use crate::dlq::RawRecord;
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
        kind: &'static str,
        /// What it means for the roll-up.
        hint: Hint,
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
}

/// The kind of a [`Waiting`], to end one wait without ending another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitKind {
    Clock,
    Cleanup,
    Index,
}

impl Waiting {
    pub(super) fn kind(&self) -> WaitKind {
        match self {
            Self::Clock(_) => WaitKind::Clock,
            Self::Cleanup(_) => WaitKind::Cleanup,
            Self::Index(_) => WaitKind::Index,
        }
    }

    /// Short label for the metric.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Clock(_) => "clock",
            Self::Cleanup(_) => "cleanup",
            Self::Index(_) => "index",
        }
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clock(m) | Self::Cleanup(m) | Self::Index(m) => f.write_str(m),
        }
    }
}
