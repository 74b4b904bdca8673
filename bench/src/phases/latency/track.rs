//! Book-keeping of the changes a latency run issued and has not yet seen
//! searchable, and of the latencies of those it has.
//!
//! Inserts and updates are tracked by group: every `insert_many` and every
//! `update_many` of a tick gives its cards one `likes` value of its own (a
//! tag), so one small aggregation (`terms` on `likes`, size 0) counts how
//! many of each group are searchable; when the count of a group grows by
//! `k`, `k` changes became searchable at that poll. Deletes are tracked by
//! id (an `ids` query, no `_source`). A card becomes free for a later
//! update or delete when its whole group is searchable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// First tag value: far above the workload's own `likes` (0..500).
pub const TAG_BASE: i64 = 1_000_000;

/// The kind of a tracked change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `insert_many`.
    Insert,
    /// `update_many` setting `likes`.
    Update,
    /// `delete_many`.
    Delete,
}

impl Kind {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    /// The kind of the `n`-th change of a run: 6 in 10 inserts, 3 updates,
    /// 1 delete.
    pub fn of(n: u64) -> Self {
        match n % 10 {
            0..=5 => Self::Insert,
            6..=8 => Self::Update,
            _ => Self::Delete,
        }
    }
}

/// The tag of a tick's inserts or updates.
pub fn tag(tick: i64, kind: Kind) -> i64 {
    TAG_BASE + 3 * tick + i64::from(kind == Kind::Update)
}

struct Group {
    at: Instant,
    kind: Kind,
    expected: u64,
    seen: u64,
    ids: Vec<String>,
}

/// What a poll asks: the pending tags and deletes when it was sent.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Tags of groups not yet fully searchable.
    pub tags: Vec<i64>,
    /// Ids deleted and still searchable at the last look.
    pub deletes: Vec<String>,
}

/// Pending changes and measured latencies.
#[derive(Default)]
pub struct Track {
    /// By tag: tags grow with the tick, so the first are the oldest.
    groups: BTreeMap<i64, Group>,
    /// Pending deletes in the order they were made (the first are the
    /// oldest), with the id and when: a poll takes the first without
    /// sorting.
    deletes: BTreeMap<u64, (String, Instant)>,
    /// Each pending delete's key in `deletes`.
    delete_order: HashMap<String, u64>,
    deleted: u64,
    latencies: Vec<(Kind, f64)>,
    settled: Vec<String>,
}

/// Most delete ids one poll asks about (the oldest pending).
pub const MAX_DELETES_PER_POLL: usize = 1000;

/// Most tags one poll asks about: the oldest pending. Ticks are 100 a
/// second with two tags each whatever the rate, so this covers the changes
/// of the last 3 s; a group further behind waits for the older ones to
/// settle, so a latency is never under-counted, and over-counted only
/// while more than 3 s of changes are pending. Without the bound a poll
/// grew with the backlog, and its searches took the node's core from the
/// indexing they measure (at 1,000/s: polls of 0.5-3.5 s, thousands of
/// tags, runs of 15-30 s latency).
pub const MAX_TAGS_PER_POLL: usize = 600;

impl Track {
    /// Inserted or updated `ids` acknowledged at `at`, tagged `tag`.
    pub fn add_group(&mut self, tag: i64, at: Instant, kind: Kind, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        self.groups.insert(
            tag,
            Group {
                at,
                kind,
                expected: ids.len() as u64,
                seen: 0,
                ids,
            },
        );
    }

    /// Deleted `ids` acknowledged at `at`.
    pub fn add_deletes(&mut self, ids: Vec<String>, at: Instant) {
        for id in ids {
            self.deleted += 1;
            if let Some(old) = self.delete_order.insert(id.clone(), self.deleted) {
                self.deletes.remove(&old);
            }
            self.deletes.insert(self.deleted, (id, at));
        }
    }

    /// Changes not yet seen searchable.
    pub fn pending(&self) -> u64 {
        self.groups
            .values()
            .map(|g| g.expected - g.seen)
            .sum::<u64>()
            + self.deletes.len() as u64
    }

    /// What the next poll asks about.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            tags: self
                .groups
                .keys()
                .take(MAX_TAGS_PER_POLL)
                .copied()
                .collect(),
            deletes: self
                .deletes
                .values()
                .take(MAX_DELETES_PER_POLL)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    /// A poll sent at `sent` for `asked` answered: `counts` of searchable
    /// cards per tag, `present` of the asked deletes still searchable.
    pub fn observe(
        &mut self,
        sent: Instant,
        asked: &Snapshot,
        counts: &HashMap<i64, u64>,
        present: &HashSet<String>,
    ) {
        for t in &asked.tags {
            let Some(g) = self.groups.get_mut(t) else {
                continue;
            };
            let now = counts.get(t).copied().unwrap_or(0).min(g.expected);
            if now > g.seen {
                let ms = sent.saturating_duration_since(g.at).as_secs_f64() * 1000.0;
                for _ in g.seen..now {
                    self.latencies.push((g.kind, ms));
                }
                g.seen = now;
            }
            if g.seen >= g.expected {
                if let Some(g) = self.groups.remove(t) {
                    self.settled.extend(g.ids);
                }
            }
        }
        for id in &asked.deletes {
            if present.contains(id) {
                continue;
            }
            let removed = self.delete_order.remove(id);
            if let Some((_, at)) = removed.and_then(|n| self.deletes.remove(&n)) {
                let ms = sent.saturating_duration_since(at).as_secs_f64() * 1000.0;
                self.latencies.push((Kind::Delete, ms));
            }
        }
    }

    /// Takes a searchable card for an update or delete (pseudo-random by
    /// `n`), `None` when none is free.
    pub fn take_settled(&mut self, n: u64) -> Option<String> {
        if self.settled.is_empty() {
            return None;
        }
        let i = (n.wrapping_mul(2_654_435_761) % self.settled.len() as u64) as usize;
        Some(self.settled.swap_remove(i))
    }

    /// Whether a card is free for an update or delete.
    #[cfg(test)]
    pub fn has_settled(&self) -> bool {
        !self.settled.is_empty()
    }

    /// The latencies measured so far, ms.
    #[cfg(test)]
    pub fn latencies(&self) -> &[(Kind, f64)] {
        &self.latencies
    }

    /// Takes the latencies measured so far (a new run starts empty).
    pub fn take_latencies(&mut self) -> Vec<(Kind, f64)> {
        std::mem::take(&mut self.latencies)
    }

    /// Forgets what is still pending (after the run's wait for stragglers).
    pub fn clear_pending(&mut self) {
        self.groups.clear();
        self.deletes.clear();
        self.delete_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(p: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{p}{i}")).collect()
    }

    #[test]
    fn the_mix_is_six_three_one_and_tags_are_unique_per_tick_and_kind() {
        let kinds: Vec<Kind> = (0..1000).map(Kind::of).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Insert).count(), 600);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Update).count(), 300);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Delete).count(), 100);
        let mut seen = HashSet::new();
        for t in 0..100 {
            assert!(seen.insert(tag(t, Kind::Insert)));
            assert!(seen.insert(tag(t, Kind::Update)));
        }
        assert!(seen
            .iter()
            .all(|t| *t >= TAG_BASE && *t < i64::from(i32::MAX)));
    }

    #[test]
    fn a_group_is_timed_as_its_members_become_searchable() {
        let t0 = Instant::now();
        let mut tr = Track::default();
        tr.add_group(7, t0, Kind::Insert, ids("a", 3));
        assert_eq!(tr.pending(), 3);
        let snap = tr.snapshot();
        assert_eq!(snap.tags, vec![7]);
        // Two of three visible at +100 ms, all at +300 ms.
        tr.observe(
            t0 + Duration::from_millis(100),
            &snap,
            &HashMap::from([(7, 2)]),
            &HashSet::new(),
        );
        assert_eq!(tr.pending(), 1);
        assert!(
            !tr.has_settled(),
            "a card is free only when its group is complete"
        );
        tr.observe(
            t0 + Duration::from_millis(300),
            &snap,
            &HashMap::from([(7, 3)]),
            &HashSet::new(),
        );
        assert_eq!(tr.pending(), 0);
        let ms: Vec<f64> = tr.latencies().iter().map(|l| l.1.round()).collect();
        assert_eq!(ms, vec![100.0, 100.0, 300.0]);
        assert!(tr.has_settled());
        assert!(tr.take_settled(5).is_some_and(|id| id.starts_with('a')));
    }

    #[test]
    fn an_older_answer_never_undoes_a_newer_one_and_new_groups_wait_for_their_poll() {
        let t0 = Instant::now();
        let mut tr = Track::default();
        tr.add_group(1, t0, Kind::Update, ids("u", 2));
        let snap = tr.snapshot();
        tr.add_group(2, t0, Kind::Insert, ids("i", 1));
        tr.observe(
            t0 + Duration::from_millis(50),
            &snap,
            &HashMap::from([(1, 2), (2, 1)]),
            &HashSet::new(),
        );
        assert_eq!(tr.pending(), 1, "group 2 was not asked by that poll");
        tr.observe(
            t0 + Duration::from_millis(20),
            &snap,
            &HashMap::from([(1, 1)]),
            &HashSet::new(),
        );
        assert_eq!(tr.latencies().len(), 2);
        assert!(tr.latencies().iter().all(|l| l.0 == Kind::Update));
    }

    #[test]
    fn deletes_count_when_gone() {
        let t0 = Instant::now();
        let mut tr = Track::default();
        tr.add_deletes(ids("d", 2), t0);
        let snap = tr.snapshot();
        assert_eq!(snap.deletes.len(), 2);
        tr.observe(
            t0 + Duration::from_millis(80),
            &snap,
            &HashMap::new(),
            &HashSet::from(["d1".to_string()]),
        );
        assert_eq!(tr.pending(), 1);
        let l = tr.latencies();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].0, l[0].1.round()), (Kind::Delete, 80.0));
        tr.clear_pending();
        assert_eq!(tr.pending(), 0);
    }

    #[test]
    fn a_poll_asks_about_the_oldest_pending_changes_only() {
        let t0 = Instant::now();
        let mut tr = Track::default();
        let n = MAX_TAGS_PER_POLL as i64 + 10;
        // Added newest first: the order of the tags decides, not of adding.
        for tag in (0..n).rev() {
            tr.add_group(tag, t0, Kind::Insert, vec![format!("i{tag}")]);
        }
        let snap = tr.snapshot();
        assert_eq!(snap.tags.len(), MAX_TAGS_PER_POLL);
        assert_eq!(snap.tags.first(), Some(&0));
        assert_eq!(snap.tags.last(), Some(&(MAX_TAGS_PER_POLL as i64 - 1)));
        for k in 0..MAX_DELETES_PER_POLL + 5 {
            tr.add_deletes(vec![format!("z{:05}", MAX_DELETES_PER_POLL + 5 - k)], t0);
        }
        let snap = tr.snapshot();
        assert_eq!(snap.deletes.len(), MAX_DELETES_PER_POLL);
        // The first deleted (the highest number here) is asked about first.
        assert_eq!(snap.deletes[0], format!("z{:05}", MAX_DELETES_PER_POLL + 5));
        assert!(!snap.deletes.contains(&"z00001".to_string()));
        // Once the oldest settle, the newer come into the window.
        let counts: HashMap<i64, u64> = snap.tags.iter().map(|t| (*t, 1)).collect();
        tr.observe(t0, &snap, &counts, &HashSet::new());
        assert_eq!(
            tr.snapshot().tags,
            (MAX_TAGS_PER_POLL as i64..n).collect::<Vec<_>>()
        );
    }
}
