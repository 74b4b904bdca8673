//! es-sync scale-out on the whole pipeline: two instances in one consumer
//! group, a third joins and one is killed (kill -9) under write load; the
//! index ends equal to MongoDB document by document.

use e2e_tests::e2e::{spawn_load, wait_equal, Pipeline};
use e2e_tests::mongo;
use e2e_tests::process::Proc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sync_instances_join_and_die_under_load_and_the_index_ends_equal() {
    let p = Pipeline::new();
    let (stop_source, source) = p.source.spawn();
    let sync_cfg = p.write_sync();
    let sync_cfg = sync_cfg.to_str().unwrap().to_string();
    let start = || {
        let listen = format!("127.0.0.1:{}", e2e_tests::free_port());
        Proc::start(
            "es-sync",
            &["--config", &sync_cfg],
            &[("ES_SYNC__ADMIN__LISTEN", &listen)],
        )
    };
    let mut a = start();
    let b = start();

    let db = mongo().await.database(&p.source.db);
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(&db, 11, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.unwrap();
    assert!(writes >= 20, "load ran: {writes} writes");

    wait_equal(&p, &db, Duration::from_secs(180)).await;
    for mut s in [b, c] {
        assert!(s.terminate().success(), "es-sync exits 0\n{}", s.log_text());
    }
    stop_source.cancel();
    source.await.unwrap().unwrap();
}
