//! Issue 15 item 3: a panic in a stream's task (injected through the
//! test-only fault switch, `shared::faults`) becomes a logged error, the
//! stream shows FAILED and `/readyz` answers 503 while it is down, the
//! coordinator restarts it after a backoff, and the restarted stream
//! resumes from its last committed position: nothing is lost or doubled.
//! The stream's task used to be spawned and forgotten: a panic left the
//! stream dead, its lease held, and `/readyz` green.

use e2e_tests::kafka::read_all;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, http_request, metric_value, mongo};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_stream_is_an_error_a_non_ready_state_and_a_restart() {
    let mut fx = SourceFixture::new(&["card"]);
    // A restart backoff long enough to see the FAILED state.
    fx.retry = "initial_ms = 3000\nmax_ms = 3000\nrandomization = 0.0".into();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    let stream = format!("{}.card", fx.db);
    let point = format!("source.stream:{stream}");
    eventually("ready", WAIT, || async {
        let (code, _) = http_request(fx.admin_port, "GET", "/readyz", None).await?;
        (code == 200).then_some(())
    })
    .await;

    shared::faults::arm(&point, 1);
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    cards
        .insert_one(doc! { "_id": "first", "title": "한라산" })
        .await
        .unwrap();
    let (status, readyz) = eventually("the stream FAILED and not ready", WAIT, || async {
        let s = fx.status().await;
        if s["streams"][0]["state"] != "FAILED" {
            return None;
        }
        let (code, body) = http_request(fx.admin_port, "GET", "/readyz", None).await?;
        Some((s, (code, body)))
    })
    .await;
    assert_eq!(shared::faults::remaining(&point), 0, "the fault fired");
    let error = status["streams"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("panicked") && error.contains("fault injected"),
        "{status}"
    );
    assert_eq!(readyz.0, 503, "{}", readyz.1);

    cards.insert_one(doc! { "_id": "second" }).await.unwrap();
    let status = eventually("the stream restarted", WAIT, || async {
        let s = fx.status().await;
        (s["streams"][0]["state"] == "RUNNING").then_some(s)
    })
    .await;
    assert_eq!(status["streams"][0]["restarts"], 1, "{status}");
    let (code, _) = http_request(fx.admin_port, "GET", "/readyz", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "ready again");
    let metrics = fx.admin_get("/metrics").await.unwrap();
    let died = format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"task_died\"}}");
    assert_eq!(metric_value(&metrics, &died), Some(1.0), "{metrics}");

    let topic = fx.topic("card");
    let recs = eventually("both inserts", WAIT, || async {
        let recs = read_all(&topic).await;
        let n = recs.iter().filter(|r| r.value["op"] == "insert").count();
        (n >= 2).then_some(recs)
    })
    .await;
    let mut keys: Vec<&str> = recs
        .iter()
        .filter(|r| r.value["op"] == "insert")
        .filter_map(|r| r.key.as_deref())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, vec![r#""first""#, r#""second""#], "each once");
    let first = recs
        .iter()
        .find(|r| r.key.as_deref() == Some(r#""first""#))
        .unwrap();
    assert_eq!(first.value["doc"]["title"], Value::from("한라산"));
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// The members reader (a thread reading every instance's reports for the
/// cluster view) survives a panic on a report: it logs it and goes on, so
/// `/status` keeps showing fresh reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_members_reader_does_not_stop_the_cluster_view() {
    let fx = SourceFixture::new(&["card"]);
    let (stop, handle) = fx.spawn();
    let seen_ms_ago = || async {
        let s = fx.status().await;
        s["cluster"]["members"][0]["seen_ms_ago"].as_u64()
    };
    eventually("a fresh report in the cluster view", WAIT, || async {
        seen_ms_ago().await.filter(|ms| *ms < 3_000)
    })
    .await;
    let point = format!("source.members.read:{}.mongo-source.cluster", fx.prefix);
    shared::faults::arm(&point, 1);
    eventually("the fault fired", WAIT, || async {
        (shared::faults::remaining(&point) == 0).then_some(())
    })
    .await;
    // Reports come every 2 s (cluster.publish_interval_ms): after 6 s a
    // dead reader would show one at least 6 s old.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let age = seen_ms_ago().await.unwrap();
    assert!(age < 4_000, "the last report read is {age} ms old");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// The lease thread dies (a panic): the coordinator sees it, stops the
/// streams it can no longer hold a lease for, and joins the lease group
/// again; the stream runs again and no change is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lease_thread_stops_the_streams_and_the_group_is_joined_again() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.retry = "initial_ms = 1000\nmax_ms = 1000\nrandomization = 0.0".into();
    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    cards.insert_one(doc! { "_id": "before" }).await.unwrap();
    let point = format!("source.lease.poll:mongo-source.{}.{}", fx.prefix, fx.db);
    shared::faults::arm(&point, 1);
    eventually("the stream stood by", WAIT, || async {
        let s = fx.status().await;
        (s["streams"][0]["state"] == "STANDBY").then_some(())
    })
    .await;
    assert_eq!(shared::faults::remaining(&point), 0, "the fault fired");
    cards.insert_one(doc! { "_id": "during" }).await.unwrap();
    eventually("the stream runs again", WAIT, || async {
        let s = fx.status().await;
        (s["streams"][0]["state"] == "RUNNING").then_some(())
    })
    .await;
    cards.insert_one(doc! { "_id": "after" }).await.unwrap();
    let topic = fx.topic("card");
    let keys = eventually("the three inserts", WAIT, || async {
        let recs = read_all(&topic).await;
        let mut keys: Vec<String> = recs
            .iter()
            .filter(|r| r.value["op"] == "insert")
            .filter_map(|r| r.key.clone())
            .collect();
        keys.sort();
        (keys.len() >= 3).then_some(keys)
    })
    .await;
    assert_eq!(keys, vec![r#""after""#, r#""before""#, r#""during""#]);
    stop.cancel();
    handle.await.unwrap().unwrap();
}
