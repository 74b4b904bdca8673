//! One assigned partition: the records received and not done, in offset
//! order, and the rules for taking them into bulk requests. It is the only
//! owner of a partition's counters; the loop calls its methods and nothing
//! else changes them.
//!
//! Rules ([`PartitionQueue::take_bulk`], [`PartitionQueue::due`]):
//! - records are taken in offset order, several requests of one partition
//!   may be in flight at once, but a record whose document (`_id`) is in
//!   flight is held back, and every later record of that document with it,
//!   so the changes of one document reach Elasticsearch in order (and a
//!   patch reads the state every earlier change left);
//! - a snapshot cleanup is a barrier: it starts when every record before
//!   it is done, and nothing after it is taken until it is done;
//! - a record held for the clocks is a barrier too;
//! - a request is due when its records fill it (count or bytes) or the
//!   oldest has waited `bulk.linger_ms`.
//!
//! Offsets: a record is done when its item is indexed, conflicted, skipped
//! or dead-lettered ([`PartitionQueue::done`]); the committable offset is
//! one past the longest done prefix ([`crate::offsets`]).

use super::partition::{Queued, Waiting, Work};
use crate::bulk::request::BulkLimits;
use crate::offsets::{self, OffsetTracker};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::time::Instant;

/// How far into a queue a request looks for records not held back (a
/// bound on the work of one scan).
const SCAN_FACTOR: usize = 4;

/// What the loop may start on a partition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing (empty, waiting on in-flight work, or held).
    Nothing,
    /// The snapshot cleanup at the head.
    Cleanup,
    /// A bulk request, due now.
    Bulk,
    /// A bulk request, due at this instant.
    BulkAt(Instant),
}

/// One assigned partition (see the module documentation).
#[derive(Debug)]
pub(super) struct PartitionQueue {
    /// Assignment generation: work reported for another epoch is ignored.
    pub(super) epoch: u64,
    tracker: OffsetTracker,
    queue: VecDeque<Queued>,
    /// Bulk items in `queue` and their bytes.
    queued_items: usize,
    queued_bytes: usize,
    /// Documents with an item in flight: count of items by a hash of the
    /// `_id` (no copy of the id per record in flight). Two ids of one hash
    /// hold each other back, which only delays; it never reorders.
    in_flight_ids: HashMap<u64, u32>,
    /// The hash of `in_flight_ids` (seeded per partition).
    id_hash: RandomState,
    /// Bulk requests of this partition in flight.
    bulks: usize,
    /// A snapshot cleanup in flight.
    cleaning: bool,
    /// Set when a take found nothing it may send (everything held back):
    /// no new try until a request of this partition finishes.
    stuck: bool,
    /// The offset last stored for commit.
    pub(super) stored: Option<i64>,
    /// Why the partition waits, shown on `/status`.
    pub(super) waiting: Option<Waiting>,
    /// A task of this partition panicked and it was restarted; cleared by
    /// the next record done.
    pub(super) failed: bool,
    /// From the client's statistics: high watermark, last stable offset,
    /// and the consumer's position (next offset to hand over).
    pub(super) marks: Option<Marks>,
    /// One past the last offset received (0 before any).
    next_expected: i64,
}

/// Offsets the Kafka client reports for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Marks {
    /// High watermark.
    pub(super) high: i64,
    /// Last stable offset: below it, every transaction is decided.
    pub(super) stable: i64,
    /// The consumer's position: one past the last record or transaction
    /// marker it read.
    pub(super) position: i64,
    /// One past the last record the poller handed to the loop (0 before
    /// any): when the loop has received up to it, nothing is in transit,
    /// and what lies between it and `position` are transaction markers.
    pub(super) handed: i64,
    /// The group's committed offset (0 when none): done, by this member
    /// or the one before.
    pub(super) committed: i64,
}

impl PartitionQueue {
    pub(super) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            tracker: OffsetTracker::default(),
            queue: VecDeque::new(),
            queued_items: 0,
            queued_bytes: 0,
            in_flight_ids: HashMap::new(),
            id_hash: RandomState::new(),
            bulks: 0,
            cleaning: false,
            stuck: false,
            stored: None,
            waiting: None,
            failed: false,
            marks: None,
            next_expected: 0,
        }
    }

    /// Notes a received record; `false` for a repeat (already received).
    pub(super) fn receive(&mut self, offset: i64, event_secs: u64, bytes: usize) -> bool {
        if !self.tracker.received(offset, event_secs, bytes) {
            return false;
        }
        self.next_expected = offset + 1;
        true
    }

    /// Queues work for a received record.
    pub(super) fn enqueue(&mut self, q: Queued) {
        if let Work::Bulk { size, .. } = &q.work {
            self.queued_items += 1;
            self.queued_bytes += size;
        }
        self.queue.push_back(q);
    }

    /// Marks `offset` done; the new committable offset if it moved.
    pub(super) fn done(&mut self, offset: i64) -> Option<i64> {
        let done = self.tracker.done(offset);
        if done.newly {
            self.failed = false;
        }
        done.moved
    }

    /// What may start now (see the module documentation).
    pub(super) fn next(&self, limits: &BulkLimits, now: Instant) -> Next {
        let Some(head) = self.queue.front() else {
            return Next::Nothing;
        };
        if self.cleaning || !head.ready() {
            return Next::Nothing;
        }
        match head.work {
            Work::Cleanup { .. } if self.bulks == 0 => Next::Cleanup,
            Work::Cleanup { .. } => Next::Nothing,
            Work::Bulk { .. } if self.stuck => Next::Nothing,
            Work::Bulk { .. } => {
                let at = head.received + limits.linger;
                if self.queued_items >= limits.max_actions
                    || self.queued_bytes >= limits.max_bytes
                    || at <= now
                {
                    Next::Bulk
                } else {
                    Next::BulkAt(at)
                }
            }
        }
    }

    /// Takes the records of one bulk request (see the module
    /// documentation), in offset order; empty when everything that could
    /// go is held back.
    pub(super) fn take_bulk(&mut self, limits: &BulkLimits) -> Vec<Queued> {
        let mut take: Vec<usize> = Vec::new();
        let mut held: HashSet<&str> = HashSet::new();
        let mut bytes = 0;
        let scan = limits.max_actions.saturating_mul(SCAN_FACTOR).max(1);
        for (k, q) in self.queue.iter().enumerate().take(scan) {
            if !q.ready() {
                break;
            }
            let Work::Bulk { target, size, .. } = &q.work else {
                break;
            };
            let id = target.id.as_str();
            if held.contains(id) || self.in_flight_ids.contains_key(&self.id_hash.hash_one(id)) {
                held.insert(id);
                continue;
            }
            if !take.is_empty()
                && (take.len() >= limits.max_actions || bytes + size > limits.max_bytes)
            {
                break;
            }
            bytes += size;
            take.push(k);
        }
        if take.is_empty() {
            self.stuck = !self.queue.is_empty();
            return Vec::new();
        }
        let mut out = Vec::with_capacity(take.len());
        let mut rest = VecDeque::with_capacity(self.queue.len() - take.len());
        let mut next = take.iter().peekable();
        for (k, q) in std::mem::take(&mut self.queue).into_iter().enumerate() {
            if next.peek() == Some(&&k) {
                next.next();
                out.push(q);
            } else {
                rest.push_back(q);
            }
        }
        self.queue = rest;
        for q in &out {
            if let Work::Bulk { target, size, .. } = &q.work {
                let key = self.id_hash.hash_one(target.id.as_str());
                *self.in_flight_ids.entry(key).or_insert(0) += 1;
                self.queued_items -= 1;
                self.queued_bytes = self.queued_bytes.saturating_sub(*size);
            }
        }
        self.bulks += 1;
        out
    }

    /// Takes the snapshot cleanup at the head (when [`Next::Cleanup`]).
    pub(super) fn take_cleanup(&mut self) -> Option<Queued> {
        if !matches!(self.queue.front(), Some(q) if matches!(q.work, Work::Cleanup { .. })) {
            return None;
        }
        self.cleaning = true;
        self.queue.pop_front()
    }

    /// A bulk request of this partition finished (its items' ids no
    /// longer in flight). The map gives back the capacity a burst left
    /// once it holds under a quarter of it (a `HashMap` keeps its largest
    /// capacity otherwise).
    pub(super) fn bulk_finished<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            let key = self.id_hash.hash_one(id);
            if let Some(n) = self.in_flight_ids.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight_ids.remove(&key);
                }
            }
        }
        let ids = &mut self.in_flight_ids;
        if let Some(c) = offsets::shrink_to(ids.capacity(), ids.len()) {
            ids.shrink_to(c);
        }
        self.bulks = self.bulks.saturating_sub(1);
        self.stuck = false;
    }

    /// The snapshot cleanup finished.
    pub(super) fn cleanup_finished(&mut self) {
        self.cleaning = false;
    }

    /// Drops the queue (records not taken are left undone: redelivered).
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.queued_items = 0;
        self.queued_bytes = 0;
        self.stuck = false;
    }

    /// Records received and not done, and their bytes.
    pub(super) fn outstanding(&self) -> (usize, usize) {
        (self.tracker.outstanding(), self.tracker.bytes())
    }

    /// Event time (seconds) of the oldest record not done.
    pub(super) fn oldest_event_secs(&self) -> Option<u64> {
        self.tracker.oldest_event_secs()
    }

    /// The next offset to commit (everything before it is done).
    pub(super) fn committable(&self) -> Option<i64> {
        self.tracker.committable()
    }

    /// Everything before this offset is done: the committable offset, or
    /// the position stored past transaction markers when idle.
    pub(super) fn done_upto(&self) -> Option<i64> {
        [
            self.tracker.committable(),
            self.stored,
            self.marks.map(|m| m.committed).filter(|c| *c > 0),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// Where to fetch again so that no record not done is skipped: the
    /// first record not done, else the committable offset.
    pub(super) fn restart_offset(&self) -> Option<i64> {
        self.tracker.first_pending().or(self.tracker.committable())
    }

    /// Requests and cleanups in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.bulks + usize::from(self.cleaning)
    }

    /// Items queued (waiting to be sent).
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Iterates the queue (for the clock holds).
    pub(super) fn queue_mut(&mut self) -> impl Iterator<Item = &mut Queued> {
        self.queue.iter_mut()
    }

    /// Lag in records a read_committed consumer can still read: the last
    /// stable offset minus what is done. A partition with nothing
    /// outstanding has done everything up to the consumer's position, which
    /// is past a final transaction marker (a marker is not a record: the
    /// lag of an idle partition is 0).
    pub(super) fn lag(&self) -> Option<i64> {
        let m = self.marks?;
        let done = if self.caught_up(&m) {
            self.done_upto().unwrap_or(0).max(m.position)
        } else {
            self.done_upto()?
        };
        Some((m.stable.min(m.high) - done).max(0))
    }

    /// Whether every record the consumer read is received and done.
    fn caught_up(&self, m: &Marks) -> bool {
        self.tracker.outstanding() == 0 && self.next_expected == m.handed
    }

    /// The offset to store for a partition that has done everything and
    /// whose position passed its last record (transaction markers only),
    /// so the group's committed lag reaches 0 too.
    pub(super) fn idle_store(&self) -> Option<i64> {
        let m = self.marks?;
        let stored = self.stored.or(self.committable()).unwrap_or(0);
        (self.caught_up(&m) && m.position > stored && m.position <= m.stable).then_some(m.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::bulk::resolve::{Body, Target};
    use crate::record::RawRecord;
    use std::sync::Arc;
    use std::time::Duration;

    fn limits() -> BulkLimits {
        BulkLimits {
            max_actions: 3,
            max_bytes: 1000,
            linger: Duration::from_millis(50),
        }
    }

    fn bulk(offset: i64, id: &str, at: Instant) -> Queued {
        Queued {
            offset,
            received: at,
            work: Work::Bulk {
                body: Body::Ready(vec![b'x'; 10]),
                target: Target {
                    index: "i".into(),
                    id: id.into(),
                    version: 1,
                    delete: false,
                },
                size: 10,
                hint: crate::rollup::Hint::Plain,
                commit_ms: None,
            },
            record: Arc::new(RawRecord::default()),
            clock: None,
        }
    }

    fn cleanup(offset: i64, at: Instant) -> Queued {
        Queued {
            offset,
            received: at,
            work: Work::Cleanup {
                action: Action::Skip,
            },
            record: Arc::new(RawRecord::default()),
            clock: None,
        }
    }

    fn queue(items: Vec<Queued>) -> PartitionQueue {
        let mut p = PartitionQueue::new(1);
        for q in items {
            assert!(p.receive(q.offset, 0, 10));
            p.enqueue(q);
        }
        p
    }

    fn ids(taken: &[Queued]) -> Vec<i64> {
        taken.iter().map(|q| q.offset).collect()
    }

    #[test]
    fn due_by_count_bytes_or_linger() {
        let t0 = Instant::now();
        let l = limits();
        let p = queue(vec![bulk(0, "a", t0), bulk(1, "b", t0)]);
        assert_eq!(p.next(&l, t0), Next::BulkAt(t0 + l.linger));
        assert_eq!(p.next(&l, t0 + l.linger), Next::Bulk);
        let p = queue(vec![bulk(0, "a", t0), bulk(1, "b", t0), bulk(2, "c", t0)]);
        assert_eq!(p.next(&l, t0), Next::Bulk, "count reached");
        assert_eq!(queue(vec![]).next(&l, t0), Next::Nothing);
    }

    #[test]
    fn several_requests_of_one_partition_but_never_two_of_one_document() {
        let t0 = Instant::now();
        let l = limits();
        let mut p = queue(vec![
            bulk(0, "a", t0),
            bulk(1, "b", t0),
            bulk(2, "c", t0),
            bulk(3, "a", t0),
            bulk(4, "d", t0),
            bulk(5, "b", t0),
            bulk(6, "e", t0),
        ]);
        let first = p.take_bulk(&l);
        assert_eq!(ids(&first), [0, 1, 2]);
        // a and b are in flight: their later changes wait, d and e go.
        let second = p.take_bulk(&l);
        assert_eq!(ids(&second), [4, 6]);
        assert_eq!(p.in_flight(), 2);
        // Everything left is held back.
        assert!(p.take_bulk(&l).is_empty());
        assert_eq!(
            p.next(&l, t0 + l.linger),
            Next::Nothing,
            "stuck until a request ends"
        );
        p.bulk_finished(["a", "b", "c"]);
        assert_eq!(ids(&p.take_bulk(&l)), [3, 5]);
    }

    #[test]
    fn documents_in_flight_give_their_capacity_back_when_done() {
        let t0 = Instant::now();
        let l = BulkLimits {
            max_actions: 5000,
            max_bytes: usize::MAX,
            linger: Duration::ZERO,
        };
        let names: Vec<String> = (0..5000).map(|i| format!("d{i}")).collect();
        let mut p = queue(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| bulk(i as i64, n, t0))
                .collect(),
        );
        assert_eq!(p.take_bulk(&l).len(), 5000);
        assert!(p.in_flight_ids.capacity() >= 5000);
        p.bulk_finished(names.iter().map(String::as_str));
        assert!(p.in_flight_ids.is_empty());
        assert!(
            p.in_flight_ids.capacity() <= 2 * offsets::KEEP_CAPACITY,
            "capacity {} kept with nothing in flight",
            p.in_flight_ids.capacity()
        );
    }

    #[test]
    fn a_cleanup_waits_for_everything_before_it_and_blocks_what_follows() {
        let t0 = Instant::now();
        let l = limits();
        let mut p = queue(vec![bulk(0, "a", t0), cleanup(1, t0), bulk(2, "b", t0)]);
        assert_eq!(ids(&p.take_bulk(&l)), [0], "stops at the cleanup");
        assert_eq!(
            p.next(&l, t0 + l.linger),
            Next::Nothing,
            "the bulk before it is in flight"
        );
        p.bulk_finished(["a"]);
        assert_eq!(p.next(&l, t0), Next::Cleanup);
        assert_eq!(p.take_cleanup().map(|q| q.offset), Some(1));
        assert_eq!(
            p.next(&l, t0 + l.linger),
            Next::Nothing,
            "nothing while it runs"
        );
        p.cleanup_finished();
        assert_eq!(p.next(&l, t0 + l.linger), Next::Bulk);
    }

    #[test]
    fn a_record_held_for_the_clocks_blocks_the_partition() {
        let t0 = Instant::now();
        let l = limits();
        let mut held = bulk(1, "b", t0);
        held.clock = Some(99);
        let mut p = queue(vec![bulk(0, "a", t0), held, bulk(2, "c", t0)]);
        assert_eq!(ids(&p.take_bulk(&l)), [0]);
        p.bulk_finished(["a"]);
        assert_eq!(p.next(&l, t0 + l.linger), Next::Nothing);
        for q in p.queue_mut() {
            q.clock = None;
        }
        assert_eq!(ids(&p.take_bulk(&l)), [1, 2]);
    }

    #[test]
    fn offsets_commit_the_done_prefix_and_idle_lag_is_zero() {
        let t0 = Instant::now();
        let mut p = queue(vec![bulk(10, "a", t0), bulk(11, "b", t0)]);
        assert_eq!(p.done(11), None);
        assert_eq!(p.done(10), Some(12));
        p.stored = Some(12);
        // A transaction marker at 12: the position is 13, as is the last
        // stable offset.
        p.marks = Some(Marks {
            high: 13,
            stable: 13,
            position: 13,
            handed: 12,
            committed: 0,
        });
        assert_eq!(p.lag(), Some(0));
        assert_eq!(p.idle_store(), Some(13));
        p.stored = Some(13);
        assert_eq!(p.done_upto(), Some(13), "done up to past the marker");
        p.stored = Some(12);
        // A record handed over but not received yet: not caught up.
        p.marks = Some(Marks {
            high: 14,
            stable: 14,
            position: 14,
            handed: 14,
            committed: 0,
        });
        assert_eq!(p.lag(), Some(2));
        assert_eq!(p.idle_store(), None, "never past a record in transit");
        // Records still to read: lag counts them.
        p.marks = Some(Marks {
            high: 20,
            stable: 20,
            position: 13,
            handed: 12,
            committed: 0,
        });
        assert_eq!(p.lag(), Some(7));
        // An open transaction: only what is stable counts.
        p.marks = Some(Marks {
            high: 20,
            stable: 15,
            position: 13,
            handed: 12,
            committed: 0,
        });
        assert_eq!(p.lag(), Some(2));
        assert_eq!(p.restart_offset(), Some(12));
    }

    #[test]
    fn a_partition_that_received_nothing_is_done_up_to_its_committed_offset() {
        let mut p = PartitionQueue::new(1);
        assert_eq!(p.done_upto(), None);
        // A reindex group starting at the running group's offset 6.
        p.marks = Some(Marks {
            high: 6,
            stable: 6,
            position: 6,
            handed: 0,
            committed: 6,
        });
        assert_eq!(p.done_upto(), Some(6));
        assert_eq!(p.lag(), Some(0));
    }
}
