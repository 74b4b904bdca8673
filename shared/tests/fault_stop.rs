//! A process stopped at a `stop_point` goes no further until SIGCONT: the
//! thread that reached the point is the one that stops. When the stop was
//! sent to the process by a `kill` child, another thread could take it and
//! the calling thread ran on; a paused-transaction test then saw the
//! transaction it meant to leave open committed 1.5 ms after the point
//! (`tests/tests/source_cluster.rs`).
#![cfg(all(target_os = "linux", feature = "faults"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child: where it writes once past the point.
const MARK: &str = "SHARED_FAULT_STOP_MARK";

/// The child's part (does nothing unless started by the test below): stops
/// at an armed point while another thread keeps a core busy, as in a
/// loaded process, then leaves a mark.
#[test]
fn child_stops_at_the_point() {
    let Some(mark) = std::env::var_os(MARK) else {
        return;
    };
    shared::faults::arm("test.stop", 1);
    std::thread::spawn(|| loop {
        std::hint::spin_loop();
    });
    shared::faults::stop_point(|| "test.stop".into());
    std::fs::write(mark, "past the point").expect("write the mark");
    std::process::exit(0);
}

fn state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_string)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn mark_path(round: usize) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shared-fault-stop-{}-{round}.mark",
        std::process::id()
    ))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

fn round(round: usize, mark: &Path) {
    let _ = std::fs::remove_file(mark);
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "child_stops_at_the_point", "--test-threads=1"])
        .env(MARK, mark)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    wait_for("the child to stop", || {
        state(pid).as_deref() == Some("T") || mark.exists()
    });
    // Time for a thread that was not stopped to run on.
    std::thread::sleep(Duration::from_millis(30));
    let early = mark.exists();
    signal(pid, "-CONT");
    let status = child.wait().expect("wait for the child");
    assert!(
        !early,
        "round {round}: the thread that reached the stop point ran on before SIGCONT"
    );
    assert!(status.success(), "round {round}: child {status}");
    assert!(
        mark.exists(),
        "round {round}: the child went on after SIGCONT"
    );
    let _ = std::fs::remove_file(mark);
}

#[test]
fn the_thread_that_reaches_a_stop_point_goes_no_further_until_sigcont() {
    if std::env::var_os(MARK).is_some() {
        return;
    }
    for r in 0..20 {
        round(r, &mark_path(r));
    }
}
