//! The version of a change: one `u64` used by `es-sync` as the
//! Elasticsearch external version. Layout `mongo-source.version.v2`:
//!
//! ```text
//!  63   62 ............ 31   30 ........ 12   11 ...... 4   3 .. 0
//! [ 0 ][ t: 32 bits        ][ i: 19 bits    ][ n: 8 bits  ][ r: 4  ]
//! ```
//!
//! - `t`, `i`: the cluster time (BSON timestamp) of the change: seconds since
//!   the epoch (to 2106) and the increment that orders operations within one
//!   second. 19 bits hold 524,287 oplog entries per second, more than one
//!   replica set writes; a larger increment is clamped to the largest
//!   (counted and logged by the source, see [`Version::saturating`]).
//! - `n`: the change's rank among the changes of the *same document* inside
//!   one multi-document transaction. Every change of a transaction carries
//!   the transaction's cluster time, so without `n` two changes of one
//!   document in one transaction would share a version and Elasticsearch
//!   would keep the first (issue 14). Outside transactions `n = 0`. 255
//!   changes of one document in one transaction fit; later ones share the
//!   last rank (clamped, counted and logged).
//! - `r`: reserved for the sink. Sources always write 0; `es-sync` may
//!   rewrite a document it already holds (a card's reply roll-up) at its
//!   stored version + 1 as a compare-and-set, up to 15 times before the
//!   document's next change (whose version is at least 16 higher).
//!
//! Properties:
//! - ordered as `(cluster time, n)`, so strictly increasing for the changes
//!   of one document in commit order, inside and across transactions;
//! - below 2^63 for every cluster time (Elasticsearch versions are signed
//!   64-bit);
//! - every version of this layout is at least twice the version the first
//!   layout (`t << 30 | i`, written before issue 14) gave the same cluster
//!   time, so an index written by the first layout is overtaken by the
//!   first change of each document, with no reindex.
//!
//! Snapshot records carry the version of the cluster time read *before* the
//! copy began (`n = 0`), so any change streamed after it has a version at
//! least as high and a snapshot record can never overwrite it.

use serde::{Deserialize, Serialize};

/// Bits of the increment part of a cluster time.
pub const INCREMENT_BITS: u32 = 19;
/// Bits of the rank of a change inside a transaction.
pub const RANK_BITS: u32 = 8;
/// Bits reserved for sink-side rewrites.
pub const SINK_BITS: u32 = 4;
/// Where the seconds start.
const TIME_SHIFT: u32 = INCREMENT_BITS + RANK_BITS + SINK_BITS;
/// Largest increment that fits.
pub const MAX_INCREMENT: u32 = (1 << INCREMENT_BITS) - 1;
/// Largest rank that fits.
pub const MAX_RANK: u32 = (1 << RANK_BITS) - 1;
/// Largest sink rewrite count.
pub const MAX_SINK: u64 = (1 << SINK_BITS) - 1;

/// A change version (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

/// The parts of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Cluster time seconds.
    pub t: u32,
    /// Cluster time increment (clamped to [`MAX_INCREMENT`]).
    pub i: u32,
    /// Rank inside a transaction.
    pub n: u32,
    /// Sink rewrites.
    pub r: u32,
}

/// Why a cluster time and rank have no exact version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    /// The increment is over [`MAX_INCREMENT`].
    #[error("cluster time increment {0} does not fit in {INCREMENT_BITS} bits")]
    Increment(u32),
    /// The rank is over [`MAX_RANK`].
    #[error("transaction rank {0} does not fit in {RANK_BITS} bits")]
    Rank(u32),
}

impl Version {
    /// The exact version of cluster time `(t, i)` and rank `n`.
    pub fn new(t: u32, i: u32, n: u32) -> Result<Self, VersionError> {
        if i > MAX_INCREMENT {
            return Err(VersionError::Increment(i));
        }
        if n > MAX_RANK {
            return Err(VersionError::Rank(n));
        }
        Ok(Self::pack(t, i, n))
    }

    /// The version of cluster time `(t, i)` and rank `n`, clamping an
    /// increment or a rank that does not fit to the largest that does; the
    /// flag says whether that happened. Clamping keeps the order (never a
    /// wrap), at the cost of two changes of one document sharing a version
    /// when both are past the limit.
    pub fn saturating(t: u32, i: u32, n: u32) -> (Self, bool) {
        let clamped = i > MAX_INCREMENT || n > MAX_RANK;
        (
            Self::pack(t, i.min(MAX_INCREMENT), n.min(MAX_RANK)),
            clamped,
        )
    }

    /// The lowest version of cluster time `(t, i)` (rank 0), clamped.
    pub fn of_cluster_time(t: u32, i: u32) -> Self {
        Self::saturating(t, i, 0).0
    }

    fn pack(t: u32, i: u32, n: u32) -> Self {
        Self(
            (u64::from(t) << TIME_SHIFT)
                | (u64::from(i) << (RANK_BITS + SINK_BITS))
                | (u64::from(n) << SINK_BITS),
        )
    }

    /// A version from its number (as read back from an event or an index).
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The number, as sent to Elasticsearch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The parts of this version.
    pub const fn parts(self) -> Parts {
        Parts {
            t: (self.0 >> TIME_SHIFT) as u32,
            i: ((self.0 >> (RANK_BITS + SINK_BITS)) & MAX_INCREMENT as u64) as u32,
            n: ((self.0 >> SINK_BITS) & MAX_RANK as u64) as u32,
            r: (self.0 & MAX_SINK) as u32,
        }
    }

    /// The cluster time this version was made from (the increment as
    /// stored, so clamped).
    pub const fn cluster_time(self) -> (u32, u32) {
        let p = self.parts();
        (p.t, p.i)
    }

    /// Whether this is a version a source writes for cluster time `(t, i)`:
    /// this layout with `r = 0`, or the first layout `t << 30 | i` (records
    /// written before issue 14, still read on replays). A version that does
    /// not match the cluster time it travels with was not made by a source
    /// and is refused (it could freeze a document, or delete a namespace,
    /// forever).
    pub fn matches_cluster_time(self, t: u32, i: u32) -> bool {
        let p = self.parts();
        let current = p.r == 0 && p.t == t && p.i == i.min(MAX_INCREMENT);
        let first_layout = i < (1 << 30) && self.0 == (u64::from(t) << 30 | u64::from(i));
        current || first_layout
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: u32, i: u32, n: u32) -> Version {
        Version::new(t, i, n).unwrap()
    }

    #[test]
    fn orders_like_cluster_time_then_rank() {
        let a = v(1_700_000_000, 5, 0);
        let b = v(1_700_000_000, 5, 1);
        let c = v(1_700_000_000, 6, 0);
        let d = v(1_700_000_001, 0, 0);
        assert!(a < b && b < c && c < d);
        // The highest rank of one transaction stays below the next op.
        assert!(v(1_700_000_000, 5, MAX_RANK) < c);
        assert_eq!(
            b.parts(),
            Parts {
                t: 1_700_000_000,
                i: 5,
                n: 1,
                r: 0
            }
        );
        assert_eq!(b.cluster_time(), (1_700_000_000, 5));
    }

    #[test]
    fn sink_rewrites_stay_below_the_next_rank() {
        let a = v(1_700_000_000, 5, 3);
        let rewritten = Version::from_u64(a.as_u64() + MAX_SINK);
        assert!(rewritten > a && rewritten < v(1_700_000_000, 5, 4));
        assert_eq!(rewritten.parts().r, 15);
    }

    #[test]
    fn fits_elasticsearch_until_2106() {
        let vmax = v(u32::MAX, MAX_INCREMENT, MAX_RANK);
        assert!(vmax.as_u64() + MAX_SINK <= i64::MAX as u64);
        let v2038 = v(1 << 31, 1, 0);
        assert!(v2038 > v((1 << 31) - 1, MAX_INCREMENT, MAX_RANK));
    }

    #[test]
    fn overtakes_the_first_layout() {
        for (t, i) in [(1_700_000_000u32, 0u32), (1, (1 << 30) - 1), (u32::MAX, 7)] {
            let first = (u64::from(t) << 30) | u64::from(i);
            assert!(Version::of_cluster_time(t, 0).as_u64() > first || t == 0);
            assert!(Version::from_u64(first).matches_cluster_time(t, i));
        }
    }

    #[test]
    fn out_of_range_parts_are_refused_or_clamped() {
        assert_eq!(
            Version::new(1, MAX_INCREMENT + 1, 0),
            Err(VersionError::Increment(MAX_INCREMENT + 1))
        );
        assert_eq!(
            Version::new(1, 0, MAX_RANK + 1),
            Err(VersionError::Rank(MAX_RANK + 1))
        );
        let (s, clamped) = Version::saturating(9, u32::MAX, 1000);
        assert!(clamped);
        assert_eq!(s, v(9, MAX_INCREMENT, MAX_RANK));
        assert!(s < v(10, 0, 0), "clamping never wraps into the next second");
        assert_eq!(Version::saturating(9, 3, 2), (v(9, 3, 2), false));
    }

    #[test]
    fn only_source_made_versions_match_their_cluster_time() {
        let ok = v(1_700_000_000, 7, 2);
        assert!(ok.matches_cluster_time(1_700_000_000, 7));
        assert!(!ok.matches_cluster_time(1_700_000_000, 8));
        assert!(!ok.matches_cluster_time(1_700_000_001, 7));
        assert!(!Version::from_u64(ok.as_u64() + 1).matches_cluster_time(1_700_000_000, 7));
        assert!(!Version::from_u64(1 << 62).matches_cluster_time(1_700_000_000, 7));
        // A clamped increment matches its real increment.
        let clamped = Version::of_cluster_time(5, MAX_INCREMENT + 10);
        assert!(clamped.matches_cluster_time(5, MAX_INCREMENT + 10));
    }
}
