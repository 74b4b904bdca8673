//! Freshness as a searcher sees it: per alias, the time from a change's
//! MongoDB commit to the moment it is searchable, i.e. acknowledged by a
//! bulk request **and** past the next refresh of its index
//! (`es_sync_freshness_seconds{index}`, a histogram; p50/p99 of the last
//! `freshness.window_seconds` on `/status`).
//!
//! - **Start: the commit.** The change's `wallTime` (MongoDB 6.0+, in
//!   mongo-source's events as `wall_time`, in the MongoDB Kafka
//!   Connector's records as `wallTime`): the primary's clock in ms, the
//!   same clock as the cluster time, whose `t` has whole seconds only.
//!   Without a wall time, the middle of the cluster time's second (off by
//!   at most 0.5 s, by nothing on average;
//!   [`crate::event::SourceEvent::commit_time_ms`]). Snapshot copies have
//!   no commit of their own and are not measured. The end is read on this
//!   host's clock: clock skew between the MongoDB primary and es-sync
//!   adds to every value (NTP keeps it in milliseconds); a negative value
//!   counts as 0.
//! - **Acknowledged**: the bulk job reports each item Elasticsearch
//!   accepted (indexed or deleted; conflicts change nothing a searcher
//!   sees) with [`Freshness::accepted`], its one hook in the consumer
//!   (`consumer/bulk_job.rs`, `BulkJob::finish`).
//! - **Past the next refresh**: a supervised task ([`task`]) reads the
//!   alias's refresh statistics (`GET /{alias}/_stats/refresh,indexing?level=shards`)
//!   every `freshness.poll_interval_ms` (100 ms) while documents of the
//!   alias wait, and nothing while none do. No request is added per bulk.
//!   The documents acknowledged before a read wait for the shard copies'
//!   operation counts in that read to be covered by a later refresh
//!   ([`refresh`]); then each counts `read time - commit`.
//!
//! **Precision.** The statistics show that a refresh happened between two
//! reads, not when: a document is counted searchable at the first read
//! after the refresh that exposed it, on average half a poll interval
//! late. And a refresh that falls between the document's indexing and
//! the first read after its acknowledgement cannot be told from one just
//! before the indexing, so such a document (a fraction of about `(bulk
//! latency + poll interval / 2) / refresh_interval`, some 6 % with the
//! defaults) waits for the following refresh. Together the metric is on
//! average about one poll interval (100 ms) above the true value and
//! never below it (up to clock skew and the few ms a refresh takes): it
//! does not claim a document searchable before it certainly is. Values
//! are kept to within 1/128 of themselves ([`commits`]).
//!
//! **Memory** is bounded: the acknowledged documents are kept as commit
//! times in intervals ([`commits::Commits`]) inside at most 64 buckets per
//! alias ([`pending`]), the `/status` window as 30 slots of bounded bins
//! ([`window`]), whatever the rate and however long refreshes are off.
//!
//! Delivery guarantee: none (observability only); nothing here can hold
//! back or fail a record.

mod bins;
mod commits;
mod config;
mod pending;
mod refresh;
mod task;
mod window;

pub use config::FreshnessConfig;
pub use task::supervise;

use commits::Commits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Buckets of `es_sync_freshness_seconds`: fine around the usual second
/// (refresh interval 1 s), the alert's 30 s is a bucket boundary.
pub const BUCKETS: [f64; 19] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];

/// Milliseconds since the epoch on this host's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The documents acknowledged since the task last took them, per alias
/// (cheap to clone, shared). Does nothing until the task runs.
#[derive(Clone, Debug, Default)]
pub struct Freshness {
    on: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<HashMap<String, Commits>>>,
}

impl Freshness {
    /// An item of `index` committed in MongoDB at `commit_ms` (ms since
    /// the epoch; `None`: not measured, e.g. a snapshot copy) was accepted
    /// by Elasticsearch just now.
    pub fn accepted(&self, index: &str, commit_ms: Option<i64>) {
        let Some(commit) = commit_ms else { return };
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ms();
        let mut g = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        match g.get_mut(index) {
            Some(c) => c.add(commit, now),
            None => {
                let mut c = Commits::default();
                c.add(commit, now);
                g.insert(index.to_string(), c);
            }
        }
    }

    /// Starts keeping what is accepted (the task runs).
    fn switch_on(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// Everything accepted since the last call.
    fn take(&self) -> HashMap<String, Commits> {
        std::mem::take(&mut *self.acknowledged.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_items_are_kept_only_while_the_task_runs() {
        let f = Freshness::default();
        f.accepted("cards", Some(now_ms() - 300));
        assert!(f.take().is_empty(), "off: nothing kept");
        f.switch_on();
        f.accepted("cards", Some(now_ms() - 300));
        f.accepted("cards", Some(now_ms() - 200));
        f.accepted("cards", None);
        f.accepted("replies", Some(now_ms()));
        let taken = f.take();
        assert_eq!(taken["cards"].total(), 2);
        assert_eq!(taken["replies"].total(), 1);
        assert!(f.take().is_empty(), "taken once");
    }
}
