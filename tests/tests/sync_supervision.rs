//! es-sync's consumer against the real Kafka and Elasticsearch: a task that
//! panics restarts its partition and loses nothing; lag reaches zero after
//! transactional producers (a transaction marker is not a record); a
//! coordinated replay whose leave cannot finish (Elasticsearch frozen) is
//! called off and loses nothing.

use e2e_tests::private_stack::PrivateElasticsearch;
use e2e_tests::sync_support::*;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn start_with_status(
    cfg: es_sync::config::SyncConfig,
) -> (
    Arc<es_sync::status::SyncStatus>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let status = Arc::new(es_sync::status::SyncStatus::new(&cfg.kafka.group_id));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(es_sync::run_with_status(
        cfg,
        shutdown.clone(),
        status.clone(),
    ));
    (status, shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_bulk_task_restarts_its_partition_and_loses_nothing() {
    let n = Names::new("panic");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let t = 1_700_009_000;
    let ids: Vec<String> = (0..20).map(|k| oid(9000 + k)).collect();
    for (k, id) in ids.iter().enumerate() {
        produce(
            &p,
            &n.topic,
            id,
            &native("insert", id, t, k as u32 + 1, Some(card(id, "x", 1))),
            None,
        )
        .await;
    }
    es_sync::test_faults::panic_once_on(Some(&ids[7]));
    let port = e2e_tests::free_port();
    let mut cfg = config(&n);
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    let (_status, shutdown, task) = start_with_status(cfg);
    let alias = n.alias.clone();
    eventually(WAIT, "every document, the panicked ones again", || async {
        (all_docs(&alias).await.len() == ids.len()).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let metrics = e2e_tests::http_get(port, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(
        e2e_tests::metric_value(&metrics, "es_sync_task_panics_total"),
        Some(1.0),
        "{metrics}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(read_topic_for(&n.dlq, Duration::from_secs(2))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_reaches_zero_after_transactional_producers() {
    let n = Names::new("lag");
    create_topic(&n.topic, 1).await;
    // Records written in Kafka transactions, like mongo-source writes them:
    // each commit adds a marker after the records.
    let tx: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("transactional.id", format!("lag-test-{}", uid()))
        .create()
        .expect("transactional producer");
    let init = tx.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("init transactions");
    let t = 1_700_009_500;
    for round in 0..3u32 {
        tx.begin_transaction().expect("begin");
        for k in 0..5u32 {
            let id = oid(9500 + u64::from(round * 5 + k));
            let ev = native("insert", &id, t, round * 5 + k + 1, Some(card(&id, "x", 1)));
            tx.send(
                FutureRecord::to(&n.topic).key(&id).payload(&ev),
                Duration::from_secs(10),
            )
            .await
            .expect("send");
        }
        let commit = tx.clone();
        tokio::task::spawn_blocking(move || commit.commit_transaction(Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("commit");
    }
    let (status, shutdown, task) = start_with_status(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "15 documents", || async {
        (all_docs(&alias).await.len() == 15).then_some(())
    })
    .await;
    let lag = eventually(WAIT, "lag 0 on /status", || async {
        let parts = status.partitions();
        let p = parts.first()?;
        (p.lag_records == Some(0)).then_some(p.clone())
    })
    .await;
    assert_eq!(lag.high_watermark, Some(18), "15 records and 3 markers");
    // The committed offset passes the last marker too: external lag
    // monitors read 0.
    let (g, topic) = (n.group.clone(), n.topic.clone());
    eventually(WAIT, "group lag 0", || {
        let (g, topic) = (g.clone(), topic.clone());
        async move {
            let l = tokio::task::spawn_blocking(move || group_lag(&g, &topic))
                .await
                .ok()??;
            (l == 0).then_some(())
        }
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinated_replay_that_cannot_leave_is_called_off_and_loses_nothing() {
    let node = PrivateElasticsearch::start();
    let n = Names::new("coordfrozen");
    create_topic(&n.topic, 1).await;
    let port = e2e_tests::free_port();
    let mut cfg = config(&n);
    cfg.elasticsearch.url = node.url();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    cfg.admin.token = Some(shared::config::Secret::new("op"));
    // A leave waits for in-flight work up to shutdown_timeout_ms + 10 s.
    cfg.consumer.shutdown_timeout_ms = 1000;
    cfg.bulk.max_actions = 10;
    let (_status, shutdown, task) = start_with_status(cfg.clone());
    let p = producer();
    let t = 1_700_009_800;
    let event = |k: u64| {
        let id = oid(9800 + k);
        let ev = native("insert", &id, t, k as u32 + 1, Some(card(&id, "x", 1)));
        (id, ev)
    };
    for k in 0..30 {
        let (id, ev) = event(k);
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    eventually(WAIT, "the first 30", || async {
        (node.versions(&n.alias).await.len() == 30).then_some(())
    })
    .await;
    // Elasticsearch frozen: a request hangs, the leave cannot finish.
    node.pause();
    for k in 30..60 {
        let (id, ev) = event(k);
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replay_cfg = cfg.clone();
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        es_sync::ops::replay::execute(
            &replay_cfg,
            es_sync::ops::replay::Request {
                group: None,
                topics: vec![],
                target: es_sync::ops::replay::Target::Earliest,
                dry_run: false,
                coordinate: vec![url],
            },
        )
    })
    .await
    .unwrap();
    let err = out.expect_err("the leave cannot finish while Elasticsearch is frozen");
    assert!(err.to_string().contains("group/leave"), "{err}");
    node.resume();
    // Called off: every record, those received during the leave too, lands.
    eventually(Duration::from_secs(90), "all 60 documents", || async {
        (node.versions(&n.alias).await.len() == 60).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
