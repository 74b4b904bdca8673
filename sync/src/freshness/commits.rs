//! The MongoDB commit times of acknowledged documents, bounded: each is
//! kept as an aligned interval `[start, start + 2^k)` (ms since the epoch)
//! whose width is at most 1/64 of its age (exact below 128 ms of age).
//! Ages only grow, so [`Commits::coarsen`] merges intervals into the
//! aligned interval containing them as they age, without moving any
//! (aligned intervals nest: no rounding accumulates however often it
//! runs). When a document is found searchable at time `R`, `R` minus its
//! interval's middle is off by at most `(R - commit) / 128`.
//!
//! Bound: at most about 128 intervals per power of two of age, about
//! 5,000 over any span of time, whatever the number of documents.

use std::collections::BTreeMap;

/// Intervals kept before an [`Commits::add`] coarsens by itself.
const COARSEN_ABOVE: usize = 8192;

/// log2 of the widest power of two `<= max(1, age / 64)`.
fn width_log2(age: i64) -> u32 {
    let w = (age / 64).max(1) as u64;
    63 - w.leading_zeros()
}

/// Commit times in aligned intervals (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Commits {
    /// `(log2 width, start) -> count`.
    intervals: BTreeMap<(u32, i64), u64>,
    total: u64,
}

impl Commits {
    /// Counts a commit at `commit` (ms) seen at `now` (ms).
    pub(crate) fn add(&mut self, commit: i64, now: i64) {
        let k = width_log2(now - commit);
        let start = commit & !((1i64 << k) - 1);
        *self.intervals.entry((k, start)).or_default() += 1;
        self.total += 1;
        if self.intervals.len() > COARSEN_ABOVE {
            self.coarsen(now);
        }
    }

    /// Adds every commit of `other`.
    pub(crate) fn merge(&mut self, other: &Commits) {
        for (key, n) in &other.intervals {
            *self.intervals.entry(*key).or_default() += n;
        }
        self.total += other.total;
    }

    /// Widens the intervals to what their age at `now` allows.
    pub(crate) fn coarsen(&mut self, now: i64) {
        let old = std::mem::take(&mut self.intervals);
        for ((k, start), n) in old {
            // The youngest commit of the interval has the smallest age.
            let youngest = start + (1i64 << k) - 1;
            let k2 = width_log2(now - youngest).max(k);
            let start2 = start & !((1i64 << k2) - 1);
            *self.intervals.entry((k2, start2)).or_default() += n;
        }
    }

    /// `(middle of the interval, count)` of every interval.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.intervals
            .iter()
            .map(|((k, start), n)| (start + (1i64 << k) / 2, *n))
    }

    /// How many commits.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// How many intervals are kept.
    #[cfg(test)]
    pub(crate) fn intervals(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(R - middle)` of every commit, expanded.
    fn ages(c: &Commits, r: i64) -> Vec<i64> {
        let mut v: Vec<i64> = c
            .iter()
            .flat_map(|(m, n)| std::iter::repeat_n(r - m, n as usize))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn young_commits_are_exact_and_older_ones_within_one_percent() {
        let now = 1_700_000_000_000;
        let mut c = Commits::default();
        c.add(now - 50, now);
        c.add(now - 127, now);
        c.add(now - 5_000, now);
        c.add(now - 3_600_000, now);
        assert_eq!(c.total(), 4);
        let got = ages(&c, now);
        assert_eq!(&got[..2], &[50, 127]);
        for (g, want) in got[2..].iter().zip([5_000i64, 3_600_000]) {
            assert!(
                (g - want).abs() as f64 <= want as f64 / 128.0,
                "{g} vs {want}"
            );
        }
    }

    #[test]
    fn coarsening_as_they_age_keeps_every_commit_within_its_bound() {
        let t0 = 1_700_000_000_000i64;
        let mut c = Commits::default();
        let commits: Vec<i64> = (0..10_000).map(|i| t0 + i * 7).collect();
        for (i, &at) in commits.iter().enumerate() {
            c.add(at, at + 20 + (i as i64 % 300));
        }
        // An hour of coarsening every 100 ms would be 36,000 runs; a few
        // thousand show that nothing drifts.
        let mut now = t0 + 70_000;
        for _ in 0..3_000 {
            now += 100;
            c.coarsen(now);
        }
        assert_eq!(c.total(), 10_000);
        assert!(c.intervals() < 2_000, "{} intervals", c.intervals());
        let r = now + 1_000;
        let got = ages(&c, r);
        let mut want: Vec<i64> = commits.iter().map(|t| r - t).collect();
        want.sort();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() as f64 <= *w as f64 / 128.0 + 1.0,
                "{g} vs {w}"
            );
        }
        let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len() as f64;
        assert!((mean(&got) - mean(&want)).abs() < mean(&want) / 500.0);
    }

    #[test]
    fn merges_add_up_and_stay_bounded() {
        let now = 1_700_000_000_000i64;
        let mut a = Commits::default();
        for i in 0..20_000 {
            a.add(now - i, now);
        }
        assert!(a.intervals() <= COARSEN_ABOVE + 1);
        let mut b = Commits::default();
        b.merge(&a);
        b.merge(&a);
        assert_eq!(b.total(), 40_000);
    }
}
