//! What every trial of one of our binaries records while it runs: its
//! metric series (`Sampler`), its resources (`procmon`), the servers' and
//! cores' CPU, and, for a profile trial, a perf recording.

use crate::clients::metrics::{Column, Sampler, Samples};
use crate::ctx::Ctx;
use crate::process::procmon::{self, Sample};
use crate::process::profile::Profiler;
use crate::process::servers::Mark;
use crate::process::Child;
use anyhow::Result;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Time allowed for a trial of `n` events (at least 300 s, 10 ms an event).
pub fn trial_timeout(n: u64) -> Duration {
    Duration::from_secs((n / 100).max(300))
}

/// A trial being watched.
pub struct Watch {
    before: Sample,
    servers0: Mark,
    sampler: Sampler,
    perf: Option<(Profiler, PathBuf, String)>,
}

/// What a watched trial recorded.
pub struct Watched {
    /// Its metric series.
    pub samples: Samples,
    /// The rest, as JSON: `resources`, `servers_cpu`, `rss_mib`, `profile`.
    pub json: Value,
}

impl Watch {
    /// Starts watching `child`, spawned at `t_spawn`: `columns` of its
    /// metrics every `every`; with `profile` (directory, name), perf
    /// records it into `name.*` there (the data in the work directory).
    pub fn start(
        cx: &Ctx,
        child: &Child,
        t_spawn: Instant,
        columns: &'static [Column],
        every: Duration,
        profile: Option<(&Path, String)>,
    ) -> Result<Self> {
        let perf = match profile {
            Some((dir, name)) => Some((
                Profiler::attach(child.pid(), &cx.work(&format!("perf-{name}.data")))?,
                dir.to_path_buf(),
                name,
            )),
            None => None,
        };
        Ok(Self {
            before: child.mon.now(),
            servers0: cx.o.servers.mark(),
            sampler: Sampler::start(&child.admin, columns, every, t_spawn),
            perf,
        })
    }

    /// The running sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Ends the window now (`events` done in it); finishes the profile.
    pub async fn finish(self, cx: &Ctx, child: &Child, events: u64) -> Result<Watched> {
        let after = child.mon.now();
        let servers = cx.o.servers.share(&self.servers0, &cx.o.servers.mark());
        let samples = self.sampler.stop().await;
        let all = child.mon.samples();
        let usage = procmon::usage(&all, self.before, after, events);
        let profile = match self.perf {
            Some((p, dir, name)) => p.finish(&dir, &name).await?,
            None => Value::Null,
        };
        Ok(Watched {
            json: json!({
                "resources": usage.json(),
                "servers_cpu": servers,
                "rss_mib": procmon::rss_series(&all, self.before, after),
                "profile": profile,
            }),
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_grows_with_the_trial() {
        assert_eq!(trial_timeout(1_000).as_secs(), 300);
        assert_eq!(trial_timeout(1_000_000).as_secs(), 10_000);
    }
}
