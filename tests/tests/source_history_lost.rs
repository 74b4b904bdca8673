//! mongo-source when its stored resume point fell off the oplog: with the
//! default policy it re-snapshots, announced by markers, and counts it.
//! Runs its own MongoDB (via scripts/stack, own STACK_DIR and port) with a
//! tiny oplog so the history can be lost on purpose.

use e2e_tests::kafka::read_all;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, free_port, metric_value};
use mongodb::bson::{doc, Document};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

struct PrivateMongo {
    dir: PathBuf,
    port: u16,
}

fn stack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack")
}

impl PrivateMongo {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(e2e_tests::unique("stack-"));
        let port = free_port();
        let st = Command::new(stack())
            .args(["start", "mongodb"])
            .env("STACK_DIR", &dir)
            .env("MONGO_PORT", port.to_string())
            .env("MONGO_OPLOG_MAX_ENTRIES", "100")
            .env("MONGO_NOOP_HEARTBEAT_SECONDS", "0")
            .status()
            .expect("scripts/stack");
        assert!(st.success(), "private mongodb did not start");
        Self { dir, port }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        let _ = Command::new(stack())
            .args(["down", "--wipe"])
            .env("STACK_DIR", &self.dir)
            .env("MONGO_PORT", self.port.to_string())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_history_triggers_an_announced_resnapshot() {
    let mongo = PrivateMongo::start();
    std::env::set_var("MONGODB_URI", mongo.uri());
    let fx = SourceFixture::new(&["card"]);
    let topic = fx.topic("card");
    let client = mongodb::Client::with_uri_str(mongo.uri()).await.unwrap();
    let cards = client.database(&fx.db).collection::<Document>("card");
    for i in 0..5 {
        cards.insert_one(doc! { "_id": i, "v": 0 }).await.unwrap();
    }

    let (stop, handle) = fx.spawn();
    fx.wait_snapshot_done("card").await;
    cards.insert_one(doc! { "_id": 5, "v": 0 }).await.unwrap();
    eventually("a streamed insert", Duration::from_secs(60), || async {
        read_all(&topic)
            .await
            .iter()
            .any(|r| r.value["op"] == "insert")
            .then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    // While the source is down: far more writes than the oplog keeps, and
    // deletes that only a re-snapshot can tell about.
    cards.delete_one(doc! { "_id": 0 }).await.unwrap();
    for i in 100..1200 {
        cards.insert_one(doc! { "_id": i }).await.unwrap();
    }
    cards
        .delete_many(doc! { "_id": { "$gte": 100 } })
        .await
        .unwrap();
    let _ = client
        .database("admin")
        .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
        .await;

    let (stop, handle) = fx.spawn();
    let recs = eventually(
        "the re-snapshot's end markers",
        Duration::from_secs(90),
        || async {
            let recs = read_all(&topic).await;
            (recs
                .iter()
                .filter(|r| r.value["op"] == "snapshot_end")
                .count()
                == 6)
                .then_some(recs)
        },
    )
    .await;
    let ends: Vec<u64> = recs
        .iter()
        .filter(|r| r.value["op"] == "snapshot_end")
        .map(|r| r.value["snapshot"]["version"].as_u64().unwrap())
        .collect();
    assert!(ends[3] > ends[0], "the re-snapshot is newer than the first");
    let second: Vec<_> = recs
        .iter()
        .filter(|r| r.value["op"] == "snapshot" && r.value["version"].as_u64() == Some(ends[3]))
        .collect();
    let ids: std::collections::BTreeSet<i64> = second
        .iter()
        .map(|r| r.value["doc"]["_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=5).collect(),
        "the re-snapshot holds exactly the documents that exist"
    );

    let metrics = fx.admin_get("/metrics").await.unwrap();
    let label = format!(
        "mongo_source_history_lost_total{{stream=\"{}.card\"}}",
        fx.db
    );
    assert_eq!(metric_value(&metrics, &label), Some(1.0), "{metrics}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}
