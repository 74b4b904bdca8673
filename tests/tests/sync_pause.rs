//! The operator's pause and resume of es-sync consumption (admin HTTP,
//! bearer token): while paused nothing new is indexed and /status says so;
//! after resume everything is.

use e2e_tests::http_request;
use e2e_tests::sync_support::*;
use serde_json::Value;
use shared::config::Secret;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pause_holds_consumption_until_resume() {
    let n = Names::new("pause");
    create_topic(&n.topic, 2).await;
    let mut cfg = config(&n);
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    cfg.admin.token = Some(Secret::new("op-token"));
    let run = start(cfg);
    let p = producer();
    let t = 1_700_008_000;
    let first = oid(900);
    produce(
        &p,
        &n.topic,
        &first,
        &native("insert", &first, t, 0, Some(card(&first, "before", 1))),
        None,
    )
    .await;
    let alias = n.alias.clone();
    e2e_tests::eventually("the first card", Duration::from_secs(60), || async {
        get_doc(&alias, &first).await
    })
    .await;

    let (code, _) = http_request(port, "POST", "/consumer/pause", None)
        .await
        .unwrap();
    assert_eq!(code, 401, "pause needs the token");
    let (code, body) = http_request(port, "POST", "/consumer/pause", Some("op-token"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let second = oid(901);
    produce(
        &p,
        &n.topic,
        &second,
        &native("insert", &second, t, 1, Some(card(&second, "during", 1))),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        get_doc(&alias, &second).await.is_none(),
        "nothing indexed while paused"
    );
    let status: Value =
        e2e_tests::eventually("paused on /status", Duration::from_secs(10), || async {
            let (_, body) = http_request(port, "GET", "/status", None).await?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["paused"] == true).then_some(v)
        })
        .await;
    assert_eq!(status["paused"], true);

    let (code, _) = http_request(port, "POST", "/consumer/resume", Some("op-token"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (_, doc) = e2e_tests::eventually(
        "the second card after resume",
        Duration::from_secs(60),
        || async { get_doc(&alias, &second).await },
    )
    .await;
    assert_eq!(doc["title"], "during");
    run.stop().await;
}
