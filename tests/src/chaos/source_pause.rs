//! mongo-source stopped (SIGSTOP) inside a Kafka transaction for longer
//! than its `transaction.timeout.ms` (2 s here) plus the broker's check for
//! timed-out transactions (10 s), but within its lease (45 s here): the
//! broker aborts the transaction and bumps the producer's epoch; on SIGCONT
//! the stream must abort, reopen its producer and resume from its last
//! committed position (`mongo_source_errors_total{reason=
//! "transaction_timeout"}`), not park as fenced while holding its lease.
//!
//! The process stops itself through the test-only fault switch right
//! after a transaction's records were written (`source.txn.stop`, at a
//! seeded random transaction), so the pause always catches an open
//! transaction under the load.

use super::run::{Run, Setup};
use rand::Rng;
use std::time::{Duration, Instant};

/// Short transaction timeout, long lease, and the stop point armed.
pub fn setup(s: &mut Setup) {
    s.source("MONGO_SOURCE__KAFKA__TRANSACTION_TIMEOUT_MS", 2_000);
    s.source("MONGO_SOURCE__CLUSTER__SESSION_TIMEOUT_MS", 45_000);
    s.source("MONGO_SOURCE__CLUSTER__HEARTBEAT_INTERVAL_MS", 3_000);
    // Past the snapshot and the run's first probe (about 10 transactions a
    // second under the load).
    let skip = s.rng.random_range(150..300);
    let point = format!(
        "source.txn.stop:{}.{}.card=1@{skip}",
        s.p.source.prefix, s.p.source.db
    );
    s.source(shared::faults::ENV, point);
}

/// Waits for the stop, holds it, resumes.
pub async fn inject(run: &mut Run) {
    let stream = format!("{}.card", run.p.source.db);
    let t = Instant::now();
    crate::eventually(
        "mongo-source stopped itself in a transaction (the fault switch: build with \
         `cargo build --workspace --bins`)",
        Duration::from_secs(180),
        || async { Run::is_stopped(&run.source).then_some(()) },
    )
    .await;
    let waited = t.elapsed();
    let pause = run.pick_ms(12_500..14_000, 12_500..20_000);
    tokio::time::sleep(pause).await;
    Run::signal(&run.source, "-CONT");
    let timeouts =
        format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"transaction_timeout\"}}");
    let fenced = format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"fenced\"}}");
    let n = crate::eventually(
        "the timed-out transaction seen and the producer reopened",
        Duration::from_secs(60),
        || async {
            let n = run.source_metric(&timeouts).await;
            (n >= 1.0).then_some(n)
        },
    )
    .await;
    assert_eq!(run.source_metric(&fenced).await, 0.0, "not a fencing");
    run.note = format!(
        "stopped in a transaction after {:.0} s, for {:.1} s; {n} timed-out transaction(s)",
        waited.as_secs_f64(),
        pause.as_secs_f64()
    );
}
