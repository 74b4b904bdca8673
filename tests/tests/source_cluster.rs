//! Several mongo-source instances with one config form a cluster: each
//! stream has exactly one owner, streams spread, /status of any instance
//! shows the whole cluster; when the owner dies another takes over and a
//! read_committed consumer still sees every change exactly once; an owner
//! paused past its lease is fenced and steps down.

use e2e_tests::cluster::{
    assert_exactly_once, changes, fence, running_owner, spawn_inserts, status, Instance,
};
use e2e_tests::kafka::{aborted_records, no_open_transaction, read_all};
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, eventually_or, mongo};
use mongodb::bson::{doc, Document};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn start(cfg: &str, id: &str) -> Instance {
    Instance::start(cfg, id)
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
    let load = spawn_inserts(
        cards.clone(),
        String::new(),
        1,
        Duration::from_millis(5),
        writes.clone(),
        stop.clone(),
    );
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
    paused.signal("-STOP");
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
    paused.signal("-CONT");
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

/// The value of the counter `mongo_source_errors_total{stream, reason}` on
/// an instance's `/metrics` (0 when absent).
async fn errors_of(i: &Instance, stream: &str, reason: &str) -> f64 {
    let metrics = e2e_tests::http_get(i.port, "/metrics")
        .await
        .unwrap_or_default();
    let name = format!("mongo_source_errors_total{{stream=\"{stream}\",reason=\"{reason}\"}}");
    e2e_tests::metric_value(&metrics, &name).unwrap_or(0.0)
}

/// Issue 15 item 4: the owner paused (SIGSTOP) with a transaction open,
/// longer than `transaction.timeout.ms` but shorter than its lease: the
/// broker aborts the transaction and bumps the producer's epoch, which
/// librdkafka reports as fencing. The owner keeps its lease, so it must
/// reopen its producer and resume from its last committed position (it
/// used to park FAILED "fenced" while still holding the lease, so nobody
/// streamed). The other instance stays on standby; nothing is lost or
/// doubled.
///
/// The process stops itself (the test-only fault switch, armed through the
/// environment) right after a transaction's records were written, so the
/// pause always catches an open transaction; the test resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_timed_out_by_a_pause_reopens_the_producer_and_loses_nothing() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.batch = "max_events = 50\nmax_wait_ms = 50".into();
    // Commit and abort calls give up after 10 s (30 s shipped): a resumed
    // owner whose commit the broker does not answer at once still fails,
    // aborts and reopens well within the wait below.
    fx.kafka = "transaction_timeout_ms = 2000\noperation_timeout_ms = 10000".into();
    fx.extra = "\n[cluster]\nsession_timeout_ms = 45000\nheartbeat_interval_ms = 3000\n".into();
    let cfg = fx.write();
    let cfg = cfg.to_str().unwrap().to_string();
    let card = format!("{}.card", fx.db);
    // Stop in the 30th transaction: past the snapshot's, under the load.
    let faults = format!("source.txn.stop:{}.{card}=1@30", fx.prefix);
    let env = [(shared::faults::ENV, faults.as_str())];
    let instances: Vec<Instance> = ["a", "b"]
        .iter()
        .map(|id| Instance::start_with(&cfg, id, &env))
        .collect();
    let refs: Vec<&Instance> = instances.iter().collect();
    let owner_id = eventually("an owner of card", WAIT, || running_owner(&refs, &card)).await;
    fx.wait_snapshot_done("card").await;
    let owner = instances.iter().find(|i| i.id == owner_id).unwrap();
    let other = instances.iter().find(|i| i.id != owner_id).unwrap();
    assert!(
        owner.proc.log_text().contains("test fault switch armed"),
        "the binary has no test fault switch: build it with `cargo build --workspace --bins` \
         (scripts/test does), which enables shared's `faults` feature; log:\n{}",
        owner.proc.log_text()
    );

    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_inserts(
        cards,
        String::new(),
        1,
        Duration::from_millis(5),
        writes.clone(),
        stop.clone(),
    );
    eventually(
        "the owner stopped itself in a transaction",
        WAIT,
        || async { owner.stopped().then_some(()) },
    )
    .await;
    // Until the broker has aborted the transaction: past the transaction
    // timeout and the broker's check for timed-out transactions
    // (transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s),
    // so at least 14 s, then until no transaction is open on the event or
    // positions topic (LSO = high watermark): CI once timed out after a
    // fixed 14 s. Well within the 45 s lease. (An LSO that cleared 2.1 s
    // into a pause with no abort following was a transaction committed
    // before the process stopped: the point's SIGSTOP used to reach the
    // process late.)
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(14) {
        assert!(
            owner.stopped(),
            "the owner ran again {:.1} s into the pause without our SIGCONT: {}",
            paused.elapsed().as_secs_f64(),
            owner.kernel_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (event_topic, positions) = (fx.topic("card"), fx.positions());
    eventually(
        "the broker aborted the paused transaction",
        Duration::from_secs(20),
        || async {
            no_open_transaction(&[&event_topic, &positions])
                .await
                .then_some(())
        },
    )
    .await;
    // The paused transaction was aborted, not committed: its records (at
    // least its position record) are there for read_uncommitted only. CI
    // twice saw a commit go through here when the point's SIGSTOP reached
    // the process late (`shared::faults::stop_point`).
    let aborted = aborted_records(&[&event_topic, &positions]).await;
    assert!(
        aborted > 0,
        "no transaction open {:.1} s into the pause, but none aborted: the paused \
         transaction was committed before the process stopped",
        paused.elapsed().as_secs_f64()
    );
    eprintln!(
        "transaction aborted {:.1} s after the pause ({aborted} records)",
        paused.elapsed().as_secs_f64()
    );
    owner.signal("-CONT");
    let resumed = Instant::now();
    eventually(
        "the owner running again after SIGCONT",
        Duration::from_secs(5),
        || async { (!owner.stopped()).then_some(()) },
    )
    .await;
    // CI once saw no line from the resumed owner for 90 s: the last status
    // seen goes into the failure message.
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let s = eventually_or(
        "the owner reopened its producer",
        WAIT,
        || async {
            let s = owner.stream(&card).await?;
            *last.lock().unwrap() = s.clone();
            (s["restarts"].as_u64()? >= 1 && s["state"] == "RUNNING").then_some(s)
        },
        || {
            format!(
                "last status of the stream on the owner: {}; the owner's process: {}",
                last.lock().unwrap(),
                owner.kernel_state()
            )
        },
    )
    .await;
    eprintln!(
        "streaming again {:.1} s after SIGCONT: {}",
        resumed.elapsed().as_secs_f64(),
        s["last_error"]
    );
    assert_eq!(errors_of(owner, &card, "transaction_timeout").await, 1.0);
    assert_eq!(errors_of(owner, &card, "fenced").await, 0.0);
    assert!(
        s["last_error"].as_str().unwrap().contains("timed out"),
        "{s}"
    );
    // Some writes go on after the recovery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let total = writes.load(Ordering::SeqCst) as usize;
    let topic = fx.topic("card");
    let recs = eventually("all changes", WAIT, || async {
        let recs = read_all(&topic).await;
        (changes(&recs).len() >= total).then_some(recs)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recs = if changes(&recs).len() == total {
        read_all(&topic).await
    } else {
        recs
    };
    assert_exactly_once(&changes(&recs), total);
    assert_eq!(
        running_owner(&refs, &card).await.as_deref(),
        Some(owner_id.as_str()),
        "the lease did not move"
    );
    assert_eq!(other.stream(&card).await.unwrap()["state"], "STANDBY");
}

/// Issue 15 item 4: a real fencing, by a producer outside the lease group
/// with the stream's transactional.id. The first one is taken for a zombie
/// that has since stood down: the owner reopens its producer. A second one
/// within `cluster.fencing_cooldown_ms` means someone else keeps using the
/// id: the owner gives its lease up (leaves the group for the cool-down)
/// and the other instance takes the stream over. The owner used to park
/// FAILED while still holding the lease, so nobody streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_fenced_twice_from_outside_gives_its_lease_up_to_another_instance() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.batch = "max_events = 50\nmax_wait_ms = 50".into();
    let cfg = fx.write();
    let cfg = cfg.to_str().unwrap().to_string();
    let instances: Vec<Instance> = ["a", "b"].iter().map(|id| start(&cfg, id)).collect();
    let card = format!("{}.card", fx.db);
    let refs: Vec<&Instance> = instances.iter().collect();
    let owner_id = eventually("an owner of card", WAIT, || running_owner(&refs, &card)).await;
    fx.wait_snapshot_done("card").await;
    let owner = instances.iter().find(|i| i.id == owner_id).unwrap();
    let other = instances.iter().find(|i| i.id != owner_id).unwrap();
    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_inserts(
        cards,
        String::new(),
        1,
        Duration::from_millis(5),
        writes.clone(),
        stop.clone(),
    );
    let tid = format!("{}.{}", fx.prefix, card);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The first fencing counted makes the owner reopen its producer. A
    // fencing that lands while the owner commits can reach it as a failed
    // commit instead (Kafka 4.1.1 answered the commit UNKNOWN and the abort
    // went through, seen twice in fresh CI runs): the stream retries it as
    // any failed commit, reopening its producer too, but cannot tell it was
    // a fencing and does not count it. Such a fencing is repeated (bounded).
    let mut fencings = 0;
    loop {
        // (a restart before the fencing, e.g. a slow first transaction on a
        // loaded machine, must not count as the answer to it)
        let restarts_before = owner.stream(&card).await.unwrap()["restarts"]
            .as_u64()
            .unwrap_or(0);
        fencings += 1;
        if !fence(&tid).await {
            assert!(fencings < 4, "4 fencings, all raced a reopen");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        eventually("the owner reopened its producer", WAIT, || async {
            let s = owner.stream(&card).await?;
            (s["restarts"].as_u64()? > restarts_before && s["state"] == "RUNNING").then_some(())
        })
        .await;
        if errors_of(owner, &card, "fenced").await >= 1.0 || fencings == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        errors_of(owner, &card, "fenced").await,
        1.0,
        "after {fencings} fencings"
    );
    assert_eq!(other.stream(&card).await.unwrap()["state"], "STANDBY");

    // A second one within the cool-down gives the lease up.
    let only_other = [other];
    for attempt in 1..=4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarts_before = owner.stream(&card).await.unwrap()["restarts"]
            .as_u64()
            .unwrap_or(0);
        if !fence(&tid).await {
            assert!(attempt < 4, "4 fencings, none counted as the second");
            continue;
        }
        let answer = eventually("the other instance took the stream over", WAIT, || async {
            if let Some(id) = running_owner(&only_other, &card).await {
                return Some(Some(id));
            }
            // An uncounted fencing (see above): the owner goes on.
            let s = owner.stream(&card).await?;
            let uncounted = s["restarts"].as_u64()? > restarts_before
                && s["state"] == "RUNNING"
                && errors_of(owner, &card, "fenced").await < 2.0;
            uncounted.then_some(None)
        })
        .await;
        if answer.is_some() || attempt == 4 {
            assert!(answer.is_some(), "4 fencings, none counted as the second");
            break;
        }
    }
    let given_up = owner.stream(&card).await.unwrap();
    assert_eq!(given_up["state"], "STANDBY", "{given_up}");
    assert!(
        given_up["last_error"]
            .as_str()
            .unwrap()
            .contains("lease given up"),
        "{given_up}"
    );
    assert!(owner.proc.log_text().contains("giving the lease up"));

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let total = writes.load(Ordering::SeqCst) as usize;
    let topic = fx.topic("card");
    let recs = eventually("all changes", WAIT, || async {
        let recs = read_all(&topic).await;
        (changes(&recs).len() >= total).then_some(recs)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recs = if changes(&recs).len() == total {
        read_all(&topic).await
    } else {
        recs
    };
    assert_exactly_once(&changes(&recs), total);
}
