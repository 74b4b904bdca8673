//! Both binaries: the first SIGTERM starts a graceful stop; a second one
//! while that runs ends the process at once (exit code 143), instead of
//! being swallowed until the grace period is over.
//!
//! The graceful stop is made slow by a real dependency that never answers:
//! a listening socket that accepts connections and never replies (MongoDB
//! for mongo-source, Elasticsearch for es-sync), so each binary is inside
//! a start-up call that only its own timeout (60 s here) ends.

use e2e_tests::process::Proc;
use e2e_tests::{eventually, free_port, http_get};
use std::net::TcpListener;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A server that accepts connections and never answers.
fn black_hole() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

fn term(p: &Proc) {
    let pid = p.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(status) = p.child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// SIGTERM; still running 2 s later (the stop is slow); SIGTERM again;
/// gone within 3 s with 143.
fn second_signal_ends_it(p: &mut Proc, name: &str) {
    term(p);
    assert!(
        wait_exit(p, Duration::from_secs(2)).is_none(),
        "{name}: the first SIGTERM's stop should be slow here (a dependency never answers); log:\n{}",
        p.log_text()
    );
    let second = Instant::now();
    term(p);
    let status = wait_exit(p, Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "{name}: still running 3 s after the second SIGTERM; log:\n{}",
            p.log_text()
        )
    });
    eprintln!(
        "{name}: exited {:.2} s after the second SIGTERM",
        second.elapsed().as_secs_f64()
    );
    assert_eq!(status.code(), Some(143), "{name}: {status:?}");
    assert!(p.log_text().contains("exiting at once"), "{}", p.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_source_exits_at_once_on_a_second_sigterm() {
    let (_mongo, mongo_port) = black_hole();
    let admin = free_port();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/mongo-source.toml");
    let mut p = Proc::start(
        "mongo-source",
        &["--config", cfg],
        &[
            (
                "MONGO_SOURCE__MONGODB__URI",
                &format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true"),
            ),
            (
                "MONGO_SOURCE__MONGODB__SERVER_SELECTION_TIMEOUT_MS",
                "60000",
            ),
            (
                "MONGO_SOURCE__KAFKA__BOOTSTRAP_SERVERS",
                &e2e_tests::kafka_bootstrap(),
            ),
            ("MONGO_SOURCE__ADMIN__LISTEN", &format!("127.0.0.1:{admin}")),
        ],
    );
    eventually("the admin server", Duration::from_secs(30), || {
        http_get(admin, "/healthz")
    })
    .await;
    // Inside the start-up ping of the black-hole MongoDB.
    tokio::time::sleep(Duration::from_millis(500)).await;
    second_signal_ends_it(&mut p, "mongo-source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_sync_exits_at_once_on_a_second_sigterm() {
    let (_es, es_port) = black_hole();
    let admin = free_port();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/es-sync.toml");
    let mut p = Proc::start(
        "es-sync",
        &["--config", cfg],
        &[
            (
                "ES_SYNC__ELASTICSEARCH__URL",
                &format!("http://127.0.0.1:{es_port}"),
            ),
            ("ES_SYNC__ELASTICSEARCH__REQUEST_TIMEOUT_MS", "60000"),
            (
                "ES_SYNC__KAFKA__BOOTSTRAP_SERVERS",
                &e2e_tests::kafka_bootstrap(),
            ),
            ("ES_SYNC__ADMIN__LISTEN", &format!("127.0.0.1:{admin}")),
        ],
    );
    // es-sync serves its admin endpoints only after the index bootstrap,
    // which the black-hole Elasticsearch never answers: wait until the
    // process has had time to start it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        p.child.try_wait().expect("try_wait").is_none(),
        "es-sync is running: {}",
        p.log_text()
    );
    second_signal_ends_it(&mut p, "es-sync");
}
