//! A sparse histogram of durations in ms with a bounded size: exact below
//! 128 ms, above that 64 bins per power of two (a bin is at most 1/64 of
//! its value wide, so a value read back is within 0.8 % of the one added).
//! Whatever is added, it never holds more than 3,776 bins: the `/status`
//! window stays bounded however many documents it counts.

use std::collections::BTreeMap;

/// Values below this are their own bin.
const EXACT: u64 = 128;
/// Bins per power of two above [`EXACT`].
const SUB: u32 = 64;

/// The bin of `v`.
fn bin_of(v: u64) -> u32 {
    if v < EXACT {
        return v as u32;
    }
    let log2 = 63 - v.leading_zeros(); // >= 7
    let shift = log2 - 6; // >= 1
    let mantissa = (v >> shift) as u32; // in 64..128
    EXACT as u32 + (shift - 1) * SUB + (mantissa - SUB)
}

/// The middle of bin `b` (the value read back).
fn value_of(b: u32) -> u64 {
    if b < EXACT as u32 {
        return u64::from(b);
    }
    let k = b - EXACT as u32;
    let shift = k / SUB + 1;
    let low = u64::from(k % SUB + SUB) << shift;
    low + (1u64 << shift) / 2
}

/// Counts of millisecond values (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bins {
    counts: BTreeMap<u32, u64>,
    total: u64,
}

impl Bins {
    /// Counts `n` values `v` (milliseconds).
    pub(crate) fn add(&mut self, v: u64, n: u64) {
        if n > 0 {
            *self.counts.entry(bin_of(v)).or_default() += n;
            self.total += n;
        }
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Bins) {
        for (b, n) in &other.counts {
            *self.counts.entry(*b).or_default() += n;
        }
        self.total += other.total;
    }

    /// `(value, count)` in increasing order of value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().map(|(b, n)| (value_of(*b), *n))
    }

    /// How many values were added.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0 < q <= 1): the smallest value with at least
    /// `q` of the values at or below it; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (v, n) in self.iter() {
            seen += n;
            if seen >= rank {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_within_one_percent_and_bins_are_bounded() {
        for v in (0..5000u64).chain([10_000, 123_456, 3_600_000, 86_400_000, u64::MAX / 2]) {
            let back = value_of(bin_of(v));
            if v < EXACT {
                assert_eq!(back, v);
            } else {
                let err = back.abs_diff(v) as f64 / v as f64;
                assert!(err <= 1.0 / 64.0, "{v} -> {back}");
            }
            assert!(bin_of(v) <= bin_of(u64::MAX));
        }
        assert_eq!(bin_of(u64::MAX), 3775);
        // Bins are ordered like their values.
        let mut last = 0;
        for v in 0..100_000u64 {
            let b = bin_of(v);
            assert!(b >= last);
            last = b;
        }
    }

    #[test]
    fn quantiles_count_ranks() {
        let mut b = Bins::default();
        assert_eq!(b.quantile(0.5), None);
        for v in 1..=100u64 {
            b.add(v, 1);
        }
        assert_eq!(b.total(), 100);
        assert_eq!(b.quantile(0.5), Some(50));
        assert_eq!(b.quantile(0.99), Some(99));
        assert_eq!(b.quantile(1.0), Some(100));
        b.add(10_000, 100);
        assert_eq!(b.quantile(0.5), Some(100));
        let p99 = b.quantile(0.99).unwrap();
        assert!(p99.abs_diff(10_000) <= 10_000 / 64, "{p99}");
        let mut c = Bins::default();
        c.merge(&b);
        c.merge(&b);
        assert_eq!(c.total(), 400);
        assert_eq!(c.quantile(0.5), b.quantile(0.5));
    }
}
