//! The statistics the bench reports, pure functions over measured values:
//! rates, rounding, medians and spreads of repeated trials, per-pair ratios
//! of interleaved trials, percentiles and the CDF of latencies, and stall
//! detection in a sampled counter.

use serde_json::{json, Value};

/// Events per second (`0` for an empty or negative interval).
pub fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Rounds to `d` decimals.
pub fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// Median (mean of the two middle values for an even count); `None` when
/// there is no finite value.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Median and spread of repeated trials of one measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of (finite) values.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// `(max - min) / median`, the spread relative to the median (0 when
    /// the median is 0).
    pub spread: f64,
    /// The values in trial order.
    pub values: Vec<f64>,
}

/// Summary of `values` (non-finite values left out); `None` when none is left.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let median = median(&finite)?;
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Summary {
        n: finite.len(),
        median,
        min,
        max,
        spread: if median != 0.0 {
            (max - min) / median.abs()
        } else {
            0.0
        },
        values: finite,
    })
}

impl Summary {
    /// As JSON, rounded to `d` decimals (the spread to 3).
    pub fn json(&self, d: i32) -> Value {
        json!({
            "n": self.n,
            "median": round(self.median, d),
            "min": round(self.min, d),
            "max": round(self.max, d),
            "spread": round(self.spread, 3),
            "values": self.values.iter().map(|x| round(*x, d)).collect::<Vec<_>>(),
        })
    }
}

/// JSON of the summary of `values`, `null` when there is none.
pub fn summary_json(values: &[f64], d: i32) -> Value {
    summarize(values).map_or(Value::Null, |s| s.json(d))
}

/// Ratios `ours[i] / base[i]` of interleaved trials, pair by pair; a pair
/// with a missing (non-finite) or zero baseline is left out.
pub fn pair_ratios(ours: &[f64], base: &[f64]) -> Vec<f64> {
    ours.iter()
        .zip(base)
        .filter(|(o, b)| o.is_finite() && b.is_finite() && **b != 0.0)
        .map(|(o, b)| o / b)
        .collect()
}

/// Percentile `p` (0-100) of sorted values, nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// The 0th..100th percentiles of sorted values (the CDF for the plots).
pub fn cdf(sorted: &[f64]) -> Vec<f64> {
    (0..=100)
        .map(|p| round(percentile(sorted, f64::from(p)), 1))
        .collect()
}

/// Sorts a copy of `values`.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// p50/p95/p99/max of sorted latencies, rounded to ms.
pub fn latency_json(sorted: &[f64]) -> Value {
    json!({
        "count": sorted.len(),
        "p50": round(percentile(sorted, 50.0), 0),
        "p95": round(percentile(sorted, 95.0), 0),
        "p99": round(percentile(sorted, 99.0), 0),
        "max": round(sorted.last().copied().unwrap_or(0.0), 0),
    })
}

/// Stalls of a sampled, non-decreasing counter (`[seconds, value]` points):
/// the intervals between consecutive samples in which it did not move,
/// counted from the first sample that saw progress to the first that saw
/// the final value (before and after, nothing was due).
#[derive(Clone, Debug, PartialEq)]
pub struct Stalls {
    /// Sample intervals in the active window.
    pub intervals: usize,
    /// Of those, intervals without progress.
    pub stalled: usize,
    /// `stalled / intervals` (0 without intervals).
    pub fraction: f64,
    /// Longest run of consecutive stalled intervals, seconds.
    pub longest_s: f64,
    /// Seconds of the active window spent stalled.
    pub stalled_s: f64,
}

/// Stall detection over `points` (see [`Stalls`]).
pub fn stalls(points: &[[f64; 2]]) -> Stalls {
    let empty = Stalls {
        intervals: 0,
        stalled: 0,
        fraction: 0.0,
        longest_s: 0.0,
        stalled_s: 0.0,
    };
    let (Some(first_value), Some(last_value)) = (points.first(), points.last()) else {
        return empty;
    };
    let (v0, v_end) = (first_value[1], last_value[1]);
    // The window: from the last sample still at the start value (progress
    // happens after it) to the first sample at the final value.
    let Some(start) = points.iter().rposition(|p| p[1] <= v0) else {
        return empty;
    };
    let Some(end) = points.iter().position(|p| p[1] >= v_end) else {
        return empty;
    };
    if end <= start {
        return empty;
    }
    let window = &points[start..=end];
    let (mut stalled, mut stalled_s, mut run, mut longest) = (0, 0.0, 0.0f64, 0.0f64);
    for w in window.windows(2) {
        let dt = w[1][0] - w[0][0];
        if w[1][1] <= w[0][1] {
            stalled += 1;
            stalled_s += dt;
            run += dt;
            longest = longest.max(run);
        } else {
            run = 0.0;
        }
    }
    let intervals = window.len() - 1;
    Stalls {
        intervals,
        stalled,
        fraction: stalled as f64 / intervals as f64,
        longest_s: longest,
        stalled_s,
    }
}

impl Stalls {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "intervals": self.intervals,
            "stalled": self.stalled,
            "fraction": round(self.fraction, 3),
            "longest_s": round(self.longest_s, 2),
            "stalled_s": round(self.stalled_s, 2),
        })
    }
}

/// Mean of a histogram's observations over a window, from its cumulative
/// `_sum` and `_count` at the start and the end (`None` without
/// observations in between).
pub fn histogram_mean(sum0: f64, count0: f64, sum1: f64, count1: f64) -> Option<f64> {
    let n = count1 - count0;
    (n > 0.0).then(|| (sum1 - sum0) / n)
}

/// Share of samples in which a 0/1 gauge was set (0 without samples).
pub fn fraction_set(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().filter(|v| **v >= 0.5).count() as f64 / samples.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_round() {
        assert_eq!(rate(1000, 2.0), 500.0);
        assert_eq!(rate(1000, 0.0), 0.0);
        assert_eq!(rate(1000, -1.0), 0.0);
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(1234.5, 0), 1235.0);
    }

    #[test]
    fn median_of_odd_and_even_counts_ignores_non_finite() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::INFINITY]), None);
    }

    #[test]
    fn summary_has_median_extremes_and_relative_spread() {
        let s = summarize(&[10.0, 12.0, 8.0, 11.0, 9.0]).expect("summary");
        assert_eq!(s.n, 5);
        assert_eq!(s.median, 10.0);
        assert_eq!((s.min, s.max), (8.0, 12.0));
        assert!((s.spread - 0.4).abs() < 1e-12);
        assert_eq!(
            s.values,
            vec![10.0, 12.0, 8.0, 11.0, 9.0],
            "trial order kept"
        );
        assert_eq!(summarize(&[0.0, 0.0]).expect("zeros").spread, 0.0);
        assert!(summarize(&[]).is_none());
        assert_eq!(summary_json(&[], 0), Value::Null);
        let j = summary_json(&[1.0, 2.0, 4.0], 1);
        assert_eq!(j["median"], json!(2.0));
        assert_eq!(j["spread"], json!(1.5));
    }

    #[test]
    fn ratio_is_the_median_of_the_pair_ratios_not_the_ratio_of_medians() {
        // Trial 3 ran on a slow machine moment: both halves of the pair
        // slowed down, the pair ratio stays.
        let ours = [90.0, 80.0, 30.0, 85.0, 95.0];
        let base = [100.0, 100.0, 33.0, 90.0, 100.0];
        let r = pair_ratios(&ours, &base);
        assert_eq!(r.len(), 5);
        let m = median(&r).expect("median");
        assert!((m - 30.0 / 33.0).abs() < 1e-12, "median pair ratio {m}");
        let of_medians = median(&ours).expect("o") / median(&base).expect("b");
        assert!((of_medians - 0.85).abs() < 1e-12);
    }

    #[test]
    fn pair_ratios_skip_missing_and_zero_baselines_and_unpaired_trials() {
        let r = pair_ratios(&[1.0, 2.0, 3.0, 4.0], &[2.0, 0.0, f64::NAN]);
        assert_eq!(r, vec![0.5]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let ten = sorted(&[10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]);
        assert_eq!(percentile(&ten, 95.0), 10.0);
        assert_eq!(percentile(&ten, 90.0), 9.0);
    }

    #[test]
    fn cdf_has_101_non_decreasing_points_from_min_to_max() {
        let v = sorted(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        let c = cdf(&v);
        assert_eq!(c.len(), 101);
        assert_eq!(c[0], 1.0);
        assert_eq!(c[100], 5.0);
        assert_eq!(c[50], 3.0);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        let j = latency_json(&v);
        assert_eq!(j["count"], json!(5));
        assert_eq!(j["p50"], json!(3.0));
        assert_eq!(j["max"], json!(5.0));
    }

    #[test]
    fn stalls_count_flat_intervals_inside_the_active_window_only() {
        // Idle before the first progress and after the last: not stalls.
        let pts = [
            [0.0, 0.0],
            [0.1, 0.0],
            [0.2, 0.0],
            [0.3, 100.0],
            [0.4, 100.0],
            [0.5, 100.0],
            [0.6, 250.0],
            [0.7, 300.0],
            [0.8, 300.0],
            [0.9, 300.0],
        ];
        let s = stalls(&pts);
        // Window 0.2..0.7: 5 intervals, 2 without progress (0.3-0.4-0.5).
        assert_eq!(s.intervals, 5);
        assert_eq!(s.stalled, 2);
        assert!((s.fraction - 0.4).abs() < 1e-12);
        assert!((s.longest_s - 0.2).abs() < 1e-9);
        assert!((s.stalled_s - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_steady_counter_has_no_stalls_and_an_idle_one_no_window() {
        let steady: Vec<[f64; 2]> = (0..10)
            .map(|i| [f64::from(i) / 10.0, f64::from(i) * 10.0])
            .collect();
        let s = stalls(&steady);
        assert_eq!((s.intervals, s.stalled), (9, 0));
        assert_eq!(s.fraction, 0.0);
        let idle = [[0.0, 5.0], [0.1, 5.0], [0.2, 5.0]];
        assert_eq!(stalls(&idle).intervals, 0);
        assert_eq!(stalls(&[]).intervals, 0);
        // Longest run is the longest, not the last.
        let pts = [
            [0.0, 0.0],
            [1.0, 0.0],
            [2.0, 0.0],
            [3.0, 0.0],
            [4.0, 1.0],
            [5.0, 1.0],
            [6.0, 2.0],
        ];
        let s = stalls(&pts);
        assert_eq!((s.intervals, s.stalled), (3, 1));
        assert_eq!(s.longest_s, 1.0);
    }

    #[test]
    fn histogram_mean_and_gauge_fraction() {
        assert_eq!(histogram_mean(10.0, 4.0, 22.0, 8.0), Some(3.0));
        assert_eq!(histogram_mean(10.0, 4.0, 10.0, 4.0), None);
        assert_eq!(fraction_set(&[0.0, 1.0, 1.0, 0.0]), 0.5);
        assert_eq!(fraction_set(&[]), 0.0);
    }
}
