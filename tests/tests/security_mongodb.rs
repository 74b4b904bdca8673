//! mongo-source against a MongoDB-protocol server that requires TLS and
//! SCRAM-SHA-256 (private SecantusDB with `--auth` and a server
//! certificate, `MONGO_SECURITY=scram_tls`):
//!
//! - with `mongodb.username`, `password_file` and `tls_ca_file` it
//!   snapshots and then streams changes;
//! - a wrong password exits non-zero naming MongoDB authentication; an
//!   unrelated CA exits non-zero (after `startup_timeout_ms`) naming the
//!   certificate;
//! - the password never appears in its log or on /status.

use e2e_tests::process::Proc;
use e2e_tests::secure_stack::{unrelated_ca, wait_exit, SecureMongo};
use e2e_tests::source::SourceFixture;
use e2e_tests::workload::Workload;
use mongodb::bson::Document;
use std::path::Path;
use std::time::Duration;

fn mongo_env(m: &SecureMongo, password_file: &Path, ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("MONGO_SOURCE__MONGODB__URI", m.plain_uri()),
        ("MONGO_SOURCE__MONGODB__USERNAME", m.username.clone()),
        (
            "MONGO_SOURCE__MONGODB__PASSWORD_FILE",
            password_file.display().to_string(),
        ),
        (
            "MONGO_SOURCE__MONGODB__TLS_CA_FILE",
            ca.display().to_string(),
        ),
        (
            "MONGO_SOURCE__MONGODB__SERVER_SELECTION_TIMEOUT_MS",
            "2000".into(),
        ),
        ("MONGO_SOURCE__STARTUP_TIMEOUT_MS", "8000".into()),
    ]
}

fn start(config: &Path, env: &[(&'static str, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proc::start(
        "mongo-source",
        &["--config", config.to_str().expect("path")],
        &env,
    )
}

/// Change records (not markers) on `topic`.
async fn changes(topic: &str) -> usize {
    e2e_tests::kafka::read_all(topic)
        .await
        .iter()
        .filter(|r| r.key.is_some() && r.value["op"] != "snapshot_end")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_source_over_tls_with_scram() {
    let m = SecureMongo::start();
    let fx = SourceFixture::new(&["card"]);
    let cards = m
        .client()
        .await
        .database(&fx.db)
        .collection::<Document>("card");
    let mut w = Workload::new(11);
    for _ in 0..10 {
        cards.insert_one(w.card()).await.expect("insert");
    }
    let cfg = fx.write();
    let mut source = start(&cfg, &mongo_env(&m, &m.password_file(), &m.ca_file()));
    fx.wait_snapshot_done("card").await;
    cards.insert_one(w.card()).await.expect("insert");
    let topic = fx.topic("card");
    e2e_tests::eventually(
        "the snapshot and one change",
        Duration::from_secs(60),
        || async { (changes(&topic).await >= 11).then_some(()) },
    )
    .await;
    let status = fx.admin_get("/status").await.unwrap_or_default();
    source.terminate();
    let log = source.log_text();
    assert!(!status.is_empty(), "/status answered");
    for (what, text) in [("log", &log), ("/status", &status)] {
        assert!(!text.contains(&m.password), "the password is in the {what}");
    }

    let dir = std::env::temp_dir().join(e2e_tests::unique("mongo-sec-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrong_pw = dir.join("wrong_pw");
    std::fs::write(&wrong_pw, "WrongMongoPw-1j2k3l\n").expect("write");
    let other_ca = unrelated_ca(&dir);
    let cases = [
        (
            mongo_env(&m, &wrong_pw, &m.ca_file()),
            "MongoDB authentication failed at",
        ),
        (
            mongo_env(&m, &m.password_file(), &other_ca),
            "invalid peer certificate",
        ),
    ];
    for (env, expected) in &cases {
        let mut proc = start(&cfg, env);
        let st = wait_exit(&mut proc, Duration::from_secs(60));
        let log = proc.log_text();
        assert!(!st.success(), "exit non-zero for `{expected}`: {log}");
        let server = format!("127.0.0.1:{}", m.port);
        assert!(
            log.contains(expected) && log.contains(&server),
            "`{expected}` and the server in: {log}"
        );
        for secret in ["WrongMongoPw-1j2k3l", m.password.as_str()] {
            assert!(!log.contains(secret), "a password in: {log}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
