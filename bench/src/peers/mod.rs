//! Peers, run in the same bench run on the same servers and the same seeded
//! documents as our binaries, pinned like them: Kafka Connect with the
//! MongoDB source connector (an arm of the source phase, vs
//! `mongo-source`), Vector (an arm of the sync phase, vs `es-sync`) and
//! Monstache (its own interleaved comparison, vs both of ours end to end).
//! `scripts/bench.d/peers` installs them and passes `--peer-connect DIR`,
//! `--peer-monstache BIN`, `--peer-vector BIN` and `--peer-status-dir DIR`;
//! a peer without its argument is recorded as not run, with the installer's
//! reason.

pub mod kafka_connect;
pub mod monstache;
pub mod vector;

use crate::process::Child;
use crate::stats::rate;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the installed peers are (from `scripts/bench.d/peers`).
#[derive(Clone, Debug, Default)]
pub struct PeerOpts {
    /// Kafka Connect install (`lib/`, `plugins/`, `log4j2.properties`).
    pub connect_home: Option<PathBuf>,
    /// Monstache binary.
    pub monstache_bin: Option<PathBuf>,
    /// Vector binary (kafka source, remap, elasticsearch sink).
    pub vector_bin: Option<PathBuf>,
    /// Directory of the installer's `<peer>.status` files (reasons).
    pub status_dir: Option<PathBuf>,
}

/// The peers the installer knows, with their names in the status files.
pub const PEERS: &[(&str, &str)] = &[
    ("kafka_connect", "kafka-connect"),
    ("kafka_connect_es_sink", "kafka-connect-es-sink"),
    ("monstache", "monstache"),
    ("vector", "vector"),
];

impl PeerOpts {
    /// The installer's word on `peer`, or why there is none.
    pub fn status(&self, peer: &str) -> String {
        self.status_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(format!("{peer}.status"))).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "not installed (scripts/bench.d/peers install)".into())
    }

    /// Every peer's installer status (for the report).
    pub fn statuses(&self) -> Value {
        PEERS
            .iter()
            .map(|(key, file)| (key.to_string(), json!(self.status(file))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Progress of a counted catch-up: seconds from `t0` of the first poll that
/// saw work done and of the one that saw all `n`, and the count at the first.
#[derive(Debug)]
pub struct Counted {
    /// First poll with a count > 0, seconds after `t0`.
    pub first: f64,
    /// First poll with a count >= n, seconds after `t0`.
    pub done: f64,
    /// Count seen at `first`.
    pub first_count: f64,
}

impl Counted {
    /// Rate from the first poll with work done to the last (`n` in all).
    pub fn rate(&self, n: u64) -> f64 {
        rate((n as f64 - self.first_count) as u64, self.done - self.first)
    }
}

/// Polls `count` every 100 ms until it reaches `n`; fails if one of `procs`
/// exits or `timeout` passes.
pub async fn count_until<F, Fut>(
    what: &str,
    n: u64,
    t0: Instant,
    timeout: Duration,
    procs: &mut [&mut Child],
    mut count: F,
) -> Result<Counted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = f64>,
{
    let mut first: Option<(f64, f64)> = None;
    loop {
        let c = count().await;
        let t = t0.elapsed().as_secs_f64();
        if c > 0.0 && first.is_none() {
            first = Some((t, c));
        }
        if c >= n as f64 {
            let (first, first_count) = first.unwrap_or((t, c));
            return Ok(Counted {
                first,
                done: t,
                first_count,
            });
        }
        for p in procs.iter_mut() {
            if let Some(st) = p.child.try_wait()? {
                bail!("{what}: a process exited ({st}) at {c} of {n}");
            }
        }
        if t0.elapsed() > timeout {
            bail!("{what}: {c} of {n} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use crate::phases::watch::trial_timeout as catch_up_timeout;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context of no real servers, for the config renderers.
    pub(crate) fn ctx() -> crate::ctx::Ctx {
        let mut o = crate::cli::tests::opts();
        o.repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        crate::ctx::Ctx::new(o).expect("ctx")
    }

    #[test]
    fn status_is_the_installers_reason_or_says_how_to_install() {
        let dir = std::env::temp_dir().join(format!("bench-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("monstache.status"), "proxy refused it\n").expect("write");
        let p = PeerOpts {
            status_dir: Some(dir.clone()),
            ..PeerOpts::default()
        };
        assert_eq!(p.status("monstache"), "proxy refused it");
        assert!(p.status("vector").contains("scripts/bench.d/peers install"));
        assert_eq!(p.statuses()["monstache"], json!("proxy refused it"));
        assert!(PeerOpts::default()
            .status("kafka-connect")
            .contains("not installed"));
        std::fs::remove_dir_all(dir).expect("rm");
    }

    #[test]
    fn catch_up_rate_leaves_out_what_the_first_poll_saw() {
        let c = Counted {
            first: 1.0,
            done: 3.0,
            first_count: 1000.0,
        };
        assert_eq!(c.rate(5000), 2000.0);
    }
}
