//! A process the bench starts and measures: our binaries, the baseline
//! children and the peers. Its output goes to a log file, its resources are
//! sampled from `/proc` (`procmon`), its admin endpoint (if any) is read for
//! readiness and metrics.

use super::procmon;
use crate::clients::metrics;
use anyhow::{bail, Context as _, Result};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How often the resources of a child are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// A running process.
pub struct Child {
    /// The process.
    pub child: tokio::process::Child,
    /// Its resource samples.
    pub mon: procmon::Monitor,
    /// `host:port` of its admin (or REST/HTTP) endpoint; empty if none.
    pub admin: String,
}

impl Child {
    /// Spawns `cmd` with stdout and stderr into `log_file`.
    pub fn spawn(mut cmd: tokio::process::Command, admin: String, log_file: &Path) -> Result<Self> {
        let out = std::fs::File::create(log_file)
            .with_context(|| format!("create {}", log_file.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {:?}", cmd.as_std()))?;
        let pid = child.id().context("pid")?;
        Ok(Self {
            child,
            mon: procmon::Monitor::start(pid, SAMPLE_EVERY),
            admin,
        })
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.mon.pid
    }

    /// Sum of a metric family on `/metrics` (0 if unreachable).
    pub async fn metric(&self, name: &str) -> f64 {
        match metrics::scrape(&self.admin).await {
            Some(body) => metrics::metric_sum(&body, name),
            None => 0.0,
        }
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{what} exited: {st}");
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, what: &str, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = crate::clients::http::get(&self.admin, "/readyz").await {
                return Ok(());
            }
            self.check_alive(what)?;
            if t0.elapsed() > timeout {
                bail!("{what} not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    pub async fn stop(mut self) -> Result<()> {
        signal(self.pid(), "TERM");
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }

    /// Waits for the process to exit by itself and returns its stdout log.
    pub async fn wait_exit(mut self, what: &str, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(st) => {
                let st = st?;
                if !st.success() {
                    bail!("{what} failed: {st}");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{what} did not finish in {timeout:?}")
            }
        }
    }
}

/// Sends `SIG{sig}` to `pid` (best effort).
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}
