//! Kills, restarts and pauses (the suite's first faults): kill -9 of either
//! binary, a restart of each server, SIGSTOP of either binary past its
//! session, and Elasticsearch write rejections (the node restarted with
//! one write thread and a queue of one, a burst of writes so es-sync's
//! bulks collide on it: real 429s, counted from es-sync's
//! `es_sync_retries_total`; `sync_rejections.rs` tests rejections alone).

use super::run::Run;
use super::Fault;
use crate::workload::Workload;
use mongodb::bson::Document;
use rand::Rng;
use std::time::Duration;

/// Items es-sync retried because Elasticsearch rejected the write.
async fn rejection_retries(run: &Run) -> u64 {
    run.sync_metric(r#"es_sync_retries_total{reason="429"}"#)
        .await
        .max(0.0) as u64
        + run
            .sync_metric(r#"es_sync_retries_total{reason="es_rejected_execution_exception"}"#)
            .await
            .max(0.0) as u64
}

/// Injects one of the classic faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    match fault {
        Fault::KillSource => {
            run.source.kill9();
            run.source = run.start_source();
        }
        Fault::KillSync => {
            run.sync.kill9();
            run.sync = run.start_sync();
        }
        Fault::RestartKafka => run.stack.servers(&["restart", "kafka"], &[]).await,
        Fault::RestartElasticsearch => run.stack.servers(&["restart", "elasticsearch"], &[]).await,
        Fault::RestartMongo => run.stack.servers(&["restart", "mongodb"], &[]).await,
        // Longer than the lease (6 s) and the group session (10 s).
        Fault::PauseSource => {
            Run::signal(&run.source, "-STOP");
            tokio::time::sleep(Duration::from_secs(8)).await;
            Run::signal(&run.source, "-CONT");
        }
        Fault::PauseSync => {
            Run::signal(&run.sync, "-STOP");
            tokio::time::sleep(Duration::from_secs(12)).await;
            Run::signal(&run.sync, "-CONT");
        }
        Fault::WriteRejections => write_rejections(run).await,
        other => unreachable!("{other:?} is not a classic fault"),
    }
}

async fn write_rejections(run: &mut Run) {
    run.stack
        .servers(
            &["restart", "elasticsearch"],
            &[("ES_WRITE_QUEUE_SIZE", "1"), ("ES_WRITE_THREADS", "1")],
        )
        .await;
    let before = rejection_retries(run).await;
    let mut w = Workload::new(run.rng.random());
    let cards = run.db.collection::<Document>("card");
    for _ in 0..6 {
        let docs: Vec<Document> = (0..500).map(|_| w.card()).collect();
        if cards.insert_many(docs).await.is_ok() {
            run.extra_writes += 500;
        }
    }
    // Until the node has rejected some of the burst's writes (at most a
    // minute: on a loaded machine the burst reaches the node late; a burst
    // indexed with no rejection at all still fails below).
    let started = std::time::Instant::now();
    let mut rejected = 0;
    while rejected == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rejected = rejection_retries(run).await.saturating_sub(before);
    }
    run.note = format!(
        "{rejected} item retries on rejections, burst {}",
        run.extra_writes
    );
    assert!(rejected > 0, "the node rejected no write");
    run.stack.servers(&["restart", "elasticsearch"], &[]).await;
}
