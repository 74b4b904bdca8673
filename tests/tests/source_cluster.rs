//! Several mongo-source instances with one config form a cluster: each
//! stream has exactly one owner, streams spread, /status of any instance
//! shows the whole cluster; when the owner dies another takes over and a
//! read_committed consumer still sees every change exactly once; an owner
//! paused past its lease is fenced and steps down.

use e2e_tests::kafka::{read_all, Rec};
use e2e_tests::process::Proc;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, free_port, http_get, mongo};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

struct Instance {
    id: String,
    port: u16,
    proc: Proc,
}

fn start(cfg: &str, id: &str) -> Instance {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proc = Proc::start(
        "mongo-source",
        &["--config", cfg],
        &[
            ("MONGO_SOURCE__ADMIN__LISTEN", &listen),
            ("MONGO_SOURCE__CLUSTER__INSTANCE_ID", id),
        ],
    );
    Instance {
        id: id.to_string(),
        port,
        proc,
    }
}

async fn status(port: u16) -> Value {
    match http_get(port, "/status").await {
        Some(b) => serde_json::from_str(&b).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// The owner of `stream` according to `port`'s cluster view, once that
/// owner also reports the stream RUNNING locally.
async fn running_owner(instances: &[&Instance], stream: &str) -> Option<String> {
    for i in instances {
        let s = status(i.port).await;
        let local = s["streams"]
            .as_array()?
            .iter()
            .find(|x| x["stream"] == stream)?
            .clone();
        if local["state"] == "RUNNING" {
            return Some(i.id.clone());
        }
    }
    None
}

fn changes(recs: &[Rec]) -> Vec<&Rec> {
    recs.iter()
        .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
        .collect()
}

fn assert_exactly_once(recs: &[&Rec], expected: usize) {
    let mut seen = HashSet::new();
    for r in recs {
        let key = (r.key.clone(), r.value["version"].as_u64());
        assert!(seen.insert(key.clone()), "duplicate {key:?}");
    }
    assert_eq!(
        recs.len(),
        expected,
        "every acknowledged write exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_spread_and_every_instance_shows_the_cluster() {
    let fx = SourceFixture::new(&["card", "reply"]);
    let cfg = fx.write();
    let cfg = cfg.to_str().unwrap();
    let a = start(cfg, "a");
    let b = start(cfg, "b");
    let card = format!("{}.card", fx.db);
    let reply = format!("{}.reply", fx.db);
    let view = eventually("two owners, one stream each", WAIT, || async {
        let (oc, or) = (
            running_owner(&[&a, &b], &card).await?,
            running_owner(&[&a, &b], &reply).await?,
        );
        if oc == or {
            return None;
        }
        // Any instance's /status shows both owners.
        for i in [&a, &b] {
            let s = status(i.port).await;
            let owners = &s["cluster"]["owners"];
            if owners[&card] != oc.as_str() || owners[&reply] != or.as_str() {
                return None;
            }
        }
        Some(status(a.port).await)
    })
    .await;
    let members = view["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{view}");
    assert!(members.iter().all(|m| m["alive"] == true), "{view}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_moves_the_stream_and_loses_nothing() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.batch = "max_events = 50\nmax_wait_ms = 50".into();
    let cfg = fx.write();
    let cfg = cfg.to_str().unwrap().to_string();
    let mut instances: Vec<Instance> = ["a", "b", "c"].iter().map(|id| start(&cfg, id)).collect();
    let card = format!("{}.card", fx.db);
    let refs: Vec<&Instance> = instances.iter().collect();
    let owner = eventually("an owner of card", WAIT, || running_owner(&refs, &card)).await;
    let topic = fx.topic("card");
    fx.wait_snapshot_done("card").await;

    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (cards, writes, stop) = (cards.clone(), writes.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0_i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                cards.insert_one(doc! { "_id": n }).await.unwrap();
                writes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pos = instances.iter().position(|i| i.id == owner).unwrap();
    let mut dead = instances.remove(pos);
    let killed_at = Instant::now();
    dead.proc.kill9();
    let refs: Vec<&Instance> = instances.iter().collect();
    let new_owner = eventually("a new owner", WAIT, || running_owner(&refs, &card)).await;
    let failover = killed_at.elapsed();
    eprintln!(
        "failover after kill -9: {:.1} s (from {owner} to {new_owner})",
        failover.as_secs_f64()
    );
    assert_ne!(new_owner, owner);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let total = writes.load(Ordering::SeqCst) as usize;
    let recs = eventually("all changes", WAIT, || async {
        let recs = read_all(&topic).await;
        (changes(&recs).len() >= total).then_some(recs)
    })
    .await;
    assert_exactly_once(&changes(&recs), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_is_fenced_and_steps_down() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.batch = "max_events = 50\nmax_wait_ms = 50".into();
    let cfg = fx.write();
    let cfg = cfg.to_str().unwrap().to_string();
    let instances: Vec<Instance> = ["a", "b"].iter().map(|id| start(&cfg, id)).collect();
    let card = format!("{}.card", fx.db);
    let refs: Vec<&Instance> = instances.iter().collect();
    let owner = eventually("an owner of card", WAIT, || running_owner(&refs, &card)).await;
    let topic = fx.topic("card");
    fx.wait_snapshot_done("card").await;
    let paused = instances.iter().find(|i| i.id == owner).unwrap();
    let other = instances.iter().find(|i| i.id != owner).unwrap();

    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let pid = paused.proc.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // Writes while the owner is frozen: it has them half-read, perhaps.
    for n in 0..50_i64 {
        cards.insert_one(doc! { "_id": n }).await.unwrap();
    }
    let only_other = [other];
    let new_owner = eventually("the other instance owns card", WAIT, || {
        running_owner(&only_other, &card)
    })
    .await;
    assert_eq!(new_owner, other.id);
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    for n in 50..100_i64 {
        cards.insert_one(doc! { "_id": n }).await.unwrap();
    }
    // The resumed instance must not stream card any more.
    eventually("the resumed instance stood down", WAIT, || async {
        let s = status(paused.port).await;
        let st = s["streams"][0]["state"].as_str()?.to_string();
        (st == "STANDBY" || st == "FAILED").then_some(())
    })
    .await;
    let recs = eventually("all 100 changes", WAIT, || async {
        let recs = read_all(&topic).await;
        (changes(&recs).len() >= 100).then_some(recs)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = if changes(&recs).len() == 100 {
        read_all(&topic).await
    } else {
        recs
    };
    assert_exactly_once(&changes(&recs), 100);
    assert_eq!(
        running_owner(&refs, &card).await.as_deref(),
        Some(other.id.as_str())
    );
}
