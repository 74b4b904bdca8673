//! Per-partition offset tracking: which received records are done, the
//! offset that may be committed, and what the records not done hold (bytes
//! for the buffer bound, the oldest event time for the lag).
//!
//! Records arrive in offset order ([`OffsetTracker::received`]); they finish
//! in any order ([`OffsetTracker::done`]): bulk items in order, but DLQ
//! writes and no-op records at their own pace. The committable offset is
//! one past the last record of the longest done prefix, so a commit never
//! covers a record that is not indexed, conflicted or dead-lettered.
//!
//! Delivery guarantee: at-least-once. After a crash, records after the
//! committed offset are delivered again; versioning makes that harmless.

use std::collections::VecDeque;

/// Capacity a per-partition collection keeps whatever it holds: a small
/// one is not reallocated as it fills and drains.
pub(crate) const KEEP_CAPACITY: usize = 1024;

/// The capacity to shrink a collection of `len` entries to, if any: once
/// it holds under a quarter of a capacity above [`KEEP_CAPACITY`], twice
/// its length (at least `KEEP_CAPACITY`). Shrinking only after falling to
/// a quarter keeps the copies amortised O(1) per entry. Collections keep
/// their largest capacity otherwise, and every partition's would stay at
/// its busiest moment's.
pub(crate) fn shrink_to(capacity: usize, len: usize) -> Option<usize> {
    (capacity > KEEP_CAPACITY && capacity > 4 * len).then(|| (2 * len).max(KEEP_CAPACITY))
}

/// One received record not yet in the done prefix. 24 bytes: up to
/// `consumer.max_buffered_records` of these exist at once.
#[derive(Debug, Clone, Copy)]
struct Pending {
    offset: i64,
    /// Its event time, seconds (for the lag of the oldest record).
    secs: u32,
    /// What it holds in memory, bytes (for the buffer bound).
    bytes: u32,
    done: bool,
}

/// What [`OffsetTracker::done`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The record was outstanding and is done now (not a repeat, not
    /// unknown).
    pub newly: bool,
    /// The new committable offset, if it moved.
    pub moved: Option<i64>,
}

/// Offsets of one partition (see the module documentation); also what the
/// records not done hold (bytes, oldest event time), so one structure
/// owns the partition's outstanding records.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// Records not yet part of the done prefix, in offset order; the first
    /// is never done.
    pending: VecDeque<Pending>,
    /// Bytes the records not done hold.
    bytes: usize,
    /// Next offset to commit (one past the done prefix); `None` before the
    /// first record finished.
    committable: Option<i64>,
}

impl OffsetTracker {
    /// Notes a received record with its event time (seconds) and the bytes
    /// it holds. Offsets must increase; a repeated or older offset (a
    /// redelivery after a seek) is ignored and returns `false`.
    pub fn received(&mut self, offset: i64, event_secs: u64, bytes: usize) -> bool {
        let last = self
            .pending
            .back()
            .map(|p| p.offset)
            .or(self.committable.map(|c| c - 1));
        if last.is_some_and(|l| offset <= l) {
            return false;
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.pending.push_back(Pending {
            offset,
            secs: u32::try_from(event_secs).unwrap_or(u32::MAX),
            bytes,
            done: false,
        });
        self.bytes += bytes as usize;
        true
    }

    /// Marks `offset` done.
    pub fn done(&mut self, offset: i64) -> Done {
        let mut newly = false;
        if let Ok(i) = self.pending.binary_search_by_key(&offset, |p| p.offset) {
            let p = &mut self.pending[i];
            if !p.done {
                p.done = true;
                newly = true;
                self.bytes = self.bytes.saturating_sub(p.bytes as usize);
            }
        }
        let mut moved = None;
        while let Some(&Pending {
            offset: o,
            done: true,
            ..
        }) = self.pending.front()
        {
            self.pending.pop_front();
            moved = Some(o + 1);
        }
        if moved.is_some() {
            self.committable = moved;
            self.trim();
        }
        Done { newly, moved }
    }

    /// Gives back the capacity a burst left ([`shrink_to`]): up to
    /// `consumer.max_buffered_records` entries per partition otherwise.
    fn trim(&mut self) {
        if let Some(c) = shrink_to(self.pending.capacity(), self.pending.len()) {
            self.pending.shrink_to(c);
        }
    }

    /// The next offset to commit, if any record finished.
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Records received and not in the done prefix (a record done while
    /// an earlier one is not still counts: its entry waits here, and a
    /// head that stays undone must stop consumption, not grow this).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the records not done hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The first offset not done, if any.
    pub fn first_pending(&self) -> Option<i64> {
        self.pending.front().map(|p| p.offset)
    }

    /// Event time (seconds) of the first record not done.
    pub fn oldest_event_secs(&self) -> Option<u64> {
        self.pending.front().map(|p| u64::from(p.secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_done_prefix() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 15] {
            assert!(t.received(o, 100 + o as u64, 10));
        }
        assert_eq!(t.committable(), None);
        assert_eq!((t.outstanding(), t.bytes()), (4, 40));
        assert_eq!(t.oldest_event_secs(), Some(110));
        assert_eq!(t.done(11).moved, None, "10 is not done yet");
        assert_eq!(t.done(15).moved, None);
        assert_eq!(t.oldest_event_secs(), Some(110), "10 is still the oldest");
        assert_eq!((t.outstanding(), t.bytes()), (4, 20), "entries wait for 10");
        assert_eq!(t.done(10).moved, Some(12), "10 and 11 done: commit 12");
        assert_eq!(t.first_pending(), Some(12));
        assert_eq!(t.oldest_event_secs(), Some(112));
        assert_eq!(t.done(12).moved, Some(16), "gap 13-14 (compacted) is fine");
        assert_eq!((t.outstanding(), t.bytes()), (0, 0));
        assert_eq!(t.oldest_event_secs(), None);
        assert_eq!(t.committable(), Some(16));
    }

    #[test]
    fn a_drained_burst_gives_its_capacity_back() {
        let mut t = OffsetTracker::default();
        for o in 0..10_000 {
            t.received(o, 0, 1);
        }
        assert!(t.pending.capacity() >= 10_000);
        for o in 0..9_990 {
            t.done(o);
        }
        assert_eq!(t.outstanding(), 10);
        assert!(
            t.pending.capacity() <= 2 * KEEP_CAPACITY,
            "capacity {} kept for 10 entries",
            t.pending.capacity()
        );
        assert_eq!(
            (t.first_pending(), t.committable()),
            (Some(9_990), Some(9_990))
        );
    }

    #[test]
    fn redelivered_offsets_are_ignored() {
        let mut t = OffsetTracker::default();
        assert!(t.received(5, 0, 7));
        assert!(!t.received(5, 0, 7));
        assert!(t.done(5).newly);
        assert!(!t.received(4, 0, 7));
        assert!(t.received(6, 0, 7));
        assert!(t.received(7, 0, 7));
        assert!(t.done(7).newly);
        assert!(!t.done(7).newly, "a second done changes nothing");
        assert_eq!(t.bytes(), 7, "6 holds its bytes");
        assert_eq!(
            t.done(99),
            Done {
                newly: false,
                moved: None
            },
            "unknown offsets change nothing"
        );
        assert_eq!(t.committable(), Some(6));
    }
}
