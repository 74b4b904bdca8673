//! CPU profiles of a measured process (`--profile DIR`): `perf record`
//! attached to its pid (software clock `cpu-clock`, which works in VMs
//! without hardware counters; DWARF call graphs, since the release build
//! keeps no frame pointers), then a text report (`perf report`) and a flame
//! graph (`inferno-collapse-perf | inferno-flamegraph`, when inferno is on
//! the PATH; scripts/bench installs it). The perf data stays in the work
//! directory; the report and the SVG go to the profile directory.

use crate::log::log;
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Samples per second: a trial takes a few CPU seconds, and a few
/// thousand samples make a readable flame graph (16 KiB of stack each).
const FREQUENCY: &str = "997";

/// A `perf record` attached to one process.
pub struct Profiler {
    perf: tokio::process::Child,
    data: PathBuf,
}

impl Profiler {
    /// Starts recording `pid` into `data`.
    pub fn attach(pid: u32, data: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(data.with_extension("log"))?;
        let mut perf = tokio::process::Command::new("perf");
        crate::process::child::die_with_bench(&mut perf);
        let perf = perf
            .args(["record", "-e", "cpu-clock", "-F", FREQUENCY])
            .args(["--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("spawn perf record (is perf installed?)")?;
        Ok(Self {
            perf,
            data: data.to_path_buf(),
        })
    }

    /// Stops recording and writes `{name}.txt` (and `{name}.svg`) into
    /// `out_dir`; returns where they are.
    pub async fn finish(mut self, out_dir: &Path, name: &str) -> Result<Value> {
        if let Some(pid) = self.perf.id() {
            crate::process::child::signal(pid, "INT");
        }
        match tokio::time::timeout(Duration::from_secs(120), self.perf.wait()).await {
            Ok(st) => {
                st?;
            }
            Err(_) => {
                self.perf.kill().await?;
                bail!("perf record did not stop");
            }
        }
        std::fs::create_dir_all(out_dir)?;
        let report = out_dir.join(format!("{name}.txt"));
        let svg = out_dir.join(format!("{name}.svg"));
        log(&format!(
            "profile {name}: perf report and flame graph (can take a minute)"
        ));
        sh(
            r#"perf report -i "$1" --stdio --no-children -g none --percent-limit 0.5 --sort dso,symbol > "$2" 2>/dev/null"#,
            &[&self.data, &report],
        )
        .await?;
        let flame = if has("inferno-flamegraph").await {
            let folded = self.data.with_extension("folded");
            sh(
                r#"perf script -i "$1" 2>/dev/null | inferno-collapse-perf > "$2" && inferno-flamegraph --title "$4" < "$2" > "$3""#,
                &[&self.data, &folded, &svg, Path::new(name)],
            )
            .await?;
            Some(svg)
        } else {
            None
        };
        Ok(json!({
            "perf_data": self.data.display().to_string(),
            "report": report.display().to_string(),
            "flame_graph": flame.map(|p| p.display().to_string()),
            "how": format!("perf record -e cpu-clock -F {FREQUENCY} --call-graph dwarf,16384 -p PID"),
        }))
    }
}

/// Runs `script` with `sh -c`, the paths as `$1`.. (never interpolated).
async fn sh(script: &str, args: &[&Path]) -> Result<()> {
    let st = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await?;
    if !st.success() {
        bail!("`{script}` failed: {st}");
    }
    Ok(())
}

/// Whether `program` is on the PATH.
async fn has(program: &str) -> bool {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(r#"command -v "$1" >/dev/null"#)
        .arg("sh")
        .arg(program)
        .status()
        .await
        .is_ok_and(|s| s.success())
}
