//! Both binaries against a real Kafka broker that requires SASL over TLS
//! (private `KAFKA_SECURITY=sasl_ssl` bench, see docs/security.md):
//!
//! - a pipeline step over SASL_SSL with SCRAM-SHA-512 (password from a
//!   file), then with PLAIN (password from the environment): MongoDB ends
//!   equal to Elasticsearch;
//! - a wrong password and a wrong CA make each binary exit non-zero at
//!   start-up with an error naming Kafka authentication / the TLS handshake;
//! - the password never appears in a log or on /status.

use e2e_tests::e2e::{wait_equal, Pipeline};
use e2e_tests::process::Proc;
use e2e_tests::secure_stack::{unrelated_ca, wait_exit, SecureKafka};
use e2e_tests::workload::Workload;
use mongodb::bson::Document;
use std::path::Path;
use std::time::Duration;

/// How a binary reaches the broker: SASL mechanism, password source, CA.
struct Access<'a> {
    mechanism: &'a str,
    password_file: Option<&'a Path>,
    password_env: Option<&'a str>,
    ca: &'a Path,
}

/// The environment overrides (`{prefix}__KAFKA__...`) for `access`.
fn kafka_env(prefix: &str, kafka: &SecureKafka, a: &Access) -> Vec<(String, String)> {
    let k = |key: &str| format!("{prefix}__KAFKA__{key}");
    let mut env = vec![
        (k("BOOTSTRAP_SERVERS"), kafka.sasl_ssl()),
        (k("PROPERTIES__security.protocol"), "SASL_SSL".into()),
        (k("PROPERTIES__sasl.mechanism"), a.mechanism.into()),
        (k("PROPERTIES__sasl.username"), kafka.username.clone()),
        (k("PROPERTIES__ssl.ca.location"), a.ca.display().to_string()),
    ];
    if let Some(f) = a.password_file {
        env.push((k("PROPERTY_FILES__sasl.password"), f.display().to_string()));
    }
    if let Some(p) = a.password_env {
        env.push((k("PROPERTIES__sasl.password"), p.into()));
    }
    env
}

fn start(name: &str, config: &Path, env: &[(String, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Proc::start(name, &["--config", config.to_str().expect("path")], &env)
}

async fn insert_cards(coll: &mongodb::Collection<Document>, w: &mut Workload, n: usize) {
    for _ in 0..n {
        coll.insert_one(w.card()).await.expect("insert");
    }
}

/// Runs both binaries with `access`, waits until Elasticsearch equals
/// MongoDB, checks /status and the logs for `secret`, stops them.
async fn pipeline_step(p: &Pipeline, kafka: &SecureKafka, a: &Access<'_>, db: &mongodb::Database) {
    let src_cfg = p.source.write();
    let sync_cfg = p.write_sync();
    let mut source = start(
        "mongo-source",
        &src_cfg,
        &kafka_env("MONGO_SOURCE", kafka, a),
    );
    let mut sync = start("es-sync", &sync_cfg, &kafka_env("ES_SYNC", kafka, a));
    wait_equal(p, db, Duration::from_secs(120)).await;
    let statuses = [
        e2e_tests::http_get(p.source.admin_port, "/status").await,
        e2e_tests::http_get(p.sync_admin_port, "/status").await,
    ];
    source.terminate();
    sync.terminate();
    for (what, text) in [
        ("mongo-source log", source.log_text()),
        ("es-sync log", sync.log_text()),
        (
            "mongo-source /status",
            statuses[0].clone().unwrap_or_default(),
        ),
        ("es-sync /status", statuses[1].clone().unwrap_or_default()),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(
            !text.contains(&kafka.password),
            "the SASL password is in the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_over_sasl_ssl_with_scram_then_plain() {
    let kafka = SecureKafka::start();
    let ca = kafka.ca_file();
    let p = Pipeline::new();
    let db = e2e_tests::mongo().await.database(&p.source.db);
    let cards = db.collection::<Document>("card");
    let mut w = Workload::new(7);

    insert_cards(&cards, &mut w, 20).await;
    let pw_file = kafka.password_file();
    let scram = Access {
        mechanism: "SCRAM-SHA-512",
        password_file: Some(&pw_file),
        password_env: None,
        ca: &ca,
    };
    pipeline_step(&p, &kafka, &scram, &db).await;

    // Again with PLAIN, the password from the environment: the source
    // resumes from its stored position, es-sync from its committed offsets.
    insert_cards(&cards, &mut w, 10).await;
    let plain = Access {
        mechanism: "PLAIN",
        password_file: None,
        password_env: Some(&kafka.password),
        ca: &ca,
    };
    pipeline_step(&p, &kafka, &plain, &db).await;
    assert_eq!(
        e2e_tests::e2e::es_documents(&p.cards).await.len(),
        30,
        "both steps indexed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_or_ca_stops_each_binary_with_a_clear_error() {
    let kafka = SecureKafka::start();
    let p = Pipeline::new();
    let dir = std::env::temp_dir().join(e2e_tests::unique("kafka-sec-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrong_pw = dir.join("wrong_pw");
    std::fs::write(&wrong_pw, "WrongPw-4d5e6f\n").expect("write");
    let ca = kafka.ca_file();
    let other_ca = unrelated_ca(&dir);
    let right_pw = kafka.password_file();
    let cases = [
        (
            Access {
                mechanism: "SCRAM-SHA-512",
                password_file: Some(&wrong_pw),
                password_env: None,
                ca: &ca,
            },
            "Kafka authentication failed",
        ),
        (
            Access {
                mechanism: "SCRAM-SHA-512",
                password_file: Some(&right_pw),
                password_env: None,
                ca: &other_ca,
            },
            "Kafka TLS handshake failed",
        ),
    ];
    let configs = [
        ("mongo-source", "MONGO_SOURCE", p.source.write()),
        ("es-sync", "ES_SYNC", p.write_sync()),
    ];
    for (access, expected) in &cases {
        for (binary, prefix, config) in &configs {
            let mut proc = start(binary, config, &kafka_env(prefix, &kafka, access));
            let status = wait_exit(&mut proc, Duration::from_secs(90));
            let log = proc.log_text();
            assert!(
                !status.success(),
                "{binary} must exit non-zero ({expected}): {log}"
            );
            assert!(log.contains(expected), "{binary}: `{expected}` in: {log}");
            assert!(
                log.contains(&kafka.sasl_ssl()),
                "{binary} names the broker: {log}"
            );
            for secret in ["WrongPw-4d5e6f", kafka.password.as_str()] {
                assert!(!log.contains(secret), "{binary}: a password in: {log}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
