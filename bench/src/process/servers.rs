//! CPU of the servers (Kafka, Elasticsearch, both SecantusDB) over a
//! measured window, from `/proc/PID/stat` of the pids scripts/bench passes
//! (`--server-pids kafka=PID,...`): which process a phase is bound by.

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

/// CPU seconds of every server at one instant.
#[derive(Clone, Debug)]
pub struct Mark {
    at: Instant,
    cpu: Vec<Option<f64>>,
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
        assert!(Servers::parse("kafka").is_err());
        assert!(Servers::parse("kafka=x").is_err());
        assert_eq!(Servers::parse("").expect("empty").share(&a, &a), json!({}));
    }
}
