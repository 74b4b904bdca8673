//! Acknowledged documents of one alias that are not yet known to be
//! searchable, in buckets: all the documents taken in at one poll share a
//! [`Baseline`] (the shard copies' operation counts read *after* their
//! acknowledgement) and are searchable together once [`Copies::covers`]
//! it. A bucket holds their commit times as [`Commits`] (bounded
//! intervals, never one entry per document), and there are at most
//! [`MAX_BUCKETS`]: memory stays bounded whatever the rate, even while
//! refreshes are off or the statistics cannot be read.

use super::commits::Commits;
use super::refresh::{Baseline, Copies};
use std::collections::VecDeque;

/// Buckets kept per alias; past it the two oldest merge (into the later
/// baseline, so their documents are counted searchable later, never
/// earlier).
pub(crate) const MAX_BUCKETS: usize = 64;

/// Documents waiting for one baseline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) baseline: Baseline,
    pub(crate) commits: Commits,
}

/// The pending documents of one alias.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Taken in, waiting for their baseline (the next statistics read).
    new: Option<Commits>,
    buckets: VecDeque<Bucket>,
}

impl Pending {
    /// Takes in documents acknowledged before now.
    pub(crate) fn take_in(&mut self, commits: &Commits) {
        self.new.get_or_insert_with(Commits::default).merge(commits);
    }

    /// Whether anything waits (a statistics read is needed).
    pub(crate) fn is_empty(&self) -> bool {
        self.new.is_none() && self.buckets.is_empty()
    }

    /// Documents waiting.
    pub(crate) fn documents(&self) -> u64 {
        self.new.as_ref().map_or(0, Commits::total)
            + self.buckets.iter().map(|b| b.commits.total()).sum::<u64>()
    }

    /// After a statistics read at `now`: the documents taken in get the
    /// copies' current baseline; then every bucket the copies cover is
    /// returned.
    pub(crate) fn settle(&mut self, copies: &Copies, now: i64) -> Vec<Bucket> {
        if let Some(commits) = self.new.take() {
            let baseline = copies.baseline();
            match self.buckets.back_mut() {
                Some(last) if last.baseline == baseline => last.commits.merge(&commits),
                _ => self.buckets.push_back(Bucket { baseline, commits }),
            }
            if self.buckets.len() > MAX_BUCKETS {
                if let (Some(old), Some(next)) =
                    (self.buckets.pop_front(), self.buckets.front_mut())
                {
                    next.commits.merge(&old.commits);
                    next.commits.coarsen(now);
                }
            }
        }
        let (done, waiting): (Vec<Bucket>, Vec<Bucket>) = self
            .buckets
            .drain(..)
            .partition(|b| copies.covers(&b.baseline));
        self.buckets = waiting.into();
        done
    }
}

#[cfg(test)]
mod tests {
    use super::super::refresh::one_copy as snap;
    use super::*;

    fn commits(at: &[i64], now: i64) -> Commits {
        let mut c = Commits::default();
        for t in at {
            c.add(*t, now);
        }
        c
    }

    #[test]
    fn documents_resolve_at_the_first_refresh_after_their_baseline() {
        let never = |_: &str| None;
        let mut copies = Copies::default();
        let mut p = Pending::default();
        copies.observe(&snap(5, 10), 0, never);
        p.take_in(&commits(&[700, 600], 1_000));
        copies.observe(&snap(5, 12), 1_050, never);
        assert!(p.settle(&copies, 1_050).is_empty());
        assert_eq!(p.documents(), 2);
        // One more document, acknowledged after that baseline.
        p.take_in(&commits(&[1_050], 1_100));
        copies.observe(&snap(5, 13), 1_150, never);
        assert!(p.settle(&copies, 1_150).is_empty());
        // A refresh between 1150 and 1250: both buckets are visible.
        copies.observe(&snap(6, 13), 1_250, never);
        let done = p.settle(&copies, 1_250);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].commits, commits(&[600, 700], 1_000));
        assert_eq!(done[1].commits.total(), 1);
        assert!(p.is_empty());
    }

    #[test]
    fn a_refresh_seen_before_the_baseline_does_not_count() {
        let never = |_: &str| None;
        let mut copies = Copies::default();
        let mut p = Pending::default();
        copies.observe(&snap(5, 10), 0, never);
        // Written (ops 11) and refreshed (6) before the read that follows
        // the acknowledgement, then written again (ops 12).
        p.take_in(&commits(&[20], 100));
        copies.observe(&snap(6, 12), 100, never);
        assert!(
            p.settle(&copies, 100).is_empty(),
            "ops 12 may include the document after the refresh"
        );
        copies.observe(&snap(7, 12), 200, never);
        assert_eq!(p.settle(&copies, 200).len(), 1);
    }

    #[test]
    fn buckets_are_bounded_and_merge_into_the_later_baseline() {
        let never = |_: &str| None;
        let mut copies = Copies::default();
        let mut p = Pending::default();
        // Refreshes are off: every read has new operations, none resolves.
        for k in 0..(MAX_BUCKETS as i64 + 10) {
            p.take_in(&commits(&[k * 100 - 10], k * 100));
            copies.observe(&snap(1, k as u64), k * 100 + 50, never);
            assert!(p.settle(&copies, k * 100 + 50).is_empty());
        }
        assert_eq!(p.buckets.len(), MAX_BUCKETS);
        assert_eq!(p.documents(), MAX_BUCKETS as u64 + 10);
        assert_eq!(p.buckets[0].commits.total(), 11);
        // The merged bucket waits for the baseline of the 11th read.
        let ops_of = |b: &Bucket| b.baseline[0].1;
        assert_eq!(ops_of(&p.buckets[0]), 10);
        // Refreshes again: everything is searchable.
        let end = MAX_BUCKETS as u64 + 10;
        copies.observe(&snap(2, end), 10_000, never);
        assert_eq!(p.settle(&copies, 10_000).len(), MAX_BUCKETS);
    }

    #[test]
    fn unchanged_baselines_share_a_bucket() {
        let never = |_: &str| None;
        let mut copies = Copies::default();
        let mut p = Pending::default();
        copies.observe(&snap(1, 5), 0, never);
        p.take_in(&commits(&[90], 100));
        assert!(p.settle(&copies, 100).is_empty());
        p.take_in(&commits(&[190], 200));
        copies.observe(&snap(1, 5), 200, never);
        assert!(p.settle(&copies, 200).is_empty());
        assert_eq!(p.buckets.len(), 1);
        assert_eq!(p.documents(), 2);
    }
}
