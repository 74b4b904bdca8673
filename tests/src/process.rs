//! The built binaries, run as child processes (for kill -9 and exit-code
//! tests). `scripts/test` builds them before the tests run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Path of a binary of this workspace, next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A running binary, killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `name` with `args`, logging to a temp file.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(crate::unique(&format!("{name}-")) + ".log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary(name))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn");
        crate::logs::register_process_log(&log);
        Self { child, log }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
