//! es-sync against real Kafka and a private real Elasticsearch node that the
//! test freezes (SIGSTOP through `scripts/stack pause`) while records keep
//! arriving: consumption pauses with at most `consumer.max_buffered_records`
//! records held, and after the node is thawed every document is indexed
//! with its version, nothing lost. While the node is frozen es-sync
//! sleeps: with every request slot taken it must not spin on a linger
//! deadline already past (it did, stealing a core from Elasticsearch).
//!
//! The other bound, librdkafka's prefetch, is far below the largest record
//! a deployment accepts; such a record still passes whole.

use e2e_tests::private_stack::PrivateElasticsearch;
use e2e_tests::sync_support::*;
use es_sync::status::SyncStatus;
use serde_json::json;
use shared::admin::AdminState;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(40);
const T: u32 = 1_700_007_000;
const MAX_BUFFERED: u64 = 100;

/// CPU seconds (user + system) used so far by this test process, which
/// runs es-sync in-process.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks (100 per second).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

async fn metric(port: u16, sample: &str) -> Option<f64> {
    let m = e2e_tests::http_get(port, "/metrics").await?;
    e2e_tests::metric_value(&m, sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_elasticsearch_pauses_consumption_and_loses_nothing() {
    let node = PrivateElasticsearch::start();
    let n = Names::new("bp");
    // Two partitions and one request slot: while the request of one
    // partition hangs, the other partition has records past their linger.
    create_topic(&n.topic, 2).await;
    let mut cfg = config(&n);
    cfg.elasticsearch.url = node.url();
    cfg.bulk.max_actions = 20;
    cfg.bulk.max_in_flight = 1;
    cfg.consumer.max_buffered_records = MAX_BUFFERED as usize;
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    let status = Arc::new(SyncStatus::new(&n.group));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(es_sync::run_with_status(
        cfg,
        shutdown.clone(),
        status.clone(),
    ));

    let p = producer();
    let event = |k: u64| {
        let id = oid(30_000 + k);
        let ev = native("insert", &id, T, k as u32, Some(card(&id, "x", 1)));
        (id, ev)
    };
    // Warm-up: the index exists and es-sync writes.
    let warm = 50u64;
    for k in 0..warm {
        let (id, ev) = event(k);
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    eventually(WAIT, "warm-up documents indexed", || async {
        (node.versions(&n.alias).await.len() as u64 == warm).then_some(())
    })
    .await;

    // Freeze the node; records keep arriving for a while.
    let total = warm + 1000;
    node.pause();
    let frozen = Instant::now();
    let producing = {
        let (p, topic) = (p.clone(), n.topic.clone());
        let events: Vec<_> = (warm..total).map(event).collect();
        tokio::spawn(async move {
            for chunk in events.chunks(100) {
                futures::future::join_all(
                    chunk
                        .iter()
                        .map(|(id, ev)| produce(&p, &topic, id, ev, None)),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut max_buffered = 0u64;
    let mut paused_metric = false;
    let mut paused_status = false;
    let mut cpu_window: Option<(Instant, f64)> = None;
    while frozen.elapsed() < Duration::from_secs(6) {
        if cpu_window.is_none() && frozen.elapsed() >= Duration::from_secs(1) {
            cpu_window = Some((Instant::now(), process_cpu_seconds()));
        }
        let s = status.status();
        max_buffered = max_buffered.max(s["buffered_records"].as_u64().unwrap_or(0));
        paused_status |= s["paused"] == json!(true);
        if let Some(b) = metric(port, "es_sync_buffered_records").await {
            max_buffered = max_buffered.max(b as u64);
        }
        paused_metric |= metric(port, "es_sync_consumer_paused").await == Some(1.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (since, cpu0) = cpu_window.expect("cpu window started");
    let busy = (process_cpu_seconds() - cpu0) / since.elapsed().as_secs_f64();
    producing.await.expect("producer task");
    let lag_while_frozen = tokio::task::spawn_blocking({
        let (g, t) = (n.group.clone(), n.topic.clone());
        move || group_lag(&g, &t)
    })
    .await
    .expect("lag");
    node.resume();
    eprintln!(
        "while frozen: max buffered {max_buffered}, paused metric {paused_metric}, \
         paused status {paused_status}, group lag {lag_while_frozen:?}, \
         process CPU {:.0}% of a core",
        busy * 100.0
    );
    // A spinning loop takes a whole core (~100%); a sleeping one, plus this
    // test's own polling and producing, a few percent.
    assert!(
        busy < 0.4,
        "es-sync busy while Elasticsearch was frozen: {:.0}% of a core",
        busy * 100.0
    );
    assert!(
        paused_metric && paused_status,
        "consumption paused while Elasticsearch was frozen \
         (es_sync_consumer_paused 1: {paused_metric}, /status paused: {paused_status})"
    );
    assert!(
        max_buffered <= MAX_BUFFERED,
        "buffer bounded by consumer.max_buffered_records ({MAX_BUFFERED}): {max_buffered}"
    );
    assert!(
        lag_while_frozen.is_some_and(|l| l as u64 >= total - warm - MAX_BUFFERED),
        "records left in Kafka while frozen: {lag_while_frozen:?}"
    );

    let resumed = Instant::now();
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    eventually(WAIT, "consumption resumed", || async {
        (metric(port, "es_sync_consumer_paused").await == Some(0.0)).then_some(())
    })
    .await;
    let docs = node.versions(&n.alias).await;
    eprintln!("after thaw: caught up in {:?}", resumed.elapsed());
    assert_eq!(docs.len() as u64, total, "nothing lost");
    for k in 0..total {
        let (id, _) = event(k);
        assert_eq!(
            docs.get(&id).copied(),
            Some(version(T, k as u32)),
            "{id} indexed with its version"
        );
    }
    let m = e2e_tests::http_get(port, "/metrics")
        .await
        .expect("metrics");
    assert_eq!(
        e2e_tests::metric_value(
            &m,
            &format!(
                r#"es_sync_documents_total{{index="{}",outcome="indexed"}}"#,
                n.alias
            )
        ),
        Some(total as f64),
        "{m}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("es-sync stops")
        .expect("task")
        .expect("run ok");
}

/// The deployment's largest record: mongo-source's `kafka.message_max_bytes`
/// (deploy/config/mongo-source.toml), under its topics' `max.message.bytes`
/// of 5 MiB (docker-compose.yml).
const DEPLOYMENT_RECORD: usize = 4 * 1024 * 1024;
const DEPLOYMENT_TOPIC_LIMIT: &str = "5242880";

/// A consumer config value as a number.
fn fetch_limit(cc: &rdkafka::ClientConfig, key: &str) -> usize {
    cc.get(key)
        .unwrap_or_else(|| panic!("{key} is set"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// es-sync's prefetch bounds are far smaller than the largest record the
/// deployment accepts (64 KiB per partition and 1 MiB per fetch against
/// 4 MiB), and the deployment no longer raises them: a fetch still brings
/// a whole record batch larger than both (KIP-74), so such a record is
/// indexed, whole, between its neighbours, and never stuck or
/// dead-lettered. The record goes uncompressed, so its batch is as large
/// as the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_as_large_as_the_deployment_allows_passes_the_prefetch_bounds() {
    let n = Names::new("fetch");
    create_topic_with(
        &kafka(),
        &n.topic,
        1,
        &[("max.message.bytes", DEPLOYMENT_TOPIC_LIMIT)],
    )
    .await;
    create_topic(&n.dlq, 1).await;
    let mut cfg = config(&n);
    // The deployment's request limit (deploy/config/es-sync.toml): one
    // record of up to the topic limit fits a request.
    cfg.bulk.max_bytes = 5 << 20;
    // The subject is the Kafka side: the node does not analyse 4 MiB of
    // Korean (the stack's node, 512 MiB of heap, serves the whole suite;
    // with the cards' analysers its memory breaker refused the read-back
    // once in `scripts/test`).
    let index_file = std::env::temp_dir().join(format!("{}-index.json", n.alias));
    std::fs::write(
        &index_file,
        json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0},
               "mappings": {"dynamic": false}})
        .to_string(),
    )
    .expect("index file");
    cfg.topics[0].index_file = index_file;
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    let cc = es_sync::consumer::consumer_config(&cfg, &n.group);

    let big_id = oid(70_001);
    let mut big_card = card(&big_id, "큰 글", 1);
    let empty = native("insert", &big_id, T, 2, Some(big_card.clone())).len();
    // Korean text (3 bytes a character) up to the deployment's limit.
    let body = "단풍".repeat((DEPLOYMENT_RECORD - empty - 1_000) / 6);
    big_card["body"] = json!(body);
    let big = native("insert", &big_id, T, 2, Some(big_card));
    assert!(big.len() <= DEPLOYMENT_RECORD && big.len() > DEPLOYMENT_RECORD - 2_000);
    for key in ["fetch.max.bytes", "max.partition.fetch.bytes"] {
        assert!(
            fetch_limit(&cc, key) * 3 < big.len(),
            "the record ({} bytes) is over 3x es-sync's {key}",
            big.len()
        );
    }

    let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("message.max.bytes", DEPLOYMENT_TOPIC_LIMIT)
        .set("compression.type", "none")
        .set("acks", "all")
        .create()
        .expect("producer");
    let (before, after) = (oid(70_000), oid(70_002));
    let records = [
        (
            &before,
            native("insert", &before, T, 1, Some(card(&before, "before", 1))),
        ),
        (&big_id, big),
        (
            &after,
            native("insert", &after, T, 3, Some(card(&after, "after", 1))),
        ),
    ];
    for (id, value) in &records {
        produce(&p, &n.topic, id, value, Some(0)).await;
    }

    cfg.validate().expect("the test's config");
    let run = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let metrics = e2e_tests::http_get(port, "/metrics")
        .await
        .expect("metrics");
    run.stop().await;

    let docs = all_docs(&n.alias).await;
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        vec![before.clone(), big_id.clone(), after.clone()]
    );
    assert_eq!(docs[&before].0, version(T, 1));
    assert_eq!(docs[&big_id].0, version(T, 2));
    assert_eq!(docs[&after].0, version(T, 3));
    assert_eq!(
        docs[&big_id].1["body"].as_str().map(str::len),
        Some(body.len()),
        "the large card indexed whole"
    );
    assert_eq!(
        e2e_tests::metric_sum(&metrics, "es_sync_dlq_records_total"),
        0.0,
        "nothing dead-lettered"
    );
    assert!(read_topic_for(&n.dlq, Duration::from_secs(2))
        .await
        .is_empty());
}
