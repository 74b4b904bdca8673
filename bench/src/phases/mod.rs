//! The phases of a run. Each comparison runs its arms interleaved (ours,
//! baseline[, peer], ours, baseline, ...) after one unmeasured warm-up
//! round, and reports every trial, the median and spread of each arm, and
//! the median of the per-pair ratios.

pub mod latency;
pub mod rollup;
pub mod scale;
pub mod source;
pub mod sync;
pub mod watch;

use crate::stats::{pair_ratios, summary_json};
use serde_json::{json, Value};

/// `trials[i][arm][key]` for every trial (NaN where missing, so that the
/// pairs stay aligned).
pub fn column(trials: &[Value], arm: &str, key: &str) -> Vec<f64> {
    trials
        .iter()
        .map(|t| t[arm][key].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// A nested value of every trial (`path` of keys), NaN where missing.
pub fn column_at(trials: &[Value], arm: &str, path: &[&str]) -> Vec<f64> {
    trials
        .iter()
        .map(|t| {
            path.iter()
                .fold(&t[arm], |v, k| &v[*k])
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Ours against one other arm on `key`: both summaries and the median of
/// the per-pair ratios (ours / other).
pub fn compare(trials: &[Value], ours: &str, other: &str, key: &str) -> Value {
    let (o, b) = (column(trials, ours, key), column(trials, other, key));
    json!({
        "ours": summary_json(&o, 0),
        "other": summary_json(&b, 0),
        "ratio": summary_json(&pair_ratios(&o, &b), 3),
    })
}

/// Median and spread of an arm's resources over its trials.
pub fn resources(trials: &[Value], arm: &str) -> Value {
    let s = |k: &str, d| summary_json(&column_at(trials, arm, &["resources", k]), d);
    json!({
        "peak_rss_mib": s("peak_rss_mib", 1),
        "steady_rss_mib": s("steady_rss_mib", 1),
        "cpu_s_per_1k_events": s("cpu_s_per_1k_events", 3),
        "cpu_share": s("cpu_share", 3),
    })
}

/// Median and spread of each server's share of a core during an arm's
/// trials (`servers_cpu` of each trial).
pub fn servers_cpu(trials: &[Value], arm: &str) -> Value {
    let mut names: Vec<String> = trials
        .iter()
        .filter_map(|t| t[arm]["servers_cpu"].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let v = summary_json(&column_at(trials, arm, &["servers_cpu", &n]), 3);
            (n, v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Adds the keys of object `extra` to object `out`.
pub fn merge(out: &mut Value, extra: Value) {
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
}

/// An arm's failed trial, kept in the trial list.
pub fn failed(e: &anyhow::Error) -> Value {
    json!({"error": format!("{e:#}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_pair_trials_and_skip_failed_ones() {
        let trials = vec![
            json!({"ours": {"r": 90.0, "resources": {"steady_rss_mib": 30.0}}, "base": {"r": 100.0}}),
            json!({"ours": {"r": 50.0, "resources": {"steady_rss_mib": 32.0}}, "base": {"error": "x"}}),
            json!({"ours": {"r": 80.0, "resources": {"steady_rss_mib": 31.0}}, "base": {"r": 100.0}}),
            json!({"ours": {"r": 45.0, "resources": {"steady_rss_mib": 33.0}}, "base": {"r": 50.0}}),
        ];
        let c = compare(&trials, "ours", "base", "r");
        assert_eq!(c["ours"]["n"], json!(4));
        assert_eq!(c["other"]["n"], json!(3));
        // Pairs 0, 2, 3: 0.9, 0.8, 0.9.
        assert_eq!(c["ratio"]["n"], json!(3));
        assert_eq!(c["ratio"]["median"], json!(0.9));
        assert_eq!(c["ratio"]["min"], json!(0.8));
        let r = resources(&trials, "ours");
        assert_eq!(r["steady_rss_mib"]["median"], json!(31.5));
        assert_eq!(r["peak_rss_mib"], Value::Null);
        let with = vec![
            json!({"ours": {"servers_cpu": {"kafka": 0.5, "es": 0.9}}}),
            json!({"ours": {"servers_cpu": {"kafka": 0.7, "es": null}}}),
        ];
        let s = servers_cpu(&with, "ours");
        assert_eq!(s["kafka"]["median"], json!(0.6));
        assert_eq!(s["es"]["n"], json!(1));
    }
}
