//! A backlog spread over many partitions goes out in parallel bulk
//! requests (up to `bulk.max_in_flight`, one per partition at a time for
//! its order), and `es_sync_bulk_in_flight` shows how many requests were
//! in flight when each one started: 8 partitions, 2,000 records buffered
//! (250 per partition, less than a full bulk of 1,000 each).

use e2e_tests::sync_support::*;
use e2e_tests::{http_get, metric_value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_eight_partitions_uses_parallel_requests() {
    let n = Names::new("parallel");
    create_topic(&n.topic, 8).await;
    let p = producer();
    let t = 1_700_009_000;
    let total = 8_000u64;
    let mut sends = Vec::new();
    for i in 0..total {
        let id = oid(10_000 + i);
        let value = native(
            "insert",
            &id,
            t,
            u32::try_from(i).unwrap_or(0),
            Some(card(&id, "backlog", 1)),
        );
        let (p, topic) = (p.clone(), n.topic.clone());
        sends.push(async move { produce(&p, &topic, &id, &value, None).await });
    }
    futures::future::join_all(sends).await;

    let mut cfg = config(&n);
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    // 1000 actions and 4 in flight as shipped; 250 records per partition.
    cfg.bulk.max_actions = 1000;
    cfg.consumer.max_buffered_records = 2_000;
    let run = start(cfg);
    let metrics =
        e2e_tests::eventually("the backlog indexed", Duration::from_secs(120), || async {
            let m = http_get(port, "/metrics").await?;
            let done = m
                .lines()
                .filter(|l| {
                    l.starts_with("es_sync_documents_total{") && l.contains("outcome=\"indexed\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            (done >= total as f64).then_some(m)
        })
        .await;
    run.stop().await;
    let started = metric_value(&metrics, "es_sync_bulk_in_flight_count").expect("count");
    let alone =
        metric_value(&metrics, "es_sync_bulk_in_flight_bucket{le=\"1.0\"}").expect("bucket");
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("es_sync_bulk_in_flight")
                || l.starts_with("es_sync_bulk_bytes_count"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(started >= 8.0, "{started} bulks for {total} records");
    // Most bulks after the first find others in flight; a third is a
    // margin for the start and the tail of the run.
    assert!(
        (started - alone) * 3.0 >= started,
        "only {} of {started} bulks started beside another one:\n{}",
        started - alone,
        metrics
            .lines()
            .filter(|l| l.starts_with("es_sync_bulk_in_flight"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
