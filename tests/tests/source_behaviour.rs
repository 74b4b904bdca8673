//! mongo-source behaviours beyond the basic records: user pipeline, topic
//! override and transaction info; the topic's own size limit; a fatal
//! failure shown on /status and restarted on request; fencing of a second
//! instance; start mode `now`; explicit at-least-once delivery; why a
//! stream is stuck in STARTING while its servers do not answer.

use e2e_tests::kafka::{create_topic, read_all, topic_exists, Rec};
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, free_port, http_request, kafka_bootstrap, metric_value, mongo};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn changes(recs: &[Rec]) -> Vec<&Rec> {
    recs.iter()
        .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
        .collect()
}

async fn wait_state(fx: &SourceFixture, index: usize, state: &str) -> Value {
    eventually(
        &format!("stream {index} in state {state}"),
        WAIT,
        || async {
            let s = fx.status().await;
            if s["streams"][index]["state"] == state {
                return Some(s);
            }
            // Shown when the wait times out: the state it was stuck in.
            eprintln!(
                "waiting for {state}: stream {index} is {}",
                s["streams"][index]
            );
            None
        },
    )
    .await
}

#[tokio::test]
async fn pipeline_topic_override_and_transaction_info() {
    let mut fx = SourceFixture::new(&["card"]);
    let custom = format!("custom-{}", fx.prefix);
    fx.collection_extra.insert(
        "card".into(),
        format!(
            "topic = \"{custom}\"\npipeline = [{{ \"$match\" = {{ \"fullDocument.hidden\" = {{ \"$ne\" = true }} }} }}]"
        ),
    );
    let (stop, handle) = fx.spawn();
    wait_state(&fx, 0, "RUNNING").await;
    let client = mongo().await;
    let cards = client.database(&fx.db).collection::<Document>("card");
    cards
        .insert_one(doc! { "_id": "hidden", "hidden": true })
        .await
        .unwrap();
    cards.insert_one(doc! { "_id": "shown" }).await.unwrap();
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    cards
        .insert_one(doc! { "_id": "t1" })
        .session(&mut session)
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": "t2" })
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();

    let recs = eventually("3 changes on the custom topic", WAIT, || async {
        let recs = read_all(&custom).await;
        (changes(&recs).len() >= 3).then_some(recs)
    })
    .await;
    let mut changes = changes(&recs);
    // Different keys may sit in different partitions: source order is the version.
    changes.sort_by_key(|r| r.value["version"].as_u64());
    let mut keys: Vec<&str> = changes.iter().map(|r| r.key.as_deref().unwrap()).collect();
    // The two changes of one transaction may share a cluster time.
    keys[1..].sort_unstable();
    assert_eq!(
        keys,
        [r#""shown""#, r#""t1""#, r#""t2""#],
        "the $match dropped the hidden card"
    );
    let t1 = changes[1];
    assert!(
        t1.value["txn"]["txn_number"].as_i64().is_some(),
        "transaction info: {}",
        t1.value
    );
    assert_eq!(t1.value["txn"], changes[2].value["txn"], "same transaction");
    assert!(changes[0].value.get("txn").is_none());
    assert!(
        read_all(&fx.topic("card")).await.is_empty(),
        "default topic unused"
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn record_limit_comes_from_the_topic() {
    let fx = SourceFixture::new(&["card"]);
    create_topic(&fx.topic("card"), 3, &[("max.message.bytes", "100000")]).await;
    let (stop, handle) = fx.spawn();
    let status = wait_state(&fx, 0, "RUNNING").await;
    assert_eq!(status["streams"][0]["record_limit_bytes"], 100_000);
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    cards
        .insert_one(doc! { "_id": "mid", "body": "x".repeat(200_000) })
        .await
        .unwrap();
    cards.insert_one(doc! { "_id": "small" }).await.unwrap();
    eventually("the small card", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        changes(&recs)
            .iter()
            .any(|r| r.key.as_deref() == Some(r#""small""#))
            .then_some(())
    })
    .await;
    // Commit markers reach each partition asynchronously: wait for the
    // DLQ's to turn visible too.
    let dlq = eventually("the pointer visible on the DLQ", WAIT, || async {
        let dlq = read_all(&fx.dlq()).await;
        (!dlq.is_empty()).then_some(dlq)
    })
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value["limit"], 100_000);
    let msg = dlq[0].value["message"].as_str().unwrap();
    assert!(msg.contains("max.message.bytes = 100000"), "{msg}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn fatal_failure_is_visible_and_restarts_on_request() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.topics = "create = false".into();
    fx.admin = "token = \"s3cret\"".into();
    fx.retry = "initial_ms = 60000\nmax_ms = 60000".into();
    let (stop, handle) = fx.spawn();
    let status = wait_state(&fx, 0, "FAILED").await;
    let err = status["streams"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.to_lowercase().contains("unknown topic"), "{err}");
    // The test broker allows auto-creation (as brokers do by default):
    // asking for the topic's partitions must not have created it.
    assert!(
        !topic_exists(&fx.topic("card")).await,
        "topics.create = false, yet the event topic was created"
    );
    let (code, _) = http_request(fx.admin_port, "GET", "/readyz", None)
        .await
        .unwrap();
    assert_eq!(code, 503, "not ready while a stream failed");

    // The Kafka Connect REST shapes the runbooks use.
    let stream = format!("{}.card", fx.db);
    let list: Value = serde_json::from_str(&fx.admin_get("/connectors").await.unwrap()).unwrap();
    assert_eq!(list, serde_json::json!([stream]));
    let cs: Value = serde_json::from_str(
        &fx.admin_get(&format!("/connectors/{stream}/status"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cs["name"], stream.as_str());
    assert_eq!(cs["type"], "source");
    assert_eq!(cs["connector"]["state"], "FAILED");
    assert_eq!(cs["tasks"][0]["id"], 0);
    assert_eq!(cs["tasks"][0]["state"], "FAILED");
    assert!(cs["tasks"][0]["trace"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("unknown topic"));
    let ts: Value = serde_json::from_str(
        &fx.admin_get(&format!("/connectors/{stream}/tasks/0/status"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ts["state"], "FAILED");
    let (code, _) = http_request(fx.admin_port, "GET", "/connectors/nope/status", None)
        .await
        .unwrap();
    assert_eq!(code, 404);

    create_topic(&fx.topic("card"), 3, &[]).await;
    create_topic(&fx.positions(), 1, &[("cleanup.policy", "compact")]).await;
    create_topic(&fx.dlq(), 1, &[]).await;
    let path = format!("/streams/{stream}/restart");
    let (code, _) = http_request(fx.admin_port, "POST", &path, None)
        .await
        .unwrap();
    assert_eq!(code, 401, "mutating endpoint needs the token");
    let (code, _) = http_request(fx.admin_port, "POST", &path, Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(code, 202);
    let status = wait_state(&fx, 0, "RUNNING").await;
    assert_eq!(status["streams"][0]["restarts"], 1);
    let connect_restart = format!("/connectors/{stream}/restart");
    let (code, _) = http_request(fx.admin_port, "POST", &connect_restart, Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(code, 204, "Connect's restart answers 204");
    let (code, _) = http_request(fx.admin_port, "GET", "/readyz", None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let metrics = fx.admin_get("/metrics").await.unwrap();
    let failed = format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"fatal\"}}");
    assert_eq!(metric_value(&metrics, &failed), Some(1.0), "{metrics}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// Two instances that are *not* one cluster (different lease groups, a
/// misconfiguration) but stream the same collection: the per-stream
/// transactional.id still keeps every change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_outside_the_cluster_fences_the_first() {
    let fx = SourceFixture::new(&["card"]);
    let (stop_a, handle_a) = fx.spawn();
    wait_state(&fx, 0, "RUNNING").await;
    let mut fx_b = SourceFixture::new(&["card"]);
    fx_b.db = fx.db.clone();
    fx_b.prefix = fx.prefix.clone();
    fx_b.extra = "\n[cluster]\ngroup_id = \"another-group\"\n".into();
    let (stop_b, handle_b) = fx_b.spawn();
    wait_state(&fx_b, 0, "RUNNING").await;

    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    for i in 0..20 {
        cards.insert_one(doc! { "_id": i }).await.unwrap();
    }
    // Each is fenced by the other's reopened producer; the first to be
    // fenced twice within cluster.fencing_cooldown_ms gives its lease up.
    let status = eventually("the first instance gave its lease up", WAIT, || async {
        let s = fx.status().await;
        let given_up = s["streams"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("lease given up"));
        if s["streams"][0]["state"] == "STANDBY" && given_up {
            return Some(s);
        }
        eprintln!("first instance: {}", s["streams"][0]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        None
    })
    .await;
    let err = status["streams"][0]["last_error"].as_str().unwrap();
    assert!(err.contains("fenced"), "{err}");
    let recs = eventually("20 inserts", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        (changes(&recs).len() >= 20).then_some(recs)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recs = if changes(&recs).len() == 20 {
        read_all(&fx.topic("card")).await
    } else {
        recs
    };
    assert_eq!(
        changes(&recs).len(),
        20,
        "each change once, though two instances saw it"
    );
    assert_eq!(fx_b.status().await["streams"][0]["state"], "RUNNING");
    stop_a.cancel();
    stop_b.cancel();
    handle_a.await.unwrap().unwrap();
    handle_b.await.unwrap().unwrap();
}

#[tokio::test]
async fn start_now_skips_existing_documents() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.extra = "\n[start]\nmode = \"now\"\n".into();
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    for i in 0..3 {
        cards.insert_one(doc! { "_id": i }).await.unwrap();
    }
    let (stop, handle) = fx.spawn();
    wait_state(&fx, 0, "RUNNING").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cards.insert_one(doc! { "_id": "new" }).await.unwrap();
    let recs = eventually("the new insert", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        (!recs.is_empty()).then_some(recs)
    })
    .await;
    assert_eq!(recs.len(), 1, "no snapshot, only the change: {recs:#?}");
    assert_eq!(recs[0].key.as_deref(), Some(r#""new""#));
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn at_least_once_delivery_is_reported() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.kafka = "delivery = \"at_least_once\"".into();
    let (stop, handle) = fx.spawn();
    let status = wait_state(&fx, 0, "RUNNING").await;
    assert_eq!(status["streams"][0]["delivery"], "at_least_once");
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    for i in 0..3 {
        cards.insert_one(doc! { "_id": i }).await.unwrap();
    }
    eventually("3 inserts", WAIT, || async {
        let recs = read_all(&fx.topic("card")).await;
        (changes(&recs).len() == 3).then_some(())
    })
    .await;
    let metrics = fx.admin_get("/metrics").await.unwrap();
    let label = format!("mongo_source_exactly_once{{stream=\"{}.card\"}}", fx.db);
    assert_eq!(metric_value(&metrics, &label), Some(0.0), "{metrics}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// While Kafka does not answer at start-up, each stream is STARTING and
/// `/status` says why (before, `last_error` stayed empty until the
/// start-up timeout ended the process).
#[tokio::test]
async fn startup_wait_is_explained_on_status() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.kafka = "operation_timeout_ms = 1000".into();
    fx.retry = "initial_ms = 200\nmax_ms = 500".into();
    let dead = format!("127.0.0.1:{}", free_port());
    let toml = fx.toml().replace(&kafka_bootstrap(), &dead);
    let cfg: mongo_source::config::SourceConfig = shared::config::load_str(
        &toml,
        std::path::Path::new("test.toml"),
        "NONE",
        Vec::<(String, String)>::new(),
    )
    .expect("config");
    cfg.validate().expect("valid config");
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(mongo_source::run(cfg, stop.clone()));
    let status = eventually("a start-up error on /status", WAIT, || async {
        let s = fx.status().await;
        let err = s["streams"][0]["last_error"].as_str()?.to_string();
        Some((s, err))
    })
    .await;
    assert_eq!(status.0["streams"][0]["state"], "STARTING");
    assert!(status.1.starts_with("start-up: "), "{}", status.1);
    stop.cancel();
    handle.await.unwrap().unwrap();
}
