//! Chaos: under a steady mixed write load on `card` and `reply`, each fault
//! of the suite (`e2e_tests::chaos`, one module per family of faults) is
//! injected in turn, at a seeded random moment, on a private copy of the
//! bench; after each run the load stops and the pipeline must reach
//! Elasticsearch equal to MongoDB, `es-sync verify` 0 missing / 0 stale /
//! 0 extra on both topics, no change event seen twice by a read_committed
//! consumer, dead letters only for documents bad by themselves, and exit
//! status 0 of both binaries on SIGTERM.
//!
//! Which faults: `CHAOS_FAULTS` (names, comma-separated), else
//! `CHAOS_SUITE=full` (every fault; `scripts/chaos`) or the short suite
//! (default; `scripts/test`: [`Fault::SHORT`], short durations).
//! `CHAOS_ROUNDS` runs of each (default 1), seeded by `CHAOS_SEED`. One
//! line per run is printed, and the table is written to `CHAOS_REPORT`
//! when set (after every run, so a failed suite leaves its rows).

use e2e_tests::chaos::report::{table, Row};
use e2e_tests::chaos::run::run_fault;
use e2e_tests::chaos::stack::ChaosStack;
use e2e_tests::chaos::Fault;
use std::sync::Arc;
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The faults to run and whether they are the short suite.
fn selection() -> (Vec<Fault>, bool) {
    if let Ok(list) = std::env::var("CHAOS_FAULTS") {
        let faults = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| Fault::parse(s).unwrap_or_else(|| panic!("CHAOS_FAULTS: no fault {s:?}")))
            .collect();
        let short = std::env::var("CHAOS_SUITE").as_deref() != Ok("full");
        return (faults, short);
    }
    match std::env::var("CHAOS_SUITE").as_deref() {
        Ok("full") => (Fault::ALL.to_vec(), false),
        Ok("short") | Err(_) => (Fault::SHORT.to_vec(), true),
        Ok(other) => panic!("CHAOS_SUITE={other}: expected short or full"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_under_load_lose_nothing_and_duplicate_nothing() {
    let (faults, short) = selection();
    let rounds: usize = env_or("CHAOS_ROUNDS", 1);
    let seed: u64 = env_or("CHAOS_SEED", 20261201);
    let report = std::env::var("CHAOS_REPORT").ok();
    let started = Instant::now();
    let stack = Arc::new(ChaosStack::start().await);
    let mut rows: Vec<Row> = Vec::new();
    for (k, fault) in faults.iter().enumerate() {
        for round in 0..rounds {
            let run_seed = seed ^ ((k as u64) << 32) ^ round as u64;
            let t = Instant::now();
            let task = tokio::spawn(run_fault(stack.clone(), *fault, round, run_seed, short));
            let row = match task.await {
                Ok(row) => row,
                Err(e) => {
                    let why = match e.try_into_panic() {
                        Ok(p) => p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panicked".into()),
                        Err(e) => e.to_string(),
                    };
                    Row::failed(fault.name(), round, why)
                }
            };
            stack.heal().await;
            eprintln!("{} ({:.0} s)", row.line(), t.elapsed().as_secs_f64());
            rows.push(row);
            if let Some(path) = &report {
                std::fs::write(path, table(&rows)).expect("write the report");
            }
        }
    }
    eprintln!(
        "\n{}\nsuite: {:.1} min",
        table(&rows),
        started.elapsed().as_secs_f64() / 60.0
    );
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.problems.is_empty())
        .map(Row::line)
        .collect();
    assert!(failed.is_empty(), "failed runs:\n{}", failed.join("\n"));
}
