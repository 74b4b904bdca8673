//! A process the bench starts and measures: our binaries, the baseline
//! children and the peers. Its output goes to a log file, its resources are
//! sampled from `/proc` (`procmon`), its admin endpoint (if any) is read for
//! readiness and metrics.
//!
//! A child never outlives the bench. `kill_on_drop` ends it when the bench
//! lets go of it, and [`die_with_bench`] when the bench itself dies without
//! running its destructors (a signal, a panic that aborts): an es-sync left
//! running on the measured core would skew every later run of the machine.

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
        die_with_bench(&mut cmd);
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

/// Makes the kernel SIGKILL the process `cmd` starts when the thread that
/// starts it ends (`PR_SET_PDEATHSIG`), which covers the bench dying by any
/// signal, SIGKILL included. The bench spawns from its runtime's threads,
/// which live as long as the bench. The setting survives `taskset`'s exec.
#[allow(unsafe_code)]
pub fn die_with_bench(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The bench died between the fork and the prctl: nobody will
            // send the signal, so do not start.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `SIG{sig}` to `pid` (best effort).
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process state letter of `/proc/<pid>/stat` (`None`: gone).
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: the state follows its ')'.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn a_child_dies_when_the_thread_that_started_it_ends() {
        let log = std::env::temp_dir().join(format!("bench-child-test-{}.log", std::process::id()));
        let spawner = {
            let log = log.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let _guard = rt.enter();
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("60");
                let child = Child::spawn(cmd, String::new(), &log).expect("spawn sleep");
                let pid = child.pid();
                // As if the bench died: no destructor runs, so kill_on_drop
                // does not fire; only the kernel can end the child.
                std::mem::forget(child);
                std::mem::forget(rt);
                pid
            })
        };
        let pid = spawner.join().expect("spawner thread");
        let t0 = std::time::Instant::now();
        let mut last = state(pid);
        while matches!(last, Some(s) if s != 'Z') && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            last = state(pid);
        }
        let _ = std::fs::remove_file(&log);
        assert!(
            matches!(last, None | Some('Z')),
            "sleep (pid {pid}) still runs after its spawner ended: state {last:?}"
        );
    }
}
