//! Peers of issue 6, run in the same bench run on the same servers and the
//! same seeded documents as our binaries: Kafka Connect with the MongoDB
//! Kafka Source Connector (vs `mongo-source`), Monstache (vs both of ours
//! end to end) and Vector (vs `es-sync`).
//! `scripts/bench.d/peers` installs them and passes `--peer-connect DIR`,
//! `--peer-monstache BIN`, `--peer-vector BIN` and `--peer-status-dir DIR`;
//! a peer without its argument is recorded as not run, with the installer's
//! reason.

pub mod kafka_connect;
pub mod monstache;
pub mod vector;

use crate::{log, procmon, Child, Opts};
use anyhow::{bail, Context as _, Result};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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

impl PeerOpts {
    /// From the parsed `--key value` arguments.
    pub fn from_args(m: &HashMap<String, String>) -> Self {
        Self {
            connect_home: m.get("peer-connect").map(PathBuf::from),
            monstache_bin: m.get("peer-monstache").map(PathBuf::from),
            vector_bin: m.get("peer-vector").map(PathBuf::from),
            status_dir: m.get("peer-status-dir").map(PathBuf::from),
        }
    }

    /// The installer's word on `peer`, or why there is none.
    fn status(&self, peer: &str) -> String {
        self.status_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(format!("{peer}.status"))).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "not installed (scripts/bench.d/peers install)".into())
    }
}

/// Runs every installed peer against the phases already in `result`
/// (`source`, `latency`); a peer that fails is recorded with its error.
pub async fn run(o: &Opts, result: &Value) -> Value {
    let p = &o.peers;
    let mut out = json!({});
    out["kafka_connect"] = match &p.connect_home {
        Some(home) => kafka_connect::run(o, home, &result["source"])
            .await
            .unwrap_or_else(|e| failed("Kafka Connect", e)),
        None => json!({"status": "not run", "reason": p.status("kafka-connect")}),
    };
    // Again on the fastest server, where mongo-source is not held back by
    // the Python SecantusDB (when the Rust one ran).
    let rs = &result["source_rust_secantus"];
    if let (Some(home), true) = (&p.connect_home, rs.get("mongo_source").is_some()) {
        out["kafka_connect_rust_secantus"] = kafka_connect::run(o, home, rs)
            .await
            .unwrap_or_else(|e| failed("Kafka Connect (Rust SecantusDB)", e));
    }
    out["monstache"] = match &p.monstache_bin {
        Some(bin) => monstache::run(o, bin, &result["source"], &result["latency"])
            .await
            .unwrap_or_else(|e| failed("monstache", e)),
        None => json!({"status": "not run", "reason": p.status("monstache")}),
    };
    out["vector"] = match &p.vector_bin {
        Some(bin) => vector::run(o, bin, &result["source"], &result["sync"])
            .await
            .unwrap_or_else(|e| failed("Vector", e)),
        None => json!({"status": "not run", "reason": p.status("vector")}),
    };
    out
}

fn failed(peer: &str, e: anyhow::Error) -> Value {
    log(&format!("peer {peer} failed: {e:#}"));
    json!({"status": "failed", "reason": format!("{e:#}")})
}

/// Spawns a peer process (output to `log_file`), sampled like our binaries.
pub(crate) fn spawn(
    mut cmd: tokio::process::Command,
    admin: String,
    log_file: &Path,
) -> Result<Child> {
    let out = std::fs::File::create(log_file)
        .with_context(|| format!("create {}", log_file.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.as_std().get_program()))?;
    let pid = child.id().context("pid")?;
    Ok(Child {
        child,
        mon: procmon::Monitor::start(pid, Duration::from_millis(200)),
        admin,
    })
}

/// Progress of a counted catch-up: seconds from spawn of the first poll that
/// saw work done and of the one that saw all `n`, and the count at the first.
pub(crate) struct Counted {
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
        crate::rate((n as f64 - self.first_count) as u64, self.done - self.first)
    }
}

/// Polls `count` every 100 ms until it reaches `n`; fails if one of `procs`
/// exits or `timeout` passes.
pub(crate) async fn count_until<F, Fut>(
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

/// Time allowed for a catch-up of `n` events (at least 120 s, 10 ms an event).
pub(crate) fn catch_up_timeout(n: u64) -> Duration {
    Duration::from_secs((n / 100).max(120))
}

/// Creates `{prefix}-cards` and `{prefix}-replies` from `config/indices/`.
pub(crate) async fn create_indices(o: &Opts, es: &crate::es::Es, prefix: &str) -> Result<()> {
    for (name, file) in [("cards", "cards.json"), ("replies", "replies.json")] {
        let body = std::fs::read(o.repo.join("config/indices").join(file))?;
        let (s, v) = es
            .call(Method::Put, &format!("/{prefix}-{name}"), Some(body))
            .await?;
        if s >= 300 {
            bail!("create index {prefix}-{name}: HTTP {s}: {v}");
        }
    }
    Ok(())
}

/// `ours / peer` (0 when the peer has no figure).
pub(crate) fn ratio(ours: f64, peer: f64) -> f64 {
    if peer > 0.0 {
        crate::round(ours / peer, 3)
    } else {
        0.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Options of no real servers, for the config renderers.
    pub(crate) fn opts() -> Opts {
        Opts {
            quick: true,
            docs: 1,
            rates: vec![],
            rate_secs: 1,
            mongo_uri: "mongodb://127.0.0.1:1/?directConnection=true".into(),
            mongo_rs_uri: None,
            kafka: "127.0.0.1:2".into(),
            es: "http://127.0.0.1:3".into(),
            bin_dir: "/b".into(),
            repo: "/r".into(),
            work: "/w".into(),
            seed: 1,
            command: String::new(),
            peers: PeerOpts::default(),
            partitions: 3,
            baselines: true,
            scale_docs: vec![],
            scale_partitions: vec![],
            scale_partition_docs: 0,
        }
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
        assert!(PeerOpts::default()
            .status("kafka-connect")
            .contains("not installed"));
        std::fs::remove_dir_all(dir).expect("rm");
    }

    #[test]
    fn args_name_the_installs() {
        let m: HashMap<String, String> = [
            ("peer-connect", "/c"),
            ("peer-monstache", "/m/bin"),
            ("docs", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = PeerOpts::from_args(&m);
        assert_eq!(p.connect_home, Some(PathBuf::from("/c")));
        assert_eq!(p.monstache_bin, Some(PathBuf::from("/m/bin")));
        assert_eq!(p.status_dir, None);
    }

    #[test]
    fn catch_up_rate_leaves_out_what_the_first_poll_saw() {
        let c = Counted {
            first: 1.0,
            done: 3.0,
            first_count: 1000.0,
        };
        assert_eq!(c.rate(5000), 2000.0);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 3.0), 0.333);
        assert_eq!(catch_up_timeout(1_000).as_secs(), 120);
        assert_eq!(catch_up_timeout(200_000).as_secs(), 2000);
    }
}
