//! Resource sampling of a child process from `/proc/PID/status` (VmRSS,
//! VmHWM) and `/proc/PID/stat` (utime + stime), and the figures the report
//! takes from the samples (peak and steady RSS, CPU per event, RSS over
//! time).

use crate::series;
use crate::stats::round;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Seconds since the monitor started.
    pub at: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    /// CPU seconds (user + system) so far.
    pub cpu_s: f64,
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads one sample, `None` once the process is gone.
pub fn read(pid: u32, tck: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(Sample {
        at: 0.0,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_s: (utime + stime) / tck,
    })
}

/// Samples a process every `every` until it exits or the monitor is dropped.
#[derive(Clone)]
pub struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    /// The process.
    pub pid: u32,
    tck: f64,
    t0: std::time::Instant,
}

impl Monitor {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let m = Self {
            samples: Arc::default(),
            pid,
            tck: clk_tck(),
            t0: std::time::Instant::now(),
        };
        let m2 = m.clone();
        let t0 = m.t0;
        tokio::spawn(async move {
            while let Some(mut s) = read(m2.pid, m2.tck) {
                s.at = t0.elapsed().as_secs_f64();
                m2.samples.lock().expect("samples").push(s);
                if Arc::strong_count(&m2.samples) == 1 {
                    break;
                }
                tokio::time::sleep(every).await;
            }
        });
        m
    }

    /// A sample now.
    pub fn now(&self) -> Sample {
        let mut s = read(self.pid, self.tck).unwrap_or_default();
        s.at = self.t0.elapsed().as_secs_f64();
        s
    }

    /// All samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }
}

/// Resource figures of one binary over one phase.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Median RSS of the samples in the window, MiB.
    pub steady_rss_mib: f64,
    /// CPU seconds in the window.
    pub cpu_s: f64,
    /// CPU seconds per 1,000 events.
    pub cpu_s_per_1k: f64,
    /// CPU seconds per second of the window: the share of one core used.
    pub cpu_share: f64,
    /// Events in the window.
    pub events: u64,
}

/// Usage between two samples with `events` processed, steady RSS from the
/// samples taken in between (median).
pub fn usage(all: &[Sample], from: Sample, to: Sample, events: u64) -> Usage {
    let mut rss: Vec<u64> = all
        .iter()
        .filter(|s| s.at >= from.at && s.at <= to.at && s.rss_kib > 0)
        .map(|s| s.rss_kib)
        .collect();
    rss.sort_unstable();
    let steady = rss.get(rss.len() / 2).copied().unwrap_or(to.rss_kib);
    let peak = all
        .iter()
        .map(|s| s.hwm_kib)
        .max()
        .unwrap_or(0)
        .max(to.hwm_kib);
    let cpu = (to.cpu_s - from.cpu_s).max(0.0);
    Usage {
        peak_rss_mib: peak as f64 / 1024.0,
        steady_rss_mib: steady as f64 / 1024.0,
        cpu_s: cpu,
        cpu_s_per_1k: if events > 0 {
            cpu * 1000.0 / events as f64
        } else {
            0.0
        },
        cpu_share: if to.at > from.at {
            cpu / (to.at - from.at)
        } else {
            0.0
        },
        events,
    }
}

impl Usage {
    /// As JSON (MiB to 0.1, CPU seconds to 0.01).
    pub fn json(&self) -> Value {
        json!({
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "steady_rss_mib": round(self.steady_rss_mib, 1),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_s_per_1k_events": round(self.cpu_s_per_1k, 3),
            "cpu_share": round(self.cpu_share, 3),
            "events": self.events,
        })
    }
}

/// A process's own figures, reported by itself at its end (`self_report`),
/// for children too short-lived for the 200 ms sampling: the sample to end
/// a usage window with.
pub fn self_report() -> Value {
    let me = read(std::process::id(), clk_tck()).unwrap_or_default();
    json!({"cpu_s": me.cpu_s, "rss_kib": me.rss_kib, "hwm_kib": me.hwm_kib})
}

/// The end sample of a child from its [`self_report`] and the samples
/// taken of it (the last one's time).
pub fn end_sample(report: &Value, samples: &[Sample], start: Sample) -> Sample {
    Sample {
        at: samples.last().map_or(start.at, |s| s.at),
        rss_kib: report["rss_kib"].as_u64().unwrap_or(0),
        hwm_kib: report["hwm_kib"].as_u64().unwrap_or(0),
        cpu_s: report["cpu_s"].as_f64().unwrap_or(0.0),
    }
}

/// RSS over time between two samples: `[seconds since from, MiB]`, thinned
/// for the plots.
pub fn rss_series(all: &[Sample], from: Sample, to: Sample) -> Vec<[f64; 2]> {
    let pts: Vec<[f64; 2]> = all
        .iter()
        .filter(|s| s.at >= from.at && s.at <= to.at && s.rss_kib > 0)
        .map(|s| {
            [
                round(s.at - from.at, 2),
                round(s.rss_kib as f64 / 1024.0, 1),
            ]
        })
        .collect();
    series::thin(&pts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: f64, rss_mib: u64, hwm_mib: u64, cpu_s: f64) -> Sample {
        Sample {
            at,
            rss_kib: rss_mib * 1024,
            hwm_kib: hwm_mib * 1024,
            cpu_s,
        }
    }

    #[test]
    fn usage_takes_the_window_median_the_peak_and_cpu_per_event() {
        let all = [
            s(0.0, 5, 5, 0.0),
            s(1.0, 10, 10, 1.0),
            s(2.0, 30, 30, 2.0),
            s(3.0, 20, 30, 3.0),
            s(4.0, 50, 50, 4.0),
        ];
        let u = usage(&all, all[1], all[3], 2000);
        assert_eq!(u.steady_rss_mib, 20.0, "median of 10, 30, 20");
        assert_eq!(u.peak_rss_mib, 50.0, "VmHWM over the whole life");
        assert_eq!(u.cpu_s, 2.0);
        assert_eq!(u.cpu_s_per_1k, 1.0);
        assert_eq!(u.cpu_share, 1.0, "2 CPU seconds in 2 s");
        assert_eq!(usage(&all, all[1], all[3], 0).cpu_s_per_1k, 0.0);
        let r = rss_series(&all, all[1], all[3]);
        assert_eq!(r, vec![[0.0, 10.0], [1.0, 30.0], [2.0, 20.0]]);
        assert_eq!(u.json()["steady_rss_mib"], json!(20.0));
    }

    #[test]
    fn a_self_report_ends_the_window_with_its_own_cpu_and_peak() {
        let start = s(0.0, 1, 1, 0.0);
        let all = [start, s(0.2, 8, 8, 0.1)];
        let end = end_sample(
            &json!({"cpu_s": 0.7, "rss_kib": 9216, "hwm_kib": 10240}),
            &all,
            start,
        );
        assert_eq!((end.at, end.cpu_s, end.hwm_kib), (0.2, 0.7, 10240));
        let u = usage(&all, start, end, 1000);
        assert_eq!(u.cpu_s_per_1k, 0.7);
        assert_eq!(u.peak_rss_mib, 10.0);
        let none = end_sample(&json!({}), &[], start);
        assert_eq!((none.at, none.cpu_s), (0.0, 0.0));
        assert!(self_report()["hwm_kib"].as_u64().unwrap_or(0) > 0);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = read(std::process::id(), clk_tck()).expect("own /proc");
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        assert!(read(u32::MAX, 100.0).is_none());
    }
}
