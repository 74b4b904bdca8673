//! CPU over a measured window: of the servers (Kafka, Elasticsearch, both
//! SecantusDB; `/proc/PID/stat` of the pids scripts/bench passes,
//! `--server-pids kafka=PID,...`), of the bench itself (load generator,
//! readers, pollers) and of each core (`/proc/stat`, everything that ran
//! there, other users' processes included): which process, and which core,
//! a phase is bound by.

use super::procmon::{clk_tck, read};
use crate::stats::round;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::time::Instant;

/// The servers' pids.
#[derive(Clone, Debug, Default)]
pub struct Servers {
    pids: Vec<(String, u32)>,
    tck: f64,
}

/// CPU seconds of every server at one instant, and each core's busy and
/// total jiffies.
#[derive(Clone, Debug)]
pub struct Mark {
    at: Instant,
    cpu: Vec<Option<f64>>,
    cores: Vec<(u64, u64)>,
}

/// Busy and total jiffies of each core (`cpuN` lines of `/proc/stat`;
/// busy = total - idle - iowait).
pub fn cores(stat: &str) -> Vec<(u64, u64)> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = f.iter().take(8).sum();
            let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

impl Servers {
    /// From `name=pid,name=pid`.
    pub fn parse(arg: &str) -> Result<Self> {
        let mut pids = vec![];
        for part in arg.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((name, pid)) = part.split_once('=') else {
                bail!("--server-pids: `{part}` is not name=pid");
            };
            let pid: u32 = pid
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("--server-pids: `{part}`: {e}"))?;
            pids.push((name.trim().to_string(), pid));
        }
        pids.push(("bench".to_string(), std::process::id()));
        Ok(Self {
            pids,
            tck: clk_tck(),
        })
    }

    /// Their CPU seconds now.
    pub fn mark(&self) -> Mark {
        Mark {
            at: Instant::now(),
            cpu: self
                .pids
                .iter()
                .map(|(_, p)| read(*p, self.tck).map(|s| s.cpu_s))
                .collect(),
            cores: cores(&std::fs::read_to_string("/proc/stat").unwrap_or_default()),
        }
    }

    /// Each server's share of one core between two marks
    /// (`{"kafka": 0.42, ...}`; `null` for a server that was gone).
    pub fn share(&self, a: &Mark, b: &Mark) -> Value {
        let secs = b.at.duration_since(a.at).as_secs_f64();
        let mut out = serde_json::Map::new();
        for (i, (name, _)) in self.pids.iter().enumerate() {
            let v = match (
                a.cpu.get(i).copied().flatten(),
                b.cpu.get(i).copied().flatten(),
            ) {
                (Some(x), Some(y)) if secs > 0.0 => json!(round((y - x) / secs, 3)),
                _ => Value::Null,
            };
            out.insert(name.clone(), v);
        }
        for (i, (x, y)) in a.cores.iter().zip(&b.cores).enumerate() {
            let total = y.1.saturating_sub(x.1);
            if total > 0 {
                let busy = y.0.saturating_sub(x.0) as f64 / total as f64;
                out.insert(format!("cpu{i}_busy"), json!(round(busy, 3)));
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_named_and_their_cpu_read() {
        let me = std::process::id();
        let s = Servers::parse(&format!("self={me}, gone={}", u32::MAX)).expect("parse");
        let a = s.mark();
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 150 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let v = s.share(&a, &s.mark());
        assert!(v["self"].as_f64().is_some_and(|c| c > 0.0), "{v}");
        assert_eq!(v["gone"], Value::Null);
        assert!(
            v["bench"].as_f64().is_some(),
            "the bench itself is always counted"
        );
        // The spin ran on some core (whichever the scheduler chose: one
        // core may well have been idle throughout).
        let busiest = v
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("cpu") && k.ends_with("_busy"))
            .filter_map(|(_, b)| b.as_f64())
            .fold(0.0_f64, f64::max);
        assert!(busiest > 0.0, "{v}");
        assert!(Servers::parse("kafka").is_err());
        assert!(Servers::parse("kafka=x").is_err());
    }

    #[test]
    fn cores_are_read_from_proc_stat() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 10 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n";
        assert_eq!(cores(stat), vec![(10, 60), (10, 50)]);
    }
}
