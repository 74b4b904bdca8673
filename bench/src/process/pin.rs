//! CPU pinning of the processes the bench starts (`taskset -c CPUS`), so
//! that the measured process (our binary, a baseline or a peer) runs on its
//! own cores and the servers and the load generator on others
//! (docs/benchmarks.md, "Pinning"). `taskset` execs the program: the child's
//! pid is the program's, which the resource sampling reads.

use std::ffi::OsStr;

/// Where a measured process runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pin {
    /// taskset CPU list (`1`, `2-3`); `None` = wherever the kernel puts it.
    pub cpus: Option<String>,
}

impl Pin {
    /// A command for `program`, pinned when a CPU list is set.
    pub fn command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        match &self.cpus {
            Some(c) => {
                let mut cmd = tokio::process::Command::new("taskset");
                cmd.arg("-c").arg(c).arg(program);
                cmd
            }
            None => tokio::process::Command::new(program),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_commands_go_through_taskset() {
        let p = Pin {
            cpus: Some("1".into()),
        };
        let c = p.command("/bin/es-sync");
        let std = c.as_std();
        assert_eq!(std.get_program(), "taskset");
        let args: Vec<&OsStr> = std.get_args().collect();
        assert_eq!(args, ["-c", "1", "/bin/es-sync"]);
        let free = Pin::default().command("/bin/es-sync");
        assert_eq!(free.as_std().get_program(), "/bin/es-sync");
    }

    #[tokio::test]
    async fn a_pinned_child_runs_on_its_cpu() {
        let p = Pin {
            cpus: Some("0".into()),
        };
        let out = p
            .command("sh")
            .arg("-c")
            .arg("grep Cpus_allowed_list /proc/self/status")
            .output()
            .await
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim_end().ends_with("\t0"), "{text}");
    }
}
