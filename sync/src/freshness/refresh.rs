//! What the index's refresh statistics say about searchability, per shard
//! copy.
//!
//! One `GET /{alias}/_stats/refresh,indexing?level=shards` gives, for
//! every started copy of every shard: its count of *external* refreshes
//! (the ones that open a new reader for searches; `refresh.total` also
//! counts the internal refreshes a realtime get or `_mget` makes, which
//! show nothing to searches) and its count of operations (`index_total +
//! delete_total`, counted once an operation is in the shard's writer).
//!
//! [`Copies`] turns successive snapshots into, per copy, a number of
//! operations certainly visible to searches (`visible_ops`):
//! - when a copy's refresh count moved between two snapshots, every
//!   operation counted in the earlier one is visible (that refresh came
//!   after them);
//! - Elasticsearch refreshes a copy only when it has unrefreshed
//!   operations (an idle copy's count does not move), normally one
//!   `index.refresh_interval` after the previous one. So a copy whose
//!   counts have not changed for longer than that (plus a poll interval
//!   and [`QUIET_SLACK_MS`]) is taken to have nothing unrefreshed:
//!   everything counted is visible. Without this a shard that received
//!   none of our documents would hold them back forever. With
//!   `refresh_interval: -1` nothing is inferred.
//! - Except for a copy known to be **behind**: its operations grew between
//!   two snapshots while its refresh count did not, so it certainly holds
//!   unrefreshed operations, and Elasticsearch will refresh it, however
//!   late a loaded node is. Such a copy waits for its refresh count to move;
//!   the quiet rule applies to it only after [`BEHIND_QUIET_FACTOR`] times
//!   as long (a refresh that completed between Elasticsearch's reads of
//!   the two counters of one snapshot, microseconds apart, could otherwise
//!   leave it waiting for ever).
//! - a copy whose counts went down (restarted, moved: statistics start
//!   again) is a new copy (a new generation); a copy that disappeared
//!   holds nothing we wait for.
//!
//! A document acknowledged before a snapshot `S` was read is counted in
//! the operations of its copies in `S`; it is searchable on every copy
//! once each copy's `visible_ops` reaches its count in `S`
//! ([`Copies::covers`]).
//!
//! Works the same on Elasticsearch 7.10+, 8.x and OpenSearch (same
//! response shape; `external_total` exists since Elasticsearch 7.7, older
//! nodes fall back to `total`).

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Added to the refresh interval before an unchanged copy counts as having
/// nothing unrefreshed: the time a refresh itself may take and the
/// scheduler's jitter.
pub(crate) const QUIET_SLACK_MS: i64 = 250;

/// How many quiet times a copy known to be behind waits before the quiet
/// rule applies to it anyway (module documentation): long enough that a
/// late refresh of a loaded node is waited for, short enough that the
/// rare copy wrongly taken for behind is measured late rather than never.
pub(crate) const BEHIND_QUIET_FACTOR: i64 = 10;

/// The request path of the statistics of `target` (an alias or index).
pub(crate) fn stats_path(target: &str) -> String {
    const FIELDS: [&str; 7] = [
        "routing.state",
        "routing.node",
        "routing.primary",
        "refresh.total",
        "refresh.external_total",
        "indexing.index_total",
        "indexing.delete_total",
    ];
    let filter: Vec<String> = FIELDS
        .iter()
        .map(|f| format!("indices.*.shards.*.{f}"))
        .collect();
    format!(
        "/{target}/_stats/refresh,indexing?level=shards&filter_path=_shards.failed,{}",
        filter.join(",")
    )
}

/// The request path of the refresh interval of `target`'s indices.
pub(crate) fn settings_path(target: &str) -> String {
    format!("/{target}/_settings/index.refresh_interval?include_defaults=true&flat_settings=true")
}

/// One shard copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CopyKey {
    /// Concrete index.
    pub(crate) index: String,
    /// Shard number.
    pub(crate) shard: u32,
    /// Node id holding the copy.
    pub(crate) node: String,
    /// Whether it is the primary.
    pub(crate) primary: bool,
}

/// The counters of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyStat {
    /// External refreshes.
    pub(crate) refreshes: u64,
    /// Index and delete operations.
    pub(crate) ops: u64,
}

/// The counters of every started copy of an alias's indices.
pub(crate) type Snapshot = BTreeMap<CopyKey, CopyStat>;

/// A snapshot of one copy (`cards-000001[0]` on node `n`), for tests.
#[cfg(test)]
pub(crate) fn one_copy(refreshes: u64, ops: u64) -> Snapshot {
    let key = CopyKey {
        index: "cards-000001".into(),
        shard: 0,
        node: "n".into(),
        primary: true,
    };
    [(key, CopyStat { refreshes, ops })].into_iter().collect()
}

/// Reads a statistics answer (see [`stats_path`]).
pub(crate) fn parse_stats(v: &Value) -> Result<Snapshot, String> {
    let failed = v["_shards"]["failed"].as_u64().unwrap_or(0);
    if failed > 0 {
        return Err(format!(
            "{failed} shard copies did not answer the statistics request"
        ));
    }
    let indices = v
        .get("indices")
        .and_then(Value::as_object)
        .ok_or("the statistics answer has no `indices`")?;
    let mut snap = Snapshot::new();
    for (index, iv) in indices {
        let shards = iv["shards"]
            .as_object()
            .ok_or_else(|| format!("no shard statistics for index {index}"))?;
        for (num, copies) in shards {
            let shard: u32 = num
                .parse()
                .map_err(|_| format!("shard `{num}` of {index} is not a number"))?;
            for c in copies.as_array().into_iter().flatten() {
                let r = &c["routing"];
                if r["state"].as_str() != Some("STARTED") {
                    continue;
                }
                let refresh = &c["refresh"];
                let refreshes = refresh["external_total"]
                    .as_u64()
                    .or_else(|| refresh["total"].as_u64())
                    .ok_or_else(|| format!("no refresh count for {index}[{shard}]"))?;
                let count = |f: &str| c["indexing"][f].as_u64();
                let ops = count("index_total")
                    .zip(count("delete_total"))
                    .map(|(i, d)| i + d)
                    .ok_or_else(|| format!("no indexing counts for {index}[{shard}]"))?;
                let key = CopyKey {
                    index: index.clone(),
                    shard,
                    node: r["node"].as_str().unwrap_or_default().to_string(),
                    primary: r["primary"].as_bool().unwrap_or(false),
                };
                snap.insert(key, CopyStat { refreshes, ops });
            }
        }
    }
    if snap.is_empty() {
        return Err("no started shard copy in the statistics answer".into());
    }
    Ok(snap)
}

/// How often an index refreshes: `Some(ms)`, or `None` when refreshes are
/// off (`-1`).
pub(crate) type Interval = Option<i64>;

/// Reads a settings answer (see [`settings_path`]): per concrete index its
/// refresh interval, set or default.
pub(crate) fn parse_intervals(v: &Value) -> Result<HashMap<String, Interval>, String> {
    let indices = v
        .as_object()
        .ok_or("the settings answer is not an object")?;
    let mut out = HashMap::new();
    for (index, iv) in indices {
        let key = "index.refresh_interval";
        let text = iv["settings"][key]
            .as_str()
            .or_else(|| iv["defaults"][key].as_str())
            .unwrap_or("1s");
        let interval = parse_time(text)
            .ok_or_else(|| format!("refresh interval `{text}` of {index} is not a time"))?;
        out.insert(index.clone(), interval);
    }
    Ok(out)
}

/// An Elasticsearch time value (`500ms`, `1s`, `2m`, `-1`) in ms.
fn parse_time(text: &str) -> Option<Interval> {
    let t = text.trim();
    if t == "-1" {
        return Some(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms = match unit {
        "nanos" => n / 1e6,
        "micros" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        "d" => n * 86_400e3,
        _ => return None,
    };
    (ms >= 0.0).then_some(Some(ms as i64))
}

/// What is known of one copy.
#[derive(Debug, Clone)]
struct Track {
    last: CopyStat,
    /// Operations certainly visible to searches.
    visible_ops: Option<u64>,
    /// Since when (ms) `last` has not changed.
    quiet_since: i64,
    /// Operations grew since the last refresh seen: the copy certainly
    /// holds unrefreshed operations (module documentation).
    behind: bool,
    /// Generation: a new one when the copy appears or its counters reset.
    gen: u64,
}

/// Per copy, the operations visible to searches (module documentation).
#[derive(Debug, Default)]
pub(crate) struct Copies {
    tracks: HashMap<CopyKey, Track>,
    next_gen: u64,
}

/// What a bucket of acknowledged documents waits for: per copy, its
/// operations count (and generation) when they were all acknowledged.
pub(crate) type Baseline = Vec<(CopyKey, u64, u64)>;

impl Copies {
    /// Takes in a snapshot read at `now` (ms). `quiet` gives, per concrete
    /// index, after how long an unchanged copy has nothing unrefreshed
    /// (`None`: never inferred).
    pub(crate) fn observe(
        &mut self,
        snap: &Snapshot,
        now: i64,
        quiet: impl Fn(&str) -> Option<i64>,
    ) {
        self.tracks.retain(|k, _| snap.contains_key(k));
        for (key, stat) in snap {
            let fresh = |gen| Track {
                last: *stat,
                visible_ops: None,
                quiet_since: now,
                behind: false,
                gen,
            };
            match self.tracks.get_mut(key) {
                Some(t) if stat.refreshes >= t.last.refreshes && stat.ops >= t.last.ops => {
                    if stat.refreshes != t.last.refreshes {
                        t.visible_ops = t.visible_ops.max(Some(t.last.ops));
                        // Operations that came with the refresh may or may
                        // not be in it: not certainly behind.
                        t.behind = false;
                    } else if stat.ops != t.last.ops {
                        t.behind = true;
                    }
                    let factor = if t.behind { BEHIND_QUIET_FACTOR } else { 1 };
                    if *stat != t.last {
                        t.quiet_since = now;
                    } else if quiet(&key.index).is_some_and(|q| now - t.quiet_since >= q * factor) {
                        t.visible_ops = t.visible_ops.max(Some(stat.ops));
                    }
                    t.last = *stat;
                }
                _ => {
                    self.next_gen += 1;
                    self.tracks.insert(key.clone(), fresh(self.next_gen));
                }
            }
        }
    }

    /// The current operations of every copy (for documents acknowledged
    /// before the last snapshot).
    pub(crate) fn baseline(&self) -> Baseline {
        let mut b: Baseline = self
            .tracks
            .iter()
            .map(|(k, t)| (k.clone(), t.last.ops, t.gen))
            .collect();
        b.sort();
        b
    }

    /// Whether every operation of `baseline` is visible on every copy.
    pub(crate) fn covers(&self, baseline: &Baseline) -> bool {
        baseline
            .iter()
            .all(|(key, ops, gen)| match self.tracks.get(key) {
                None => true,
                Some(t) => t.gen != *gen || t.visible_ops.is_some_and(|v| v >= *ops),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Recorded from Elasticsearch 7.10.2 (`scripts/stack`): an index of
    /// two shards, one document written to shard 0 and refreshed.
    fn es_7_10_answer() -> Value {
        json!({"_shards": {"failed": 0}, "indices": {"frx": {"shards": {
            "0": [{"routing": {"state": "STARTED", "primary": true, "node": "n1_DsS-OQcu7CMZa50ivbA"},
                   "indexing": {"index_total": 1, "delete_total": 0},
                   "refresh": {"total": 3, "external_total": 3}}],
            "1": [{"routing": {"state": "STARTED", "primary": true, "node": "n1_DsS-OQcu7CMZa50ivbA"},
                   "indexing": {"index_total": 0, "delete_total": 0},
                   "refresh": {"total": 2, "external_total": 2}}]}}}})
    }

    fn key(shard: u32) -> CopyKey {
        CopyKey {
            index: "frx".into(),
            shard,
            node: "n1_DsS-OQcu7CMZa50ivbA".into(),
            primary: true,
        }
    }

    fn snap(copies: &[(u32, u64, u64)]) -> Snapshot {
        copies
            .iter()
            .map(|&(s, refreshes, ops)| (key(s), CopyStat { refreshes, ops }))
            .collect()
    }

    #[test]
    fn statistics_answers_are_read_per_copy() {
        let s = parse_stats(&es_7_10_answer()).unwrap();
        assert_eq!(s, snap(&[(0, 3, 1), (1, 2, 0)]));
        // Internal refreshes (a realtime _mget) are not counted.
        let mut v = es_7_10_answer();
        v["indices"]["frx"]["shards"]["0"][0]["refresh"]["total"] = json!(9);
        assert_eq!(parse_stats(&v).unwrap()[&key(0)].refreshes, 3);
        // Before 7.7 there is only `total`.
        v["indices"]["frx"]["shards"]["0"][0]["refresh"] = json!({"total": 4});
        assert_eq!(parse_stats(&v).unwrap()[&key(0)].refreshes, 4);
        // Copies not started are left out.
        v["indices"]["frx"]["shards"]["1"][0]["routing"]["state"] = json!("INITIALIZING");
        assert_eq!(parse_stats(&v).unwrap().len(), 1);
    }

    #[test]
    fn opensearch_answers_read_alike() {
        // Recorded from OpenSearch 2.19.1 (`ES_FLAVOR=opensearch`), same
        // request, same two-shard index.
        let v = json!({"_shards": {"failed": 0}, "indices": {"frx": {"shards": {
            "0": [{"routing": {"state": "STARTED", "primary": true, "node": "fUCpR3f3Q8qjSzCDre--Rg"},
                   "indexing": {"index_total": 1, "delete_total": 0},
                   "refresh": {"total": 3, "external_total": 3}}],
            "1": [{"routing": {"state": "STARTED", "primary": true, "node": "fUCpR3f3Q8qjSzCDre--Rg"},
                   "indexing": {"index_total": 0, "delete_total": 0},
                   "refresh": {"total": 2, "external_total": 2}}]}}}});
        let s = parse_stats(&v).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.values().eq([
            &CopyStat {
                refreshes: 3,
                ops: 1
            },
            &CopyStat {
                refreshes: 2,
                ops: 0
            }
        ]));
        let i = parse_intervals(
            &json!({"frx": {"settings": {}, "defaults": {"index.refresh_interval": "1s"}}}),
        )
        .unwrap();
        assert_eq!(i["frx"], Some(1000));
    }

    #[test]
    fn bad_statistics_answers_are_errors_naming_what_is_wrong() {
        let mut v = es_7_10_answer();
        v["_shards"]["failed"] = json!(1);
        assert!(parse_stats(&v).unwrap_err().contains("did not answer"));
        assert!(parse_stats(&json!({"error": "x"}))
            .unwrap_err()
            .contains("no `indices`"));
        assert!(parse_stats(&json!({"indices": {}}))
            .unwrap_err()
            .contains("no started shard copy"));
        let mut v = es_7_10_answer();
        v["indices"]["frx"]["shards"]["0"][0]["indexing"] = json!({});
        assert!(parse_stats(&v)
            .unwrap_err()
            .contains("no indexing counts for frx[0]"));
    }

    #[test]
    fn refresh_intervals_are_read_set_or_default() {
        // Shapes of Elasticsearch 7.10.2 and OpenSearch 2.19.1.
        let v = json!({
            "cards-000001": {"settings": {"index.refresh_interval": "1s"}},
            "other": {"settings": {}, "defaults": {"index.refresh_interval": "1s"}},
            "loading": {"settings": {"index.refresh_interval": "-1"}},
            "slow": {"settings": {"index.refresh_interval": "500ms"}},
            "minutes": {"settings": {"index.refresh_interval": "2m"}}
        });
        let i = parse_intervals(&v).unwrap();
        assert_eq!(i["cards-000001"], Some(1000));
        assert_eq!(i["other"], Some(1000));
        assert_eq!(i["loading"], None);
        assert_eq!(i["slow"], Some(500));
        assert_eq!(i["minutes"], Some(120_000));
        let bad = json!({"x": {"settings": {"index.refresh_interval": "soon"}}});
        assert!(parse_intervals(&bad).unwrap_err().contains("`soon`"));
    }

    #[test]
    fn a_refresh_after_the_snapshot_covers_its_operations() {
        let never = |_: &str| None;
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 1)]), 0, never);
        // Two documents written: ops 3, acknowledged, then this snapshot.
        c.observe(&snap(&[(0, 3, 3)]), 100, never);
        let b = c.baseline();
        assert!(!c.covers(&b));
        // An internal or no refresh: nothing new.
        c.observe(&snap(&[(0, 3, 3)]), 200, never);
        assert!(!c.covers(&b));
        // The refresh count moved: what the previous snapshot counted is
        // visible.
        c.observe(&snap(&[(0, 4, 4)]), 300, never);
        assert!(c.covers(&b));
        // ... but not the operation that came with the refresh.
        assert!(!c.covers(&c.baseline()));
    }

    #[test]
    fn a_refresh_between_the_previous_snapshot_and_this_one_covers_older_operations() {
        let never = |_: &str| None;
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 5)]), 0, never);
        // The document was counted before the previous snapshot and
        // acknowledged after it; a refresh came in between.
        c.observe(&snap(&[(0, 4, 5)]), 100, never);
        assert!(c.covers(&c.baseline()));
    }

    #[test]
    fn an_unchanged_copy_has_nothing_unrefreshed_after_the_interval() {
        let quiet = |_: &str| Some(1000 + 100 + QUIET_SLACK_MS);
        let mut c = Copies::default();
        // Shard 1 never receives a document, so never refreshes.
        c.observe(&snap(&[(0, 3, 1), (1, 2, 0)]), 0, quiet);
        c.observe(&snap(&[(0, 3, 2), (1, 2, 0)]), 100, quiet);
        let b = c.baseline();
        c.observe(&snap(&[(0, 4, 2), (1, 2, 0)]), 900, quiet);
        assert!(!c.covers(&b), "shard 1 is not yet known to be clean");
        c.observe(&snap(&[(0, 4, 2), (1, 2, 0)]), 1400, quiet);
        assert!(c.covers(&b), "quiet for 1400 ms > 1350 ms");
        // With refreshes off nothing is inferred.
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 2)]), 0, |_: &str| None);
        let b = c.baseline();
        c.observe(&snap(&[(0, 3, 2)]), 60_000, |_: &str| None);
        assert!(!c.covers(&b));
    }

    #[test]
    fn a_copy_behind_waits_for_its_refresh_however_late() {
        let q = 1000 + 100 + QUIET_SLACK_MS;
        let quiet = |_: &str| Some(q);
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 1)]), 0, quiet);
        // A document indexed, no refresh yet: the copy is behind.
        c.observe(&snap(&[(0, 3, 2)]), 100, quiet);
        let b = c.baseline();
        // A loaded node refreshes late: quiet for longer than the
        // interval is no proof while the copy is known to be behind.
        c.observe(&snap(&[(0, 3, 2)]), 100 + q + 500, quiet);
        assert!(!c.covers(&b), "no refresh seen since the operation");
        c.observe(&snap(&[(0, 4, 2)]), 100 + q + 600, quiet);
        assert!(c.covers(&b), "the late refresh came");
        // A copy wrongly taken for behind is not waited for for ever.
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 1)]), 0, quiet);
        c.observe(&snap(&[(0, 3, 2)]), 100, quiet);
        let b = c.baseline();
        c.observe(
            &snap(&[(0, 3, 2)]),
            100 + q * BEHIND_QUIET_FACTOR - 1,
            quiet,
        );
        assert!(!c.covers(&b));
        c.observe(&snap(&[(0, 3, 2)]), 100 + q * BEHIND_QUIET_FACTOR, quiet);
        assert!(c.covers(&b));
        // Operations that came with a refresh may be in it: the quiet rule
        // applies after the normal time.
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 1)]), 0, quiet);
        c.observe(&snap(&[(0, 4, 2)]), 100, quiet);
        let b = c.baseline();
        assert!(!c.covers(&b));
        c.observe(&snap(&[(0, 4, 2)]), 100 + q, quiet);
        assert!(c.covers(&b));
    }

    #[test]
    fn reset_or_vanished_copies_hold_nothing_back() {
        let never = |_: &str| None;
        let mut c = Copies::default();
        c.observe(&snap(&[(0, 3, 9), (1, 3, 4)]), 0, never);
        let b = c.baseline();
        // Shard 0 restarted (counters from zero), shard 1 moved away.
        c.observe(&snap(&[(0, 1, 0)]), 100, never);
        assert!(c.covers(&b));
        // The restarted copy is tracked again from its new counters.
        c.observe(&snap(&[(0, 1, 2)]), 200, never);
        let b = c.baseline();
        assert!(!c.covers(&b));
        c.observe(&snap(&[(0, 2, 2)]), 300, never);
        assert!(c.covers(&b));
    }
}
