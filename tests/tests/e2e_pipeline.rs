//! End to end: MongoDB -> mongo-source -> Kafka -> es-sync -> Elasticsearch
//! on real servers. Writes of every kind show up in the index; the 1.1 MB
//! card of the production incident stays searchable, cut to fit the Kafka
//! limit, while the rest flows;
//! kill -9 of either binary under write load ends with Elasticsearch equal
//! to MongoDB, document by document.

use e2e_tests::e2e::{compare, es_documents, Pipeline};
use e2e_tests::kafka::read_all;
use e2e_tests::process::Proc;
use e2e_tests::{eventually, metric_value, mongo};
use mongodb::bson::{doc, oid::ObjectId, Document};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_every_kind_reach_the_index() {
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    // One card before the start: it arrives through the snapshot.
    let early = ObjectId::new();
    cards
        .insert_one(doc! { "_id": early, "title": "지리산 종주 후기", "likes": 1_i32 })
        .await
        .unwrap();
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();

    let a = ObjectId::new();
    let b = ObjectId::new();
    cards
        .insert_one(
            doc! { "_id": a, "title": "설악산 단풍 산행", "tags": ["설악산"], "likes": 2_i32 },
        )
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": b, "title": "to be deleted" })
        .await
        .unwrap();
    cards
        .update_one(doc! { "_id": a }, doc! { "$set": { "likes": 5_i32 } })
        .await
        .unwrap();
    cards
        .replace_one(
            doc! { "_id": early },
            doc! { "title": "replaced 한라산", "likes": 0_i32 },
        )
        .await
        .unwrap();
    cards.delete_one(doc! { "_id": b }).await.unwrap();
    replies
        .insert_one(doc! { "_id": "r1", "card_id": a, "body": "멋진 사진이네요" })
        .await
        .unwrap();
    replies
        .insert_one(doc! { "_id": "r2", "card_id": a, "body": "gone" })
        .await
        .unwrap();
    replies.delete_one(doc! { "_id": "r2" }).await.unwrap();

    let diffs = eventually("cards and replies equal to MongoDB", WAIT, || async {
        let d = [
            compare(&cards, &p.cards).await,
            compare(&replies, &p.replies).await,
        ]
        .concat();
        d.is_empty().then_some(d)
    })
    .await;
    assert!(diffs.is_empty());
    let es = es_documents(&p.cards).await;
    assert_eq!(es.len(), 2, "the deleted card is gone: {es:?}");
    assert_eq!(es[&a.to_hex()]["likes"], 5);
    assert_eq!(es[&early.to_hex()]["title"], "replaced 한라산");
    assert!(
        es[&a.to_hex()]["_sync"]["version"].as_u64().is_some(),
        "version stored"
    );

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_card_stays_searchable_cut_to_fit_and_the_pipeline_keeps_flowing() {
    let p = Pipeline::new();
    let cards = mongo()
        .await
        .database(&p.source.db)
        .collection::<Document>("card");
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();
    // 1.1 MB: over the 1,048,576-byte producer limit, like the record that
    // killed the Kafka Connect task. Korean text, so a byte cut inside a
    // character would show.
    let body = "설악산단풍산행후기".repeat(41_000);
    assert!(body.len() > 1_100_000);
    cards
        .insert_one(doc! { "_id": "incident", "title": "큰 글", "body": &body })
        .await
        .unwrap();
    // A card that an update makes too large: the new version, cut, must
    // replace the old one in the index.
    cards
        .insert_one(doc! { "_id": "grows", "title": "작은 글", "body": "짧다" })
        .await
        .unwrap();
    cards
        .update_one(
            doc! { "_id": "grows" },
            doc! { "$set": { "title": "커진 글", "body": &body } },
        )
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": "next", "title": "after the incident" })
        .await
        .unwrap();
    let es = eventually("the cards searchable, the big ones cut", WAIT, || async {
        let d = es_documents(&p.cards).await;
        (d.contains_key("next")
            && d.contains_key("incident")
            && d.get("grows").is_some_and(|g| g["title"] == "커진 글"))
        .then_some(d)
    })
    .await;
    for id in ["incident", "grows"] {
        let kept = es[id]["body"].as_str().unwrap();
        assert!(
            body.starts_with(kept),
            "{id}: a prefix on a character boundary"
        );
        assert!(
            kept.len() > 900_000,
            "{id}: most of it kept ({} bytes)",
            kept.len()
        );
        assert_eq!(es[id]["_truncated"]["fields"], serde_json::json!(["body"]));
        assert!(es[id]["_truncated"]["original_size"].as_u64().unwrap() > 1_100_000);
    }
    let dlq = read_all(&p.source.dlq()).await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    for d in &dlq {
        assert_eq!(d.value["reason"], "record_truncated");
        assert_eq!(d.value["fields"], serde_json::json!(["body"]));
    }

    let stream = format!("{}.card", p.source.db);
    let metrics = p.source.admin_get("/metrics").await.unwrap();
    let dl = format!(
        "mongo_source_dead_lettered_total{{stream=\"{stream}\",reason=\"record_truncated\"}}"
    );
    assert_eq!(metric_value(&metrics, &dl), Some(2.0), "{metrics}");
    let status: Value = eventually("the card stream running", WAIT, || async {
        let s = p.source.status().await;
        (s["streams"][0]["state"] == "RUNNING").then_some(s)
    })
    .await;
    assert_eq!(status["streams"][0]["dead_lettered"], 2);
    // The verifier takes a copy cut to fit as equal.
    p.assert_verified().await;

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_binary_under_load_ends_equal() {
    let p = Pipeline::new();
    let source_cfg = p.source.write();
    let sync_cfg = p.write_sync();
    let (source_cfg, sync_cfg) = (
        source_cfg.to_str().unwrap().to_string(),
        sync_cfg.to_str().unwrap().to_string(),
    );
    let start_source = || Proc::start("mongo-source", &["--config", &source_cfg], &[]);
    let start_sync = || Proc::start("es-sync", &["--config", &sync_cfg], &[]);
    let mut source = start_source();
    let mut sync = start_sync();

    let db = mongo().await.database(&p.source.db);
    let stop = Arc::new(AtomicBool::new(false));
    let load = e2e_tests::e2e::spawn_load(&db, 7, stop.clone());
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500 + 700 * round)).await;
        source.kill9();
        source = start_source();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        sync.kill9();
        sync = start_sync();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    assert!(writes >= 20, "load ran: {writes} writes");

    e2e_tests::e2e::wait_equal(&p, &db, Duration::from_secs(180)).await;
    assert!(
        source.terminate().success(),
        "mongo-source exits 0 on SIGTERM\n{}",
        source.log_text()
    );
    assert!(
        sync.terminate().success(),
        "es-sync exits 0 on SIGTERM\n{}",
        sync.log_text()
    );
}

/// Checks OpenMetrics text: every sample line parses as `name{labels} value`
/// and every family named in `expected` is there.
fn check_metrics(text: &str, expected: &[&str]) {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    let mut families = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap_or("").to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(value.parse::<f64>().is_ok(), "value of {line:?} parses");
        let name = name_labels.split('{').next().unwrap_or("");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?} is valid"
        );
        if name_labels.contains('{') {
            assert!(name_labels.ends_with('}'), "labels of {line:?} are closed");
        }
    }
    for name in expected {
        assert!(
            families.contains(*name),
            "metric family {name} missing in:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_export_the_documented_metrics() {
    let p = Pipeline::new();
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();
    let cards = mongo()
        .await
        .database(&p.source.db)
        .collection::<Document>("card");
    cards
        .insert_one(doc! { "_id": "m1", "title": "metrics" })
        .await
        .unwrap();
    eventually("the card indexed", WAIT, || async {
        es_documents(&p.cards)
            .await
            .contains_key("m1")
            .then_some(())
    })
    .await;
    let source_metrics = p.source.admin_get("/metrics").await.unwrap();
    // Families as documented in docs/source.md (counters without `_total`).
    check_metrics(
        &source_metrics,
        &[
            "mongo_source_events",
            "mongo_source_batch_events",
            "mongo_source_produce_seconds",
            "mongo_source_lag_seconds",
            "mongo_source_token_age_seconds",
            "mongo_source_dead_lettered",
            "mongo_source_oversized_records",
            "mongo_source_stream_restarts",
            "mongo_source_history_lost",
            "mongo_source_snapshot_documents",
            "mongo_source_errors",
            "mongo_source_stream_state",
            "mongo_source_exactly_once",
            "mongo_source_stage_seconds",
        ],
    );
    // The stream's task waits for MongoDB (an idle change stream's empty
    // answers at least), and says so.
    let read_wait = format!(
        "mongo_source_stage_seconds_total{{stream=\"{}.card\",stage=\"read\"}}",
        p.source.db
    );
    eventually("the card stream's read time counted", WAIT, || async {
        let text = p.source.admin_get("/metrics").await?;
        (metric_value(&text, &read_wait).unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    // Lag gauges are refreshed periodically: wait for the first refresh.
    let sync_metrics = eventually("es-sync lag metrics", WAIT, || async {
        let text = e2e_tests::http_get(p.sync_admin_port, "/metrics").await?;
        text.contains("es_sync_consumer_lag_records{")
            .then_some(text)
    })
    .await;
    check_metrics(
        &sync_metrics,
        &[
            "es_sync_documents",
            "es_sync_bulk_duration_seconds",
            "es_sync_bulk_bytes",
            "es_sync_consumer_lag_records",
            "es_sync_consumer_lag_seconds",
            "es_sync_buffered_records",
            "es_sync_consumer_paused",
        ],
    );
    // A record is counted once its work is done: with the roll-up, after
    // the new card's roll-up is written, which can come after the card is
    // already searchable (a loaded machine showed it).
    let indexed = format!(
        "es_sync_documents_total{{index=\"{}\",outcome=\"indexed\"}}",
        p.cards
    );
    eventually("the card counted as indexed", WAIT, || async {
        let text = e2e_tests::http_get(p.sync_admin_port, "/metrics").await?;
        (metric_value(&text, &indexed).unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}
