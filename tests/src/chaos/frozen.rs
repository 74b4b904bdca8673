//! Elasticsearch frozen (SIGSTOP: connections stay open, nothing answers)
//! at the moment an operator acts on es-sync:
//!
//! - SIGTERM to es-sync: it must exit 0 within `consumer.shutdown_timeout_ms`
//!   (5 s here) plus a margin, abandoning the bulks that hang (they are
//!   redelivered from the last committed offset by the next es-sync, which
//!   is started once Elasticsearch is thawed);
//! - `es-sync replay --coordinate` (to the earliest offsets): the leave
//!   cannot finish while a bulk hangs, so the replay is called off and the
//!   instance rejoins with every record still to do (or, when no bulk was
//!   in flight at that moment, the leave completes and the replay
//!   succeeds); either way nothing may be lost. Once Elasticsearch is
//!   thawed the same replay is run again and must succeed.

use super::run::{Run, Setup};
use super::Fault;
use std::time::{Duration, Instant};

/// es-sync's shutdown grace in these runs (ms).
const SHUTDOWN_MS: u64 = 5_000;
/// Token of the admin endpoints a coordinated replay calls.
const TOKEN: &str = "chaos-operator";

/// Settings of the frozen-Elasticsearch runs.
pub fn setup(fault: Fault, s: &mut Setup) {
    s.sync("ES_SYNC__CONSUMER__SHUTDOWN_TIMEOUT_MS", SHUTDOWN_MS);
    if fault == Fault::FrozenEsReplay {
        s.sync("ES_SYNC__ADMIN__TOKEN", TOKEN);
    }
}

/// Injects one of the frozen-Elasticsearch faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    run.stack.servers(&["pause", "elasticsearch"], &[]).await;
    let frozen = Instant::now();
    // Bulks sent now hang.
    tokio::time::sleep(run.pick_ms(500..2_000, 500..4_000)).await;
    let outcome = match fault {
        Fault::FrozenEsSigterm => sigterm(run).await,
        Fault::FrozenEsReplay => replay(run).await,
        other => unreachable!("{other:?} is not a frozen-Elasticsearch fault"),
    };
    tokio::time::sleep(run.pick_ms(1_000..2_000, 1_000..8_000)).await;
    run.stack.servers(&["resume", "elasticsearch"], &[]).await;
    let thawed = frozen.elapsed();
    let after = match fault {
        Fault::FrozenEsSigterm => {
            run.sync = run.start_sync();
            String::new()
        }
        _ => {
            let t = Instant::now();
            let (ok, text) = coordinated_replay(run).await;
            assert!(ok, "the replay after the thaw failed: {text}");
            format!(
                "; after the thaw: moved, {} records to process, in {:.1} s",
                total_to_process(&text),
                t.elapsed().as_secs_f64()
            )
        }
    };
    run.note = format!("{outcome}; frozen {:.0} s{after}", thawed.as_secs_f64());
}

/// SIGTERM while Elasticsearch is frozen: exit 0 within the grace.
async fn sigterm(run: &mut Run) -> String {
    let t = Instant::now();
    let status = tokio::task::block_in_place(|| run.sync.terminate());
    let took = t.elapsed();
    assert!(
        status.success(),
        "es-sync exited {status} on SIGTERM with Elasticsearch frozen; log {}",
        run.sync.log.display()
    );
    assert!(
        took < Duration::from_millis(SHUTDOWN_MS) + Duration::from_secs(15),
        "es-sync took {took:?} to stop with Elasticsearch frozen"
    );
    format!("SIGTERM: exit 0 in {:.1} s", took.as_secs_f64())
}

/// A coordinated replay while Elasticsearch is frozen.
async fn replay(run: &mut Run) -> String {
    let t = Instant::now();
    let (ok, text) = coordinated_replay(run).await;
    let took = t.elapsed().as_secs_f64();
    if ok {
        format!("replay while frozen: done in {took:.1} s (no bulk in flight)")
    } else {
        assert!(
            text.contains("group/leave"),
            "a replay that could not leave says so: {text}"
        );
        format!("replay while frozen: called off in {took:.1} s")
    }
}

/// `es-sync replay --to-earliest --coordinate <this instance>`: success and
/// the output (stdout and stderr).
async fn coordinated_replay(run: &Run) -> (bool, String) {
    let url = format!("http://127.0.0.1:{}", run.p.sync_admin_port);
    let mut cmd = tokio::process::Command::new(crate::process::binary("es-sync"));
    cmd.args([
        "--config",
        run.sync_cfg(),
        "replay",
        "--group",
        &run.p.group,
        "--to-earliest",
        "--coordinate",
        &url,
    ]);
    for (k, v) in run.sync_env() {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the replay ends within 120 s")
        .expect("run es-sync replay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `total records to process: N` of a replay's output.
fn total_to_process(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("total records to process: "))
        .unwrap_or("?")
        .to_string()
}
