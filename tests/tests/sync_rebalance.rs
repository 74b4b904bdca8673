//! es-sync against real Kafka and Elasticsearch: two instances of one group
//! share the partitions; instances joining and leaving under load
//! (rebalances) lose nothing; the admin endpoints report readiness and
//! per-partition status.

use e2e_tests::sync_support::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);

async fn produce_round(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    t: u32,
    docs: u32,
    r: u32,
) {
    for k in 0..docs {
        let id = oid(30_000 + u64::from(k));
        let ev = native(
            "update",
            &id,
            t + r,
            k,
            Some(card(&id, &format!("round {r}"), i64::from(r))),
        );
        produce(p, topic, &id, &ev, None).await;
    }
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect admin");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_under_load_lose_nothing() {
    let n = Names::new("rebal");
    create_topic(&n.topic, 4).await;
    let p = producer();
    let t = 1_700_007_000;
    let docs = 200;
    let mut cfg_a = config(&n);
    let port_a = e2e_tests::free_port();
    cfg_a.admin.listen = ([127, 0, 0, 1], port_a).into();
    let a = start(cfg_a);
    produce_round(&p, &n.topic, t, docs, 0).await;

    // Admin endpoints of A: ready, and /status lists its partitions.
    let status: Value = eventually(WAIT, "A ready with 4 partitions", || async {
        let (code, _) = http_get(port_a, "/readyz").await;
        let (_, body) = http_get(port_a, "/status").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["partitions"].as_array().is_some_and(|p| p.len() == 4)).then_some(v)
    })
    .await;
    assert_eq!(status["group"], n.group);
    assert!(
        status["partitions"][0].get("committable").is_some(),
        "{status}"
    );
    eventually(WAIT, "lag gauge on /metrics", || async {
        let (code, body) = http_get(port_a, "/metrics").await;
        (code == 200
            && body.contains("es_sync_consumer_lag_records{")
            && body.contains("es_sync_consumer_lag_seconds{"))
        .then_some(())
    })
    .await;

    // B joins mid-load: the group rebalances.
    let b = start(config(&n));
    for r in 1..4 {
        produce_round(&p, &n.topic, t, docs, r).await;
    }
    // A leaves mid-load: B takes every partition.
    a.stop().await;
    for r in 4..6 {
        produce_round(&p, &n.topic, t, docs, r).await;
    }
    let alias = n.alias.clone();
    eventually(WAIT, "every document at round 5", || async {
        let d = all_docs(&alias).await;
        (d.len() == docs as usize && d.values().all(|(_, s)| s["title"] == "round 5")).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_bootstrap_one_index() {
    let n = Names::new("twin");
    create_topic(&n.topic, 2).await;
    let (a, b) = (start(config(&n)), start(config(&n)));
    let p = producer();
    produce_round(&p, &n.topic, 1_700_007_500, 20, 0).await;
    let alias = n.alias.clone();
    eventually(WAIT, "20 documents", || async {
        (all_docs(&alias).await.len() == 20).then_some(())
    })
    .await;
    assert!(
        !a.task.is_finished() && !b.task.is_finished(),
        "both instances still run"
    );
    a.stop().await;
    b.stop().await;
}
