//! es-sync against a real search node that requires HTTPS and basic auth
//! (private OpenSearch 2.19.1 with its security plugin, `ES_FLAVOR=opensearch
//! ES_SECURITY=basic_tls`; Elasticsearch 7.10.2 OSS has no security):
//!
//! - with `ca_file` and the password from `password_file`, it indexes;
//! - a wrong password exits non-zero naming Elasticsearch authentication
//!   (401); no `ca_file`, or an unrelated CA, exits non-zero naming the
//!   TLS handshake;
//! - the password never appears in its log or on /status.

use e2e_tests::process::Proc;
use e2e_tests::secure_stack::{unrelated_ca, wait_exit, SecureOpenSearch};
use e2e_tests::sync_support::*;
use elasticsearch::http::Method;
use std::time::Duration;

fn es_env(os: &SecureOpenSearch, password_file: &str, ca: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("ES_SYNC__ELASTICSEARCH__URL".to_string(), os.url()),
        ("ES_SYNC__ELASTICSEARCH__USERNAME".into(), "admin".into()),
        (
            "ES_SYNC__ELASTICSEARCH__PASSWORD_FILE".into(),
            password_file.into(),
        ),
    ];
    if let Some(ca) = ca {
        env.push(("ES_SYNC__ELASTICSEARCH__CA_FILE".into(), ca.into()));
    }
    env
}

fn start(config: &str, env: &[(String, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Proc::start("es-sync", &["--config", config], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_sync_over_https_with_basic_auth() {
    let os = SecureOpenSearch::start();
    let n = Names::new("secure");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let t = 1_700_002_000;
    for k in 0..20u32 {
        let id = oid(7000 + u64::from(k));
        let ev = native("insert", &id, t, k, Some(card(&id, "secure", 1)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    let admin_port = e2e_tests::free_port();
    let cfg = write_config_file(&n, admin_port);
    let cfg = cfg.to_str().expect("path");
    let ca = os.ca_file().display().to_string();
    let pw_file = os.password_file().display().to_string();

    let mut sync = start(cfg, &es_env(&os, &pw_file, Some(&ca)));
    let count = eventually(
        Duration::from_secs(90),
        "20 documents on the secured node",
        || async {
            let (_, _) = os
                .call(Method::Post, &format!("/{}/_refresh", n.alias), None)
                .await;
            let (status, body) = os
                .call(Method::Get, &format!("/{}/_count", n.alias), None)
                .await;
            (status == 200 && body["count"] == 20).then_some(body["count"].clone())
        },
    )
    .await;
    assert_eq!(count, 20);
    let status = e2e_tests::http_get(admin_port, "/status")
        .await
        .unwrap_or_default();
    sync.terminate();
    let log = sync.log_text();
    assert!(!status.is_empty(), "es-sync /status answered");
    for (what, text) in [("log", &log), ("/status", &status)] {
        assert!(
            !text.contains(&os.password),
            "the password is in the {what}"
        );
    }

    // Failures at start-up: each exits non-zero with a clear error.
    let dir = std::env::temp_dir().join(e2e_tests::unique("os-sec-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wrong_pw = dir.join("wrong_pw");
    std::fs::write(&wrong_pw, "WrongEsPw-7g8h9i\n").expect("write");
    let wrong_pw = wrong_pw.display().to_string();
    let other_ca = unrelated_ca(&dir).display().to_string();
    let cases = [
        (
            es_env(&os, &wrong_pw, Some(&ca)),
            "401 (Elasticsearch authentication failed",
        ),
        (
            es_env(&os, &pw_file, None),
            "Elasticsearch TLS handshake failed",
        ),
        (
            es_env(&os, &pw_file, Some(&other_ca)),
            "Elasticsearch TLS handshake failed",
        ),
    ];
    for (env, expected) in &cases {
        let mut proc = start(cfg, env);
        let st = wait_exit(&mut proc, Duration::from_secs(60));
        let log = proc.log_text();
        assert!(!st.success(), "exit non-zero for `{expected}`: {log}");
        assert!(log.contains(expected), "`{expected}` in: {log}");
        for secret in ["WrongEsPw-7g8h9i", os.password.as_str()] {
            assert!(!log.contains(secret), "a password in: {log}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
