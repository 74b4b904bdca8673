//! es-sync's dead-letter topic against the real Kafka and Elasticsearch: a
//! dead letter always fits (the whole record when the topic takes it, a
//! pointer otherwise), and a dead-letter topic that cannot be written
//! holds the partition (shown on `/status`, counted, logged once) until it
//! can, then every bad record is dead-lettered once and committed.

use e2e_tests::private_stack::PrivateKafka;
use e2e_tests::process::Proc;
use e2e_tests::sync_support::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use shared::wire::dlq::{headers as dlq_headers, DlqPointer, POINTER_SCHEMA};
use shared::wire::event::SCHEMA;
use shared::wire::record_size::{batch_size, KAFKA_DEFAULT_MAX_MESSAGE_BYTES};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
/// mongo-source's shipped `kafka.message_max_bytes`.
const SOURCE_LIMIT: usize = 1_048_576;

/// The headers mongo-source writes on an event.
fn event_headers(op: &str, version: u64) -> Vec<(&'static str, String)> {
    vec![
        ("op", op.to_string()),
        ("version", version.to_string()),
        ("schema", SCHEMA.to_string()),
    ]
}

/// mongo-source's size of a record (`source/src/kafka/record.rs`,
/// `Record::wire_size`): what it compares with `kafka.message_max_bytes`.
fn source_size(key: &str, value: &[u8], headers: &[(&str, String)]) -> usize {
    key.len()
        + value.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
        + 128
}

/// A card insert whose `likes` is not a number (a mapping error for the
/// shipped mapping) and whose record takes exactly `size` bytes as
/// mongo-source counts them (the body is Korean text plus padding).
fn big_bad_card(id: &str, t: u32, i: u32, size: usize) -> Vec<u8> {
    let h = event_headers("insert", version(t, i));
    let with_body = |body: String| {
        let mut doc = card(id, "큰 글", 0);
        doc["likes"] = json!("many");
        doc["body"] = json!(body);
        native("insert", id, t, i, Some(doc))
    };
    let base = source_size(id, &with_body(String::new()), &h);
    let fill = size - base;
    let body = "단풍".repeat(fill / 6) + &"x".repeat(fill % 6);
    let v = with_body(body);
    assert_eq!(source_size(id, &v, &h), size);
    v
}

async fn produce_with_headers(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
    headers: &[(&str, String)],
) -> i64 {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let r = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value)
        .headers(h);
    p.send(r, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce")
        .offset
}

async fn get_json(port: u16, path: &str) -> Option<Value> {
    serde_json::from_str(&e2e_tests::http_get(port, path).await?).ok()
}

async fn metric(port: u16, line_start: &str) -> Option<f64> {
    let text = e2e_tests::http_get(port, "/metrics").await?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The offset `n.group` committed on partition `partition` of `n.topic`
/// on the brokers `b`.
async fn committed_now(b: &str, n: &Names, partition: i32) -> Option<i64> {
    let (b, g, t) = (b.to_string(), n.group.clone(), n.topic.clone());
    tokio::task::spawn_blocking(move || committed_at(&b, &g, &t, partition))
        .await
        .ok()
        .flatten()
}

/// Waits until that offset is `want`.
async fn wait_committed(b: &str, n: &Names, partition: i32, want: i64) {
    eventually(
        WAIT,
        &format!("partition {partition} committed to {want}"),
        || async { committed_now(b, n, partition).await.filter(|o| *o == want) },
    )
    .await;
}

fn header<'a>(r: &'a ReadRecord, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_es_sync_computes_is_the_one_the_broker_enforces() {
    // A topic whose limit is the computed size of a record: that record
    // is accepted, one byte more is refused by the broker.
    let headers = [
        ("op", "insert".to_string()),
        ("dlq.error.reason", "x".repeat(300)),
    ];
    let hs: Vec<(usize, Option<usize>)> = headers
        .iter()
        .map(|(k, v)| (k.len(), Some(v.len())))
        .collect();
    let len = 20_000;
    let limit = batch_size(Some(3), Some(len), &hs);
    assert_eq!(batch_size(Some(3), Some(len + 1), &hs), limit + 1);
    let topic = format!("test.size.{}", uid());
    create_topic_with(
        &kafka(),
        &topic,
        1,
        &[("max.message.bytes", &limit.to_string())],
    )
    .await;
    let p = producer_at(&kafka());
    let mut h = OwnedHeaders::new();
    for (k, v) in &headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let value = vec![b'v'; len];
    let fits = FutureRecord::to(&topic)
        .key("key")
        .payload(&value[..])
        .headers(h.clone());
    p.send(fits, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("a record of exactly the limit is accepted");
    let over = vec![b'v'; len + 1];
    let too_big = FutureRecord::to(&topic)
        .key("key")
        .payload(&over[..])
        .headers(h);
    let err = p
        .send(too_big, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
        .expect_err("one byte over the limit is refused");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
        "{err}"
    );
}

/// Runs es-sync on a topic holding a good card, a bad card of `size`
/// bytes (as mongo-source counts them) and another good card, with the
/// dead-letter topic created with `dlq_configs`; returns the one dead
/// letter, the offset of the bad record, its value, and the
/// `es_sync_dlq_records_total` lines.
async fn dead_letter_a_big_record(
    tag: &str,
    dlq_configs: &[(&str, &str)],
) -> (Names, ReadRecord, i64, Vec<u8>, String) {
    let n = Names::new(tag);
    create_topic(&n.topic, 1).await;
    create_topic_with(&kafka(), &n.dlq, 1, dlq_configs).await;
    let p = producer_at(&kafka());
    let t = 1_700_020_000;
    let (good1, bad, good2) = (oid(1), oid(2), oid(3));
    produce(
        &p,
        &n.topic,
        &good1,
        &native("insert", &good1, t, 1, Some(card(&good1, "a", 1))),
        Some(0),
    )
    .await;
    let big = big_bad_card(&bad, t, 2, SOURCE_LIMIT - 16);
    let bad_offset = produce_with_headers(
        &p,
        &n.topic,
        0,
        &bad,
        &big,
        &event_headers("insert", version(t, 2)),
    )
    .await;
    produce(
        &p,
        &n.topic,
        &good2,
        &native("insert", &good2, t, 3, Some(card(&good2, "b", 2))),
        Some(0),
    )
    .await;
    let mut cfg = config(&n);
    let port = e2e_tests::free_port();
    cfg.admin.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    let running = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let docs = all_docs(&n.alias).await;
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        vec![good1.clone(), good2.clone()],
        "the good cards indexed, the bad one not"
    );
    assert_eq!(docs[&good1].0, version(t, 1));
    assert_eq!(docs[&good2].0, version(t, 3));
    let dlq = read_topic_for(&n.dlq, Duration::from_secs(3)).await;
    assert_eq!(dlq.len(), 1, "dead-lettered once");
    let metrics = e2e_tests::http_get(port, "/metrics")
        .await
        .expect("metrics");
    let lines = metrics
        .lines()
        .filter(|l| l.starts_with("es_sync_dlq_records_total"))
        .collect::<Vec<_>>()
        .join("\n");
    running.stop().await;
    (
        n,
        dlq.into_iter().next().expect("one"),
        bad_offset,
        big,
        lines,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_just_under_the_source_limit_is_dead_lettered_as_a_pointer_at_the_default_limit() {
    // The DLQ topic keeps Kafka's default limit (1,048,588 bytes): the
    // bad record fits its own topic, but its copy plus the reason headers
    // does not fit the DLQ topic, so a pointer is written.
    let (n, d, bad_offset, big, metrics) = dead_letter_a_big_record("dlqptr", &[]).await;
    assert_eq!(
        header(&d, dlq_headers::POINTER),
        Some(POINTER_SCHEMA),
        "{:?}",
        d.headers
    );
    assert_eq!(
        header(&d, dlq_headers::ERROR_TYPE),
        Some("mapper_parsing_exception")
    );
    assert_eq!(
        header(&d, dlq_headers::OFFSET),
        Some(bad_offset.to_string().as_str())
    );
    let ptr = DlqPointer::from_json(d.payload.as_deref().expect("value")).expect("a pointer");
    assert_eq!(ptr.topic, n.topic);
    assert_eq!((ptr.partition, ptr.offset), (0, bad_offset));
    assert_eq!(ptr.key_bytes(), Some(oid(2).into_bytes()));
    assert_eq!(ptr.error_type, "mapper_parsing_exception");
    assert!(ptr.reason.contains("likes"), "{}", ptr.reason);
    assert_eq!(ptr.limit, KAFKA_DEFAULT_MAX_MESSAGE_BYTES as u64);
    assert_eq!(
        ptr.limit_source,
        format!("topic {} max.message.bytes", n.dlq)
    );
    assert!(ptr.size > ptr.limit, "{ptr:?}");
    assert!(
        d.payload.as_ref().map_or(0, Vec::len) < 4096,
        "the pointer is small"
    );
    assert!(
        metrics.contains(r#"es_sync_dlq_records_total{form="pointer"} 1"#),
        "{metrics}"
    );
    // The pointer leads to the original.
    let original = read_topic_for(&n.topic, Duration::from_secs(3))
        .await
        .into_iter()
        .find(|r| r.offset == ptr.offset)
        .expect("the original is still in its topic");
    assert_eq!(original.payload.as_deref(), Some(&big[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_just_under_the_source_limit_is_dead_lettered_whole_where_the_topic_takes_it() {
    // A DLQ topic created with room for the largest source record plus
    // its reason (2 MiB): es-sync reads that limit and copies the record.
    let (_n, d, bad_offset, big, metrics) =
        dead_letter_a_big_record("dlqcopy", &[("max.message.bytes", "2097152")]).await;
    assert_eq!(header(&d, dlq_headers::POINTER), None);
    assert_eq!(
        d.payload.as_deref(),
        Some(&big[..]),
        "the original value, unchanged"
    );
    assert_eq!(d.key.as_deref(), Some(oid(2).as_bytes()));
    assert_eq!(
        header(&d, "op"),
        Some("insert"),
        "the original headers kept"
    );
    assert_eq!(
        header(&d, dlq_headers::ERROR_TYPE),
        Some("mapper_parsing_exception")
    );
    assert_eq!(
        header(&d, dlq_headers::OFFSET),
        Some(bad_offset.to_string().as_str())
    );
    assert!(
        metrics.contains(r#"es_sync_dlq_records_total{form="copy"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dlq_topic_holds_the_partition_until_it_is_created() {
    // A broker that does not create topics, and no dead-letter topic.
    let kafka = PrivateKafka::start_without_auto_create();
    let b = kafka.bootstrap();
    let n = Names::new("dlqmissing");
    create_topic_with(&b, &n.topic, 2, &[]).await;
    let p = producer_at(&b);
    let t = 1_700_021_000;
    let ids: Vec<String> = (1..=5).map(|k| oid(100 + k)).collect();
    let ev = |k: usize, likes: Value| {
        let mut doc = card(&ids[k], "글", 0);
        doc["likes"] = likes;
        native("insert", &ids[k], t, k as u32 + 1, Some(doc))
    };
    // Partition 0: good, not JSON, good, mapping error, good.
    produce(&p, &n.topic, &ids[0], &ev(0, json!(1)), Some(0)).await;
    produce(&p, &n.topic, "junk", b"{not json", Some(0)).await;
    produce(&p, &n.topic, &ids[1], &ev(1, json!(2)), Some(0)).await;
    produce(&p, &n.topic, &ids[2], &ev(2, json!("many")), Some(0)).await;
    produce(&p, &n.topic, &ids[3], &ev(3, json!(3)), Some(0)).await;
    // Partition 1: good only.
    produce(&p, &n.topic, &ids[4], &ev(4, json!(4)), Some(1)).await;

    let port = e2e_tests::free_port();
    let cfg = write_config_file(&n, port);
    let cfg_s = cfg.display().to_string();
    let mut proc = Proc::start(
        "es-sync",
        &["--config", &cfg_s],
        &[("ES_SYNC__KAFKA__BOOTSTRAP_SERVERS", &b)],
    );
    let waiting = eventually(
        WAIT,
        "partition 0 waits for the dead-letter topic",
        || async {
            let st = get_json(port, "/status").await?;
            let p0 = st["partitions"]
                .as_array()?
                .iter()
                .find(|p| p["partition"] == json!(0))?
                .clone();
            p0["waiting"]
                .as_str()
                .map(|w| (w.to_string(), p0["state"].clone()))
        },
    )
    .await;
    assert!(
        waiting.0.contains(&n.dlq) && waiting.0.contains("does not exist"),
        "{waiting:?}"
    );
    assert!(
        waiting.0.contains("auto.create.topics.enable=false"),
        "{waiting:?}"
    );
    assert_eq!(waiting.1, json!("RETRYING"));
    // The other partition goes on.
    wait_committed(&b, &n, 1, 1).await;
    // Several retries pass; still waiting, one log line, nothing committed
    // past the first record to dead-letter (offset 1).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let errors = metric(
        port,
        r#"es_sync_dlq_write_errors_total{fault="missing_topic"}"#,
    )
    .await
    .unwrap_or(0.0);
    assert!(errors >= 3.0, "failed writes counted: {errors}");
    assert_eq!(metric(port, "es_sync_dlq_unavailable").await, Some(1.0));
    let c0 = committed_now(&b, &n, 0).await;
    assert!(
        c0.is_none_or(|o| o <= 1),
        "committed past a record not dead-lettered: {c0:?}"
    );
    let episode_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("cannot write to the dead-letter topic"))
            .count()
    };
    assert_eq!(episode_lines(&proc.log_text()), 1, "{}", proc.log_text());

    // The operator creates the topic: everything goes on.
    create_topic_with(&b, &n.dlq, 1, &[]).await;
    wait_committed(&b, &n, 0, 5).await;
    eventually(WAIT, "the wait cleared", || async {
        let st = get_json(port, "/status").await?;
        st["partitions"]
            .as_array()?
            .iter()
            .all(|p| p.get("waiting").is_none())
            .then_some(())
    })
    .await;
    let dlq = read_topic_at(&b, &n.dlq, Duration::from_secs(5)).await;
    let mut got: Vec<(String, String)> = dlq
        .iter()
        .map(|r| {
            (
                header(r, dlq_headers::OFFSET)
                    .unwrap_or_default()
                    .to_string(),
                header(r, dlq_headers::ERROR_TYPE)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("1".to_string(), "not_json".to_string()),
            ("3".to_string(), "mapper_parsing_exception".to_string()),
        ],
        "each bad record dead-lettered once"
    );
    let docs = all_docs(&n.alias).await;
    let want: Vec<String> = [0usize, 1, 3, 4].iter().map(|k| ids[*k].clone()).collect();
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), want);
    for k in [0usize, 1, 3, 4] {
        assert_eq!(docs[&ids[k]].0, version(t, k as u32 + 1));
    }
    assert_eq!(metric(port, "es_sync_dlq_unavailable").await, Some(0.0));
    let log = proc.log_text();
    assert_eq!(episode_lines(&log), 1, "one line per episode:\n{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("dead-letter topic writable again"))
            .count(),
        1,
        "{log}"
    );
    assert!(proc.terminate().success());
}
