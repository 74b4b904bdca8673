//! Per-partition offset tracking: which received records are done, and the
//! offset that may be committed.
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

/// Offsets of one partition (see the module documentation).
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// `(offset, done)` of records not yet part of the done prefix.
    pending: VecDeque<(i64, bool)>,
    /// Next offset to commit (one past the done prefix); `None` before the
    /// first record finished.
    committable: Option<i64>,
}

impl OffsetTracker {
    /// Notes a received record. Offsets must increase; a repeated or older
    /// offset (a redelivery after a seek) is ignored and returns `false`.
    pub fn received(&mut self, offset: i64) -> bool {
        let last = self
            .pending
            .back()
            .map(|p| p.0)
            .or(self.committable.map(|c| c - 1));
        if last.is_some_and(|l| offset <= l) {
            return false;
        }
        self.pending.push_back((offset, false));
        true
    }

    /// Marks `offset` done; returns the new committable offset if it moved.
    pub fn done(&mut self, offset: i64) -> Option<i64> {
        if let Ok(i) = self.pending.binary_search_by_key(&offset, |p| p.0) {
            self.pending[i].1 = true;
        }
        let mut moved = None;
        while let Some(&(o, true)) = self.pending.front() {
            self.pending.pop_front();
            moved = Some(o + 1);
        }
        if moved.is_some() {
            self.committable = moved;
        }
        moved
    }

    /// The next offset to commit, if any record finished.
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Records received and not in the done prefix.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// The first offset not done, if any.
    pub fn first_pending(&self) -> Option<i64> {
        self.pending.iter().find(|p| !p.1).map(|p| p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_done_prefix() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 15] {
            assert!(t.received(o));
        }
        assert_eq!(t.committable(), None);
        assert_eq!(t.done(11), None, "10 is not done yet");
        assert_eq!(t.done(15), None);
        assert_eq!(t.done(10), Some(12), "10 and 11 done: commit 12");
        assert_eq!(t.first_pending(), Some(12));
        assert_eq!(t.done(12), Some(16), "gap 13-14 (compacted) is fine");
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.committable(), Some(16));
    }

    #[test]
    fn redelivered_offsets_are_ignored() {
        let mut t = OffsetTracker::default();
        assert!(t.received(5));
        assert!(!t.received(5));
        t.done(5);
        assert!(!t.received(4));
        assert!(t.received(6));
        assert_eq!(t.done(99), None, "unknown offsets change nothing");
        assert_eq!(t.committable(), Some(6));
    }
}
