//! The log of what runs inside a test binary (mongo-source and es-sync
//! spawned as tasks, the verifier): written to one file per test binary
//! (`$TMPDIR/e2e-<binary>-<pid>.log`, level from `E2E_LOG`, `info` by
//! default), so a test that times out says where to look, and
//! [`crate::eventually`] quotes its last warnings in the failure message
//! (CI shows the end of a failed run, not the files it leaves).
//! Binaries spawned as processes log to files of their own
//! ([`crate::process`]); a timed-out wait quotes the last warnings of those
//! its own test started too (tests are told apart by their thread's name).

use std::path::PathBuf;
use std::sync::OnceLock;

static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Installs the file log once per test binary; its path (`None` when
/// another subscriber was installed first or the file cannot be made).
pub fn init() -> Option<&'static PathBuf> {
    FILE.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let name = exe.file_stem()?.to_string_lossy().into_owned();
        let path = std::env::temp_dir().join(format!("e2e-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).ok()?;
        let filter = tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init()
            .ok()?;
        Some(path)
    })
    .as_ref()
}

/// Logs of the binaries spawned as processes ([`crate::process::Proc`]),
/// each with the name of the thread (the test) that started it.
static SPAWNED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Notes the log of a process the current test spawned, so that a wait of
/// the same test that times out quotes it too.
pub fn register_process_log(path: &std::path::Path) {
    let test = current_test();
    if let Ok(mut v) = SPAWNED.lock() {
        v.push((test, path.to_path_buf()));
    }
}

/// libtest runs each test on a thread named after it; a tokio test's body
/// runs on that thread (`block_on`).
fn current_test() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

/// The path and the last `n` warnings and errors of the log, then those of
/// each process the current test spawned, for a failure message (empty
/// when there is no log).
pub fn tail_of_warnings(n: usize) -> String {
    let mut out = String::new();
    if let Some(path) = FILE.get().and_then(Option::as_ref) {
        out.push_str(&format!("\nin-process log: {}", path.display()));
        quote_warnings(&mut out, path, n);
    }
    let test = current_test();
    let mine: Vec<PathBuf> = SPAWNED
        .lock()
        .map(|v| {
            v.iter()
                .filter(|(t, _)| *t == test)
                .map(|(_, p)| p.clone())
                .collect()
        })
        .unwrap_or_default();
    for path in mine {
        out.push_str(&format!("\nprocess log: {}", path.display()));
        quote_warnings(&mut out, &path, n);
    }
    out
}

/// Appends the last `n` warnings and errors of the log at `path`.
fn quote_warnings(out: &mut String, path: &std::path::Path, n: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        // The tests' own Kafka readers stop at the end of each partition,
        // which librdkafka reports as an error: not news.
        .filter(|l| !l.contains("PartitionEOF"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if !tail.is_empty() {
        out.push_str(&format!("; its last {} warnings:\n", tail.len()));
        for l in tail {
            // At most 300 characters per line (on a character boundary).
            let cut: String = l.chars().take(300).collect();
            out.push_str(&cut);
            out.push('\n');
        }
    }
}
