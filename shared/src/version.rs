//! The version of a change: one `u64` derived from the MongoDB cluster time,
//! used by `es-sync` as the Elasticsearch external version.
//!
//! A cluster time is a BSON timestamp `(t, i)`: `t` seconds since the epoch
//! (u32, so it runs to the year 2106) and `i` an increment that orders
//! operations within one second. The version is `t << 30 | i`:
//!
//! - ordered exactly as cluster times are, so it is strictly increasing in
//!   oplog order, hence for the changes of one document;
//! - below 2^62, so it fits Elasticsearch's signed 64-bit version for every
//!   `t` a BSON timestamp can hold (a plain `t << 32` would overflow 2^63 in
//!   January 2038);
//! - the increment gets 30 bits, over a billion operations in one second:
//!   no server approaches that, and a larger one is refused, not wrapped.
//!
//! Snapshot records carry the version of the cluster time read *before* the
//! copy began, so any change streamed after it has a version at least as
//! high and a snapshot record can never overwrite it.

use serde::{Deserialize, Serialize};

/// Bits given to the increment part of a cluster time.
pub const INCREMENT_BITS: u32 = 30;

/// A change version (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

/// Why a cluster time has no version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cluster time increment {increment} does not fit in {INCREMENT_BITS} bits")]
pub struct VersionError {
    /// The increment that was too large.
    pub increment: u32,
}

impl Version {
    /// The version of cluster time `(seconds, increment)`.
    pub fn from_cluster_time(seconds: u32, increment: u32) -> Result<Self, VersionError> {
        if increment >= 1 << INCREMENT_BITS {
            return Err(VersionError { increment });
        }
        Ok(Self(
            (u64::from(seconds) << INCREMENT_BITS) | u64::from(increment),
        ))
    }

    /// A version from its number (as read back from an event or an index).
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The number, as sent to Elasticsearch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The cluster time this version was made from.
    pub const fn cluster_time(self) -> (u32, u32) {
        (
            (self.0 >> INCREMENT_BITS) as u32,
            (self.0 & ((1 << INCREMENT_BITS) - 1)) as u32,
        )
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

    #[test]
    fn orders_like_cluster_times() {
        let a = Version::from_cluster_time(1_700_000_000, 5).unwrap();
        let b = Version::from_cluster_time(1_700_000_000, 6).unwrap();
        let c = Version::from_cluster_time(1_700_000_001, 0).unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.cluster_time(), (1_700_000_000, 6));
    }

    #[test]
    fn valid_beyond_2038_and_fits_elasticsearch() {
        // 2038-01-19T03:14:08Z is 2^31 seconds; u32::MAX is in 2106.
        let v2038 = Version::from_cluster_time(1 << 31, 1).unwrap();
        let vmax = Version::from_cluster_time(u32::MAX, (1 << INCREMENT_BITS) - 1).unwrap();
        assert!(v2038 > Version::from_cluster_time((1 << 31) - 1, 1_000_000).unwrap());
        assert!(vmax.as_u64() < i64::MAX as u64);
        assert_eq!(vmax.cluster_time(), (u32::MAX, (1 << INCREMENT_BITS) - 1));
    }

    #[test]
    fn oversized_increment_is_refused() {
        assert_eq!(
            Version::from_cluster_time(1, 1 << INCREMENT_BITS),
            Err(VersionError {
                increment: 1 << INCREMENT_BITS
            })
        );
    }
}
