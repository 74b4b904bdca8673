//! `es-sync dlq replay` against the real Kafka and Elasticsearch: records
//! dead-lettered for a mapping conflict (one of them as a pointer) are
//! re-driven once the mapping accepts them, end indexed at their own
//! versions, and a second run re-drives nothing; other error types are
//! left alone by a filter; `--dry-run` writes nothing.

use e2e_tests::process::binary;
use e2e_tests::sync_support::*;
use elasticsearch::http::Method;
use es_sync::ops::dlq_replay::{self, Report, Request};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use shared::wire::dlq::headers as dlq_headers;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const MAPPING: &str = "mapper_parsing_exception";

fn bad_card(id: &str) -> serde_json::Value {
    let mut d = card(id, "나쁜 글", 0);
    d["likes"] = json!("many");
    d
}

/// The insert event of a bad card whose value takes exactly `len` bytes.
fn sized_bad_insert(id: &str, t: u32, i: u32, len: usize) -> Vec<u8> {
    let with_body = |body: String| {
        let mut d = bad_card(id);
        d["body"] = json!(body);
        native("insert", id, t, i, Some(d))
    };
    let fill = len - with_body(String::new()).len();
    let v = with_body("단풍".repeat(fill / 6) + &"x".repeat(fill % 6));
    assert_eq!(v.len(), len);
    v
}

async fn replay(cfg: &es_sync::SyncConfig, req: Request) -> Report {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || dlq_replay::run(&cfg, &req))
        .await
        .expect("replay task")
        .expect("replay")
}

fn row(r: &Report, error_type: &str) -> Option<(u64, u64, u64)> {
    r.rows
        .iter()
        .find(|x| x.error_type == error_type)
        .map(|x| (x.records, x.pointers, x.redriven))
}

/// Dead letters and marks of the dead-letter topic.
async fn dlq_contents(topic: &str) -> (Vec<ReadRecord>, Vec<ReadRecord>) {
    read_topic_for(topic, Duration::from_secs(3))
        .await
        .into_iter()
        .partition(|r| !r.headers.contains_key(dlq_headers::REDRIVEN))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_once_after_the_mapping_is_fixed() {
    let n = Names::new("redrive");
    create_topic(&n.topic, 2).await;
    create_topic(&n.dlq, 1).await;
    let p = producer_at(&kafka());
    let t = 1_700_030_000;
    let id = |k: u64| oid(300 + k);
    let send = |k: u64, partition: i32, ev: Vec<u8>| {
        let p = p.clone();
        let topic = n.topic.clone();
        async move {
            let h = OwnedHeaders::new().insert(Header {
                key: "op",
                value: Some("insert".as_bytes()),
            });
            let key = id(k);
            let r = FutureRecord::to(&topic)
                .partition(partition)
                .key(&key)
                .payload(&ev)
                .headers(h);
            p.send(r, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    };
    let insert = |k: u64, doc: serde_json::Value| native("insert", &id(k), t, k as u32, Some(doc));
    // Partition 0: good, bad, not JSON, good. Partition 1: bad, a bad one
    // whose record fits its topic (Kafka's default limit, 1,048,588 bytes)
    // but whose dead-letter copy with the reason would not (a pointer),
    // good.
    send(1, 0, insert(1, card(&id(1), "좋은 글", 1))).await;
    send(2, 0, insert(2, bad_card(&id(2)))).await;
    produce(&p, &n.topic, "junk", b"{not json", Some(0)).await;
    send(4, 0, insert(4, card(&id(4), "좋은 글", 4))).await;
    send(5, 1, insert(5, bad_card(&id(5)))).await;
    send(6, 1, sized_bad_insert(&id(6), t, 6, 1_048_250)).await;
    send(7, 1, insert(7, card(&id(7), "좋은 글", 7))).await;
    let cfg = config(&n);
    let running = start(cfg.clone());
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let (letters, marks) = dlq_contents(&n.dlq).await;
    assert_eq!((letters.len(), marks.len()), (4, 0));
    assert_eq!(
        letters
            .iter()
            .filter(|r| r.headers.contains_key(dlq_headers::POINTER))
            .count(),
        1,
        "the large one is a pointer"
    );
    let good = [id(1), id(4), id(7)];
    assert_eq!(all_docs(&n.alias).await.len(), good.len());

    // Dry run: what would be re-driven, nothing written.
    let dry = replay(
        &cfg,
        Request {
            dry_run: true,
            ..Request::default()
        },
    )
    .await;
    assert_eq!(dry.dead_letters, 4);
    assert_eq!(row(&dry, MAPPING), Some((3, 1, 0)));
    assert_eq!(row(&dry, "not_json"), Some((1, 0, 0)));
    assert_eq!(dry.redriven, 0);
    let port = e2e_tests::free_port();
    let file = write_config_file(&n, port);
    let out = std::process::Command::new(binary("es-sync"))
        .args(["--config", &file.display().to_string()])
        .args(["dlq", "replay", "--dry-run", "--quiet"])
        .output()
        .expect("run es-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with(MAPPING))
        .expect("a row per error type")
        .split_whitespace()
        .collect();
    assert_eq!(
        cli_row,
        [MAPPING, n.topic.as_str(), "3", "1", "0", "0"],
        "{stdout}"
    );
    assert!(stdout.contains("would be re-driven"), "{stdout}");
    assert_eq!(
        dlq_contents(&n.dlq).await.1.len(),
        0,
        "a dry run writes no mark"
    );

    // The operator fixes the mapping: `likes` now ignores what is not a number.
    let (s, body) = es_call(
        Method::Put,
        &format!("/{}/_mapping", n.alias),
        Some(json!({"properties": {"likes": {"type": "integer", "ignore_malformed": true}}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    let first = replay(
        &cfg,
        Request {
            error_types: vec![MAPPING.into()],
            ..Request::default()
        },
    )
    .await;
    assert_eq!(first.redriven, 3, "{}", first.render());
    assert_eq!(first.filtered_out, 1);
    assert_eq!(row(&first, MAPPING), Some((3, 1, 3)));
    let alias = n.alias.clone();
    let docs = eventually(WAIT, "the re-driven cards indexed", || async {
        let d = all_docs(&alias).await;
        (d.len() == 6).then_some(d)
    })
    .await;
    for k in [1u64, 2, 4, 5, 6, 7] {
        assert_eq!(
            docs[&id(k)].0,
            version(t, k as u32),
            "card {k} at its own version"
        );
    }
    assert_eq!(docs[&id(6)].1["likes"], json!("many"));
    assert!(
        docs[&id(6)].1["body"].as_str().map_or(0, str::len) > 1_000_000,
        "the pointer's original, whole"
    );
    // Re-driven to their own partitions, with where they came from.
    let redriven: Vec<ReadRecord> = read_topic_for(&n.topic, Duration::from_secs(3))
        .await
        .into_iter()
        .filter(|r| r.headers.contains_key(dlq_headers::REDRIVEN_FROM))
        .collect();
    let mut at: Vec<(String, i32)> = redriven
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                r.partition,
            )
        })
        .collect();
    at.sort();
    assert_eq!(at, vec![(id(2), 0), (id(5), 1), (id(6), 1)]);
    assert!(redriven
        .iter()
        .all(|r| r.headers.get("op").map(String::as_str) == Some("insert")));
    // (No `wait_caught_up` from here: the transactions' commit markers
    // count in the high watermark, issue 15 item 8.)
    let (letters, marks) = dlq_contents(&n.dlq).await;
    assert_eq!(
        (letters.len(), marks.len()),
        (4, 3),
        "indexed, not dead-lettered again"
    );

    // Run again: nothing re-driven twice.
    let second = replay(
        &cfg,
        Request {
            error_types: vec![MAPPING.into()],
            ..Request::default()
        },
    )
    .await;
    assert_eq!(second.redriven, 0, "{}", second.render());
    assert_eq!(second.already_redriven, 3);
    assert_eq!(second.selected(), 0);
    let everything = replay(
        &cfg,
        Request {
            dry_run: true,
            ..Request::default()
        },
    )
    .await;
    assert_eq!(row(&everything, MAPPING), None);
    assert_eq!(
        row(&everything, "not_json"),
        Some((1, 0, 0)),
        "only the bad record is left"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(all_docs(&n.alias).await.len(), 6);
    assert_eq!(dlq_contents(&n.dlq).await.1.len(), 3);
    running.stop().await;
}
