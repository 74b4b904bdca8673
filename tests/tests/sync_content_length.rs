//! es-sync against a private real Elasticsearch node whose
//! `http.max_content_length` is 512 KiB (started by the test through
//! `scripts/stack` with `ES_EXTRA_SETTINGS`), far below es-sync's
//! `bulk.max_bytes` of 1 MiB: the node refuses whole bulk requests with
//! HTTP 413 and closes the connection.
//!
//! A bulk refused so is sent again in halves until each part fits, so
//! every document that fits alone is indexed; the one document that does
//! not fit even alone is dead-lettered with `request_too_large` and its
//! size; a normal document sent after it is indexed.

use e2e_tests::private_stack::PrivateElasticsearch;
use e2e_tests::sync_support::*;
use es_sync::dlq::headers;
use std::time::Duration;

const T: u32 = 1_700_007_000;
const WAIT: Duration = Duration::from_secs(60);
/// The node's limit, as `http.max_content_length` counts it.
const LIMIT: usize = 512 * 1024;

fn card_of(id: &str, body_bytes: usize) -> serde_json::Value {
    let mut c = card(id, "big", 1);
    c["body"] = "가".repeat(body_bytes / 3).into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulks_over_http_max_content_length_are_split_and_a_single_oversized_document_is_dead_lettered(
) {
    let node = PrivateElasticsearch::start_with_settings("http.max_content_length=512kb");
    let n = Names::new("c413");
    create_topic(&n.topic, 1).await;
    create_topic(&n.dlq, 1).await;
    let p = producer();
    // Six documents of 200 KB (together 1.2 MB, one bulk of es-sync's
    // 1 MiB would be refused), one just under the limit alone, one over it
    // alone, then a normal card.
    let mut sizes: Vec<usize> = vec![200_000; 6];
    sizes.push(LIMIT - 2_000);
    sizes.push(LIMIT + 60_000);
    sizes.push(0);
    let ids: Vec<String> = (0..sizes.len() as u64).map(|k| oid(40_000 + k)).collect();
    for (k, (id, size)) in ids.iter().zip(&sizes).enumerate() {
        let doc = if *size == 0 {
            card(id, "after the oversized one", 2)
        } else {
            card_of(id, *size)
        };
        produce(
            &p,
            &n.topic,
            id,
            &native("insert", id, T, k as u32, Some(doc)),
            None,
        )
        .await;
    }
    let over = ids[7].clone();
    let last = ids[8].clone();

    let mut cfg = config(&n);
    cfg.elasticsearch.url = node.url();
    let port = e2e_tests::free_port();
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    assert!(cfg.bulk.max_bytes >= 2 * LIMIT, "bulks are over the limit");
    let run = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let m = e2e_tests::http_get(port, "/metrics")
        .await
        .expect("metrics");
    run.stop().await;

    let docs = node.versions(&n.alias).await;
    for (k, id) in ids.iter().enumerate() {
        if *id == over {
            assert!(
                !docs.contains_key(id),
                "the oversized document is not indexed"
            );
        } else {
            assert_eq!(
                docs.get(id).copied(),
                Some(version(T, k as u32)),
                "document {k} ({} bytes) indexed",
                sizes[k]
            );
        }
    }
    assert!(docs.contains_key(&last), "the card after it is indexed");
    let split = e2e_tests::metric_value(&m, r#"es_sync_retries_total{reason="413"}"#);
    assert!(
        split.unwrap_or(0.0) >= 2.0,
        "refused bulks were sent again in parts; metrics:\n{m}"
    );

    let dlq = read_topic(&n.dlq, 1, WAIT).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let r = &dlq[0];
    assert_eq!(r.key.as_deref(), Some(over.as_bytes()));
    assert_eq!(r.headers[headers::ERROR_TYPE], "request_too_large");
    let reason = &r.headers[headers::ERROR_REASON];
    assert!(
        reason.contains("http.max_content_length") && reason.contains("bytes"),
        "{reason}"
    );
    let dead = e2e_tests::metric_value(
        &m,
        &format!(
            r#"es_sync_documents_total{{index="{}",outcome="dead_lettered"}}"#,
            n.alias
        ),
    );
    assert_eq!(dead, Some(1.0), "{m}");
}
