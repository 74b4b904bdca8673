//! es-sync against real Kafka and a private real Elasticsearch node with a
//! tiny write thread-pool queue (`ES_WRITE_QUEUE_SIZE=1`, started by the
//! test through `scripts/stack`), so bulk items are rejected with real 429s
//! (`es_rejected_execution_exception`):
//!
//! - with unbounded retries nothing is lost, every document is indexed with
//!   its own version, and the retries are counted;
//! - with a tiny `retry.max_elapsed_ms`, items still rejected when it runs
//!   out go to the dead-letter topic with the rejection as their reason, and
//!   indexed + dead-lettered is exactly the number of records.
//!
//! Load: 8 partitions and 8 bulk requests in flight into an index of 8
//! shards, so each bulk fans out into many shard-level writes, far more
//! than 2 write threads and a queue of 1 take at once.

use e2e_tests::private_stack::PrivateElasticsearch;
use e2e_tests::sync_support::*;
use es_sync::config::SyncConfig;
use es_sync::dlq::headers;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOTAL: u64 = 3000;
const PARTITIONS: i32 = 8;
const SHARDS: u64 = 8;
const T: u32 = 1_700_006_000;
const WAIT: Duration = Duration::from_secs(50);

/// The two tests each start a 512 MiB node; on 2 cores they run one at a
/// time.
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn id_of(k: u64) -> String {
    oid(20_000 + k)
}

/// Topic with `TOTAL` inserts (id k has version (T, k)), an index file of
/// `SHARDS` shards, and a config for the private node with an admin port.
async fn setup(n: &Names, node: &PrivateElasticsearch) -> (SyncConfig, u16) {
    create_topic(&n.topic, PARTITIONS).await;
    create_topic(&n.dlq, 1).await;
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cards_index_file()).expect("index file"))
            .expect("json");
    file["settings"]["number_of_shards"] = json!(SHARDS);
    let path = std::env::temp_dir().join(format!("cards-{SHARDS}-shards-{}.json", uid()));
    std::fs::write(&path, file.to_string()).expect("write index file");

    let p = producer();
    let events: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|k| {
            let id = id_of(k);
            let ev = native("insert", &id, T, k as u32, Some(card(&id, "x", 1)));
            (id, ev)
        })
        .collect();
    futures::future::join_all(
        events
            .iter()
            .map(|(id, ev)| produce(&p, &n.topic, id, ev, None)),
    )
    .await;

    let mut cfg = config(n);
    cfg.elasticsearch.url = node.url();
    cfg.topics[0].index_file = path;
    cfg.bulk.max_actions = 100;
    cfg.bulk.max_in_flight = 8;
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    (cfg, port)
}

async fn metrics(port: u16) -> String {
    e2e_tests::http_get(port, "/metrics")
        .await
        .expect("es-sync /metrics")
}

fn value(m: &str, sample: &str) -> u64 {
    e2e_tests::metric_value(m, sample).unwrap_or(0.0) as u64
}

/// Retried items whose reason is a write rejection (HTTP 429, whole request
/// or item, or `es_rejected_execution_exception` with another status).
fn rejection_retries(m: &str) -> u64 {
    value(m, r#"es_sync_retries_total{reason="429"}"#)
        + value(
            m,
            r#"es_sync_retries_total{reason="es_rejected_execution_exception"}"#,
        )
}

fn documents(m: &str, alias: &str, outcome: &str) -> u64 {
    value(
        m,
        &format!(r#"es_sync_documents_total{{index="{alias}",outcome="{outcome}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_write_rejections_are_retried_until_everything_is_indexed() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let node = PrivateElasticsearch::start_with(Some(1));
    let n = Names::new("rej");
    let (cfg, port) = setup(&n, &node).await;
    let started = Instant::now();
    let run = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let m = metrics(port).await;
    run.stop().await;

    let retries = rejection_retries(&m);
    eprintln!(
        "real rejections: {retries} item retries ({} as 429, {} as es_rejected_execution_exception); \
         caught up in {:?}",
        value(&m, r#"es_sync_retries_total{reason="429"}"#),
        value(
            &m,
            r#"es_sync_retries_total{reason="es_rejected_execution_exception"}"#
        ),
        started.elapsed()
    );
    assert!(retries > 0, "the node rejected nothing; metrics:\n{m}");
    assert_eq!(
        documents(&m, &n.alias, "indexed"),
        TOTAL,
        "every record indexed once; metrics:\n{m}"
    );
    assert_eq!(
        documents(&m, &n.alias, "dead_lettered"),
        0,
        "nothing dead-lettered without retry.max_elapsed_ms; metrics:\n{m}"
    );
    // An item already applied and sent again would come back as a version
    // conflict: only the rejected items were sent again.
    assert_eq!(
        documents(&m, &n.alias, "conflicted"),
        0,
        "only rejected items are retried; metrics:\n{m}"
    );

    let docs = node.versions(&n.alias).await;
    assert_eq!(docs.len() as u64, TOTAL, "nothing lost");
    for k in 0..TOTAL {
        assert_eq!(
            docs.get(&id_of(k)).copied(),
            Some(version(T, k as u32)),
            "document {} indexed with its version",
            id_of(k)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_still_rejected_after_max_elapsed_go_to_the_dlq() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let node = PrivateElasticsearch::start_with(Some(1));
    let n = Names::new("exh");
    let (mut cfg, port) = setup(&n, &node).await;
    cfg.retry.initial_ms = 20;
    cfg.retry.max_ms = 50;
    cfg.retry.max_elapsed_ms = 100;
    let run = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let m = metrics(port).await;
    run.stop().await;

    let indexed = documents(&m, &n.alias, "indexed");
    let dead = documents(&m, &n.alias, "dead_lettered");
    let retries = rejection_retries(&m);
    eprintln!("indexed {indexed}, dead-lettered {dead}, rejection retries {retries}");
    assert_eq!(
        indexed + dead,
        TOTAL,
        "every record indexed or dead-lettered; metrics:\n{m}"
    );
    assert!(dead > 0, "no item ran out of retries; metrics:\n{m}");
    assert_eq!(
        documents(&m, &n.alias, "conflicted"),
        0,
        "only rejected items are retried; metrics:\n{m}"
    );
    assert!(retries > 0, "rejections counted; metrics:\n{m}");

    let docs = node.versions(&n.alias).await;
    assert_eq!(docs.len() as u64, indexed, "indexed documents are there");
    let dlq = read_topic(&n.dlq, dead as usize, WAIT).await;
    let mut dead_ids = BTreeSet::new();
    for r in &dlq {
        assert_eq!(
            r.headers.get(headers::ERROR_TYPE).map(String::as_str),
            Some("retries_exhausted"),
            "{r:?}"
        );
        let reason = &r.headers[headers::ERROR_REASON];
        assert!(
            reason.contains("429") || reason.contains("es_rejected_execution_exception"),
            "reason names the rejection: {reason}"
        );
        assert_eq!(r.headers[headers::TOPIC], n.topic, "{r:?}");
        assert_eq!(r.headers[headers::INDEX], n.alias, "{r:?}");
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf-8 key");
        dead_ids.insert(key);
    }
    assert_eq!(dead_ids.len() as u64, dead, "one DLQ record per dead item");
    for k in 0..TOTAL {
        let id = id_of(k);
        match docs.get(&id) {
            Some(v) => {
                assert_eq!(*v, version(T, k as u32), "{id} indexed with its version");
                assert!(
                    !dead_ids.contains(&id),
                    "{id} both indexed and dead-lettered"
                );
            }
            None => assert!(
                dead_ids.contains(&id),
                "{id} neither indexed nor dead-lettered"
            ),
        }
    }
}
