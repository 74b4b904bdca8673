//! Chaos: under a steady mixed write load on `card` and `reply`, each fault
//! is injected in turn (`CHAOS_ROUNDS` times, default 1; `scripts/chaos`
//! runs more), at a seeded random moment, on a private copy of the bench
//! (so server restarts disturb no other test). After each run the load
//! stops and the pipeline must reach: Elasticsearch equal to MongoDB
//! document by document, `es-sync verify` exit 0, and no change event seen
//! twice by a read_committed consumer. One line per run is printed (and
//! appended to `CHAOS_REPORT` when set).
//!
//! Elasticsearch write rejections: the node is restarted with a write
//! thread pool of one thread and a queue of one, a burst of writes makes
//! es-sync's bulks collide on it (real 429s, counted from es-sync's
//! `es_sync_retries_total`), then the node is restarted normally.
//! `sync_rejections.rs` tests rejections alone in more detail.

use e2e_tests::e2e::{es_documents, spawn_load, wait_equal, Pipeline};
use e2e_tests::kafka::read_all;
use e2e_tests::private_stack::PrivateStack;
use e2e_tests::process::Proc;
use mongodb::bson::{doc, Document};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillSource,
    KillSync,
    RestartKafka,
    RestartElasticsearch,
    RestartMongo,
    PauseSource,
    PauseSync,
    WriteRejections,
}

const FAULTS: [Fault; 8] = [
    Fault::KillSource,
    Fault::KillSync,
    Fault::RestartKafka,
    Fault::RestartElasticsearch,
    Fault::RestartMongo,
    Fault::PauseSource,
    Fault::PauseSync,
    Fault::WriteRejections,
];

/// Items es-sync retried because Elasticsearch rejected the write.
async fn rejection_retries(admin_port: u16) -> u64 {
    let m = e2e_tests::http_get(admin_port, "/metrics")
        .await
        .unwrap_or_default();
    [
        r#"es_sync_retries_total{reason="429"}"#,
        r#"es_sync_retries_total{reason="es_rejected_execution_exception"}"#,
    ]
    .iter()
    .filter_map(|k| e2e_tests::metric_value(&m, k))
    .sum::<f64>() as u64
}

fn signal(p: &Proc, sig: &str) {
    let pid = p.child.id().to_string();
    let _ = Command::new("kill").args([sig, &pid]).status();
}

/// Duplicated change events (same key and version) on `topic`.
async fn duplicates(topic: &str) -> usize {
    let mut seen = HashSet::new();
    read_all(topic)
        .await
        .into_iter()
        .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
        .filter(|r| !seen.insert((r.key.clone(), r.value["version"].as_u64())))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_lose_nothing_and_duplicate_nothing() {
    let stack = PrivateStack::start();
    for (k, v) in stack.env() {
        std::env::set_var(k, v);
    }
    let rounds: usize = std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261201);
    let mut rows = vec![];
    for fault in FAULTS {
        for round in 0..rounds {
            let p = Pipeline::new();
            let source_cfg = p.source.write();
            let sync_cfg = p.write_sync();
            let source_cfg = source_cfg.to_str().unwrap().to_string();
            let sync_cfg = sync_cfg.to_str().unwrap().to_string();
            let start_source = || Proc::start("mongo-source", &["--config", &source_cfg], &[]);
            let start_sync = || Proc::start("es-sync", &["--config", &sync_cfg], &[]);
            let mut source = start_source();
            let mut sync = start_sync();
            let db = e2e_tests::mongo().await.database(&p.source.db);
            let stop = Arc::new(AtomicBool::new(false));
            let load = spawn_load(&db, rng.random(), stop.clone());
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
            let mut note = String::new();
            let mut burst = 0u64;

            match fault {
                Fault::KillSource => {
                    source.kill9();
                    source = start_source();
                }
                Fault::KillSync => {
                    sync.kill9();
                    sync = start_sync();
                }
                Fault::RestartKafka => stack.run(&["restart", "kafka"]),
                Fault::RestartElasticsearch => stack.run(&["restart", "elasticsearch"]),
                Fault::RestartMongo => stack.run(&["restart", "mongodb"]),
                // Longer than the lease (6 s) and the group session (10 s).
                Fault::PauseSource => {
                    signal(&source, "-STOP");
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    signal(&source, "-CONT");
                }
                Fault::PauseSync => {
                    signal(&sync, "-STOP");
                    tokio::time::sleep(Duration::from_secs(12)).await;
                    signal(&sync, "-CONT");
                }
                Fault::WriteRejections => {
                    stack.run_with(
                        &["restart", "elasticsearch"],
                        &[("ES_WRITE_QUEUE_SIZE", "1"), ("ES_WRITE_THREADS", "1")],
                    );
                    let before = rejection_retries(p.sync_admin_port).await;
                    let mut w = e2e_tests::workload::Workload::new(rng.random());
                    let cards = db.collection::<Document>("card");
                    for _ in 0..6 {
                        let docs: Vec<Document> = (0..500).map(|_| w.card()).collect();
                        if cards.insert_many(docs).await.is_ok() {
                            burst += 500;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    let rejected = rejection_retries(p.sync_admin_port).await - before;
                    note = format!(" ({rejected} item retries on rejections, burst {burst})");
                    assert!(rejected > 0, "the node rejected no write during {fault:?}");
                    stack.run(&["restart", "elasticsearch"]);
                }
            }
            // Recovery: from the end of the fault until a new card is searchable.
            let fault_over = Instant::now();
            let probe = format!("probe-{round}");
            let cards = db.collection::<Document>("card");
            e2e_tests::eventually("the probe written", Duration::from_secs(120), || async {
                cards
                    .insert_one(doc! { "_id": &probe, "title": "probe" })
                    .await
                    .ok()
            })
            .await;
            e2e_tests::eventually("the probe searchable", Duration::from_secs(180), || async {
                es_documents(&p.cards)
                    .await
                    .contains_key(&probe)
                    .then_some(())
            })
            .await;
            let recovery = fault_over.elapsed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.store(true, Ordering::Relaxed);
            // A write cut by a MongoDB restart may fail: the load stops there.
            let writes = load.await.unwrap_or(0) + burst;

            wait_equal(&p, &db, Duration::from_secs(180)).await;
            let uri = e2e_tests::mongodb_uri();
            let verify = Command::new(e2e_tests::process::binary("es-sync"))
                .args([
                    "--config",
                    &sync_cfg,
                    "verify",
                    "--topic",
                    &p.source.topic("card"),
                    "--quiet",
                ])
                .env("MONGODB_URI", &uri)
                .output()
                .expect("verify");
            let dups = duplicates(&p.source.topic("card")).await
                + duplicates(&p.source.topic("reply")).await;
            let row = format!(
                "| {fault:?}{note} | {round} | {writes} | {:.1} s | {dups} | {} |",
                recovery.as_secs_f64(),
                if verify.status.success() {
                    "equal"
                } else {
                    "DIFFERENT"
                }
            );
            eprintln!("{row}");
            rows.push(row);
            assert!(
                verify.status.success(),
                "verify after {fault:?}: {}",
                String::from_utf8_lossy(&verify.stdout)
            );
            assert_eq!(dups, 0, "duplicates seen by read_committed after {fault:?}");
            assert!(
                source.terminate().success(),
                "mongo-source exit after {fault:?}\n{}",
                source.log_text()
            );
            assert!(
                sync.terminate().success(),
                "es-sync exit after {fault:?}\n{}",
                sync.log_text()
            );
        }
    }
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        let mut text = String::from("| fault | run | writes | recovery | duplicates | verifier |\n|---|---|---|---|---|---|\n");
        for r in &rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(path, text).expect("write report");
    }
}
