//! The first SIGTERM/SIGINT asks for a graceful stop; a second one exits at
//! once with the shell's code for the signal. Real signals, sent to this
//! test process (its own binary, so no other test sees them).

#![allow(clippy::unwrap_used)] // test helpers: a failed call fails the test

use shared::shutdown::on_signal_with;
use std::process::Command;
use std::time::Duration;

fn send(signal: &str) {
    let pid = std::process::id().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_signal_stops_gracefully_the_second_exits_at_once() {
    let (exit_tx, exit_rx) = std::sync::mpsc::channel();
    let token = on_signal_with(move |code| {
        let _ = exit_tx.send(code);
    });
    send("-TERM");
    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .expect("the first SIGTERM cancels the token");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        exit_rx.try_recv().is_err(),
        "the first signal does not exit the process"
    );
    send("-INT");
    let code = tokio::task::spawn_blocking(move || exit_rx.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the second signal exits at once");
    assert_eq!(code, 130, "SIGINT's exit code");
}
