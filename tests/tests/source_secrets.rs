//! Secrets given to mongo-source (a password in the MongoDB URI, a
//! password file, a Kafka SASL password from a file, the admin token) never
//! appear in its logs or on /status, even while it fails to connect.

use e2e_tests::process::Proc;
use e2e_tests::source::SourceFixture;
use e2e_tests::{eventually, http_get};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_status() {
    let mut fx = SourceFixture::new(&["card"]);
    let dir = std::env::temp_dir().join(e2e_tests::unique("secrets-"));
    std::fs::create_dir_all(&dir).unwrap();
    let kafka_pw = dir.join("kafka_pw");
    std::fs::write(&kafka_pw, "KafkaPw-9x8y7z\n").unwrap();
    fx.kafka = format!(
        "[kafka.property_files]\n\"sasl.password\" = \"{}\"\n[kafka.properties]\n\"sasl.username\" = \"svc\"",
        kafka_pw.display()
    );
    fx.admin = "token = \"AdminTok-5q4w3e\"".into();
    let cfg = fx.write();
    // Unreachable MongoDB with a password in the URI: the binary keeps
    // retrying and logging errors, and must never print the password.
    let mut proc = Proc::start(
        "mongo-source",
        &["--config", cfg.to_str().unwrap()],
        &[
            (
                "MONGO_SOURCE__MONGODB__URI",
                "mongodb://app:MongoPw-1a2b3c@127.0.0.1:1/?directConnection=true",
            ),
            ("MONGO_SOURCE__MONGODB__SERVER_SELECTION_TIMEOUT_MS", "300"),
            ("RUST_LOG", "debug"),
        ],
    );
    let status = eventually("the admin server", Duration::from_secs(30), || async {
        http_get(fx.admin_port, "/status").await
    })
    .await;
    // Let it fail and retry a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let readyz = http_get(fx.admin_port, "/readyz").await.unwrap_or_default();
    proc.terminate();
    let log = proc.log_text();
    assert!(
        log.contains("waiting for MongoDB"),
        "the failure is logged: {log}"
    );
    assert!(
        log.contains("app:***@127.0.0.1:1"),
        "the URI is logged redacted: {log}"
    );
    for secret in ["MongoPw-1a2b3c", "KafkaPw-9x8y7z", "AdminTok-5q4w3e"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!status.contains(secret), "{secret} on /status");
        assert!(!readyz.contains(secret), "{secret} on /readyz");
    }
}
