//! kill -9 of mongo-source at random points during a steady write load,
//! restarted 5 times: a read_committed consumer sees every change exactly
//! once, in order per document. Then SIGTERM exits 0.

use e2e_tests::kafka::read_all;
use e2e_tests::process::Proc;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, mongo};
use mongodb::bson::{doc, Document};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_five_times_under_load_loses_and_repeats_nothing() {
    let mut fx = SourceFixture::new(&["card"]);
    fx.batch = "max_events = 50\nmax_wait_ms = 50".into();
    let config = fx.write();
    let cfg = config.to_str().unwrap().to_string();
    let start = || Proc::start("mongo-source", &["--config", &cfg], &[("RUST_LOG", "info")]);

    let mut proc = start();
    let topic = fx.topic("card");
    fx.wait_snapshot_done("card").await;

    let cards = mongo()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (cards, writes, stop) = (cards.clone(), writes.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = n % 200;
                if n <= 200 {
                    cards
                        .insert_one(doc! { "_id": id, "seq": n })
                        .await
                        .unwrap();
                } else if n % 17 == 0 {
                    // delete and re-insert: two changes
                    cards.delete_one(doc! { "_id": id }).await.unwrap();
                    writes.fetch_add(1, Ordering::SeqCst);
                    cards
                        .insert_one(doc! { "_id": id, "seq": n })
                        .await
                        .unwrap();
                } else {
                    cards
                        .update_one(doc! { "_id": id }, doc! { "$set": { "seq": n } })
                        .await
                        .unwrap();
                }
                writes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Deterministic "random" kill points.
    let pauses = [700_u64, 1900, 450, 1300, 2600];
    for (i, ms) in pauses.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
        proc.kill9();
        tokio::time::sleep(Duration::from_millis(100 + 150 * i as u64)).await;
        proc = start();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let total = writes.load(Ordering::SeqCst) as usize;

    let changes = eventually(
        "every change on the topic",
        Duration::from_secs(120),
        || async {
            let recs: Vec<_> = read_all(&topic)
                .await
                .into_iter()
                .filter(|r| !r.value["op"].as_str().unwrap_or("").starts_with("snapshot"))
                .collect();
            (recs.len() >= total).then_some(recs)
        },
    )
    .await;
    let status = proc.terminate();
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        proc.log_text()
    );

    assert_eq!(
        changes.len(),
        total,
        "every acknowledged write is on the topic exactly once"
    );
    let mut seen = HashSet::new();
    let mut last: HashMap<String, (i32, i64, u64)> = HashMap::new();
    for r in &changes {
        let key = r.key.clone().unwrap();
        let v = r.value["version"].as_u64().unwrap();
        assert!(seen.insert((key.clone(), v)), "duplicate event {key} v{v}");
        if let Some((p, off, prev)) = last.get(&key) {
            assert_eq!(*p, r.partition, "one document, one partition");
            assert!(r.offset > *off && v > *prev, "in order per document: {key}");
        }
        last.insert(key, (r.partition, r.offset, v));
    }
}
