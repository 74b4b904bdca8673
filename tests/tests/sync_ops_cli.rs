//! es-sync as a process against real Kafka and Elasticsearch: kill -9
//! during load then restart ends in the latest state; `replay --dry-run`
//! and `replay` move the group as described; `reindex` builds a new index
//! and swaps the alias while searches keep answering.

use e2e_tests::process::{binary, Proc};
use e2e_tests::sync_support::*;
use elasticsearch::http::Method;
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_then_restart_ends_in_the_latest_state() {
    let n = Names::new("kill");
    create_topic(&n.topic, 3).await;
    let cfg = write_config_file(&n, e2e_tests::free_port());
    let cfg_s = cfg.display().to_string();
    let mut proc = Proc::start("es-sync", &["--config", &cfg_s], &[]);
    let p = producer();
    let t = 1_700_001_000;
    let docs = 300u32;
    let rounds = 6u32;
    let mut killed = false;
    for r in 0..rounds {
        for k in 0..docs {
            let id = oid(5000 + u64::from(k));
            let ev = native(
                "update",
                &id,
                t + r,
                k,
                Some(card(&id, &format!("round {r}"), i64::from(r))),
            );
            produce(&p, &n.topic, &id, &ev, None).await;
        }
        if r == 2 {
            // Let it index some, then crash it mid-load.
            tokio::time::sleep(Duration::from_millis(300)).await;
            proc.kill9();
            killed = true;
            proc = Proc::start("es-sync", &["--config", &cfg_s], &[]);
        }
    }
    assert!(killed);
    let alias = n.alias.clone();
    let final_version = |k: u32| version(t + rounds - 1, k);
    let all = eventually(WAIT, "every document at its last round", || async {
        let d = all_docs(&alias).await;
        (d.len() == docs as usize
            && d.iter().all(|(id, (v, _))| {
                let k = (u64::from_str_radix(&id[8..], 16).unwrap_or(0) - 5000) as u32;
                *v == final_version(k)
            }))
        .then_some(d)
    })
    .await;
    assert!(all
        .values()
        .all(|(_, s)| s["title"] == format!("round {}", rounds - 1)));
    let status = proc.terminate();
    assert!(
        status.success(),
        "SIGTERM exits 0: {status:?}\n{}",
        proc.log_text()
    );
}

fn es_sync(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("es-sync"))
        .args(args)
        .output()
        .expect("run es-sync");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dry_run_and_replay_move_the_group() {
    let n = Names::new("rpl");
    create_topic(&n.topic, 2).await;
    let p = producer();
    let t = 1_700_002_000;
    for k in 0..20u32 {
        let id = oid(6000 + u64::from(k));
        produce(
            &p,
            &n.topic,
            &id,
            &native("insert", &id, t, k, Some(card(&id, "x", 1))),
            Some((k % 2) as i32),
        )
        .await;
    }
    let run = start(config(&n));
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let cfg = write_config_file(&n, e2e_tests::free_port());
    let cfg_s = cfg.display().to_string();

    // Refused while the group has an active member.
    let (ok, _, err) = es_sync(&[
        "--config",
        &cfg_s,
        "replay",
        "--group",
        &n.group,
        "--to-earliest",
    ]);
    assert!(!ok, "replay must refuse while es-sync runs");
    assert!(err.contains("active member"), "{err}");
    run.stop().await;
    assert_eq!(committed(&n.group, &n.topic, 0), Some(10));

    // Dry run: prints, changes nothing.
    let (ok, out, err) = es_sync(&[
        "--config",
        &cfg_s,
        "replay",
        "--group",
        &n.group,
        "--to-earliest",
        "--dry-run",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("DRY RUN"), "{out}");
    assert!(out.contains("total records to process: 20"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&n.topic) && l.split_whitespace().nth(1) == Some("0"))
        .expect("row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[1..],
        ["0", "10", "0", "10"],
        "{out}"
    );
    assert_eq!(
        committed(&n.group, &n.topic, 0),
        Some(10),
        "dry run changes nothing"
    );

    // Replay to explicit offsets, then to the earliest.
    let spec = format!("{}:0:4,{}:1:7", n.topic, n.topic);
    let (ok, out, err) = es_sync(&[
        "--config",
        &cfg_s,
        "replay",
        "--group",
        &n.group,
        "--to-offsets",
        &spec,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("total records to process: 9"), "{out}");
    assert_eq!(
        (
            committed(&n.group, &n.topic, 0),
            committed(&n.group, &n.topic, 1)
        ),
        (Some(4), Some(7))
    );
    let (ok, _, err) = es_sync(&[
        "--config",
        &cfg_s,
        "replay",
        "--group",
        &n.group,
        "--to-timestamp",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        committed(&n.group, &n.topic, 0),
        Some(10),
        "nothing after T: the end"
    );
    let (ok, _, err) = es_sync(&[
        "--config",
        &cfg_s,
        "replay",
        "--group",
        &n.group,
        "--to-earliest",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        (
            committed(&n.group, &n.topic, 0),
            committed(&n.group, &n.topic, 1)
        ),
        (Some(0), Some(0))
    );

    // The next run reprocesses everything: with the index dropped (a plain
    // delete would leave a newer tombstone), every document comes back.
    let (s, _) = es_call(Method::Delete, &format!("/{}-000001", n.alias), None).await;
    assert_eq!(s, 200);
    let run = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "all documents re-indexed by the replay", || async {
        (all_docs(&alias).await.len() == 20).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_builds_a_new_index_and_swaps_the_alias_while_searches_answer() {
    let n = Names::new("rdx");
    create_topic(&n.topic, 2).await;
    let p = producer();
    let t = 1_700_003_000;
    // The topic begins with a snapshot in every partition, as mongo-source
    // writes it: its history is complete, so it is rebuilt from the topic.
    for part in 0..2 {
        produce(&p, &n.topic, "", &snapshot_start(t - 1, 0), Some(part)).await;
    }
    for k in 0..100u32 {
        let id = oid(7000 + u64::from(k));
        produce(
            &p,
            &n.topic,
            &id,
            &native("insert", &id, t, k, Some(card(&id, "before", 1))),
            None,
        )
        .await;
    }
    let main = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "100 documents", || async {
        (all_docs(&alias).await.len() == 100).then_some(())
    })
    .await;

    // Searches on the alias, all along.
    let stop = tokio_util::sync::CancellationToken::new();
    let failures = Arc::new(AtomicU64::new(0));
    let searches = Arc::new(AtomicU64::new(0));
    let searcher = {
        let (stop, failures, searches, alias) = (
            stop.clone(),
            failures.clone(),
            searches.clone(),
            alias.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let (s, body) = es_call(
                    Method::Post,
                    &format!("/{alias}/_search"),
                    Some(json!({"size": 0, "track_total_hits": true})),
                )
                .await;
                searches.fetch_add(1, Ordering::Relaxed);
                if s != 200 || body["hits"]["total"]["value"].as_u64().unwrap_or(0) < 100 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Changes keep coming during the reindex.
    let writer = {
        let (topic, p) = (n.topic.clone(), p.clone());
        tokio::spawn(async move {
            for k in 0..100u32 {
                let id = oid(7000 + u64::from(k));
                produce(
                    &p,
                    &topic,
                    &id,
                    &native("update", &id, t + 1, k, Some(card(&id, "after", 2))),
                    None,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let new_index = format!("{}-000002", n.alias);
    let report = es_sync::ops::reindex::reindex(
        config(&n),
        &n.topic,
        &new_index,
        es_sync::ops::reindex::From::Auto,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("reindex");
    assert_eq!(report.from, es_sync::ops::reindex::From::Topic);
    writer.await.expect("writer");
    assert_eq!(report.previous, vec![format!("{}-000001", n.alias)]);
    assert_eq!(alias_targets(&alias).await, vec![new_index.clone()]);
    // Every update reaches the new index (through the reindex or the main run).
    eventually(WAIT, "all updates in the new index", || async {
        let d = all_docs(&new_index).await;
        (d.len() == 100 && d.values().all(|(_, s)| s["title"] == "after")).then_some(())
    })
    .await;
    stop.cancel();
    searcher.await.expect("searcher");
    assert!(searches.load(Ordering::Relaxed) > 5);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "every search answered with every document"
    );
    main.stop().await;
}

/// Deletes the records of `topic` partition 0 before `offset` (what
/// retention does to a topic that deletes after 7 days).
async fn delete_records_before(topic: &str, offset: i64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .create()
        .expect("admin");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .expect("tpl");
    admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_never_swaps_in_an_index_that_misses_documents() {
    let n = Names::new("rdxh");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let t = 1_700_004_000;
    produce(&p, &n.topic, "", &snapshot_start(t - 1, 0), Some(0)).await;
    // 30 documents never changed again, then 10 changed later.
    for k in 0..40u32 {
        let id = oid(8000 + u64::from(k));
        let ev = native("insert", &id, t, k + 1, Some(card(&id, "old", 1)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    let main = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "40 documents", || async {
        (all_docs(&alias).await.len() == 40).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    // Retention takes the snapshot and the 40 inserts; 10 updates remain.
    delete_records_before(&n.topic, 41).await;
    for k in 30..40u32 {
        let id = oid(8000 + u64::from(k));
        let ev = native("update", &id, t + 1, k, Some(card(&id, "new", 2)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    wait_caught_up(&n.group, &n.topic, WAIT).await;

    // From the topic alone the new index would hold 10 documents: refused.
    let err = es_sync::ops::reindex::reindex(
        config(&n),
        &n.topic,
        &format!("{}-000002", n.alias),
        es_sync::ops::reindex::From::Topic,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("partition 0") && msg.contains("starts at offset 41"),
        "{msg}"
    );
    assert!(msg.contains("--from index"), "{msg}");
    let (s, body) = es_call(Method::Get, &format!("/_alias/{alias}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        body.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec![format!("{}-000001", n.alias)]),
        "the alias did not move"
    );

    // auto: copy the current index, then the topic from the running group's offsets.
    let new_index = format!("{}-000003", n.alias);
    let writer = {
        let (topic, p) = (n.topic.clone(), p.clone());
        tokio::spawn(async move {
            for k in 0..10u32 {
                let id = oid(8000 + u64::from(k));
                let ev = native("update", &id, t + 2, k, Some(card(&id, "during", 3)));
                produce(&p, &topic, &id, &ev, None).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let report = es_sync::ops::reindex::reindex(
        config(&n),
        &n.topic,
        &new_index,
        es_sync::ops::reindex::From::Auto,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("reindex from the index");
    writer.await.expect("writer");
    assert_eq!(report.from, es_sync::ops::reindex::From::Index);
    eventually(
        WAIT,
        "every document in the new index, at its newest",
        || async {
            let d = all_docs(&new_index).await;
            let title = |k: u64| d.get(&oid(8000 + k)).map(|(_, s)| s["title"].clone());
            (d.len() == 40
                && (0..10).all(|k| title(k) == Some(json!("during")))
                && (10..30).all(|k| title(k) == Some(json!("old")))
                && (30..40).all(|k| title(k) == Some(json!("new"))))
            .then_some(())
        },
    )
    .await;
    let (_, body) = es_call(Method::Get, &format!("/_alias/{alias}"), None).await;
    assert_eq!(
        body.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec![new_index.clone()])
    );
    main.stop().await;
}

/// `reindex --from index` copies the current index with a search, which
/// sees only refreshed documents. A change the running group committed
/// (Elasticsearch accepted it) but no refresh had made visible yet was in
/// neither the copy nor the topic from the group's offsets: the new index
/// kept the older document (seen once in a fresh CI run of the test
/// above). With refreshes off on the current index the window is made
/// wide: every update is accepted and committed, none is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_from_index_copies_changes_accepted_but_not_yet_refreshed() {
    let n = Names::new("rdxr");
    create_topic(&n.topic, 1).await;
    let p = producer();
    let t = 1_700_005_000;
    produce(&p, &n.topic, "", &snapshot_start(t - 1, 0), Some(0)).await;
    for k in 0..10u32 {
        let id = oid(8100 + u64::from(k));
        let ev = native("insert", &id, t, k + 1, Some(card(&id, "old", 1)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    let main = start(config(&n));
    let alias = n.alias.clone();
    eventually(WAIT, "10 documents", || async {
        (all_docs(&alias).await.len() == 10).then_some(())
    })
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let (s, body) = es_call(
        Method::Put,
        &format!("/{alias}/_settings"),
        Some(json!({"index": {"refresh_interval": "-1"}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for k in 0..10u32 {
        let id = oid(8100 + u64::from(k));
        let ev = native("update", &id, t + 1, k, Some(card(&id, "new", 2)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    // Accepted and committed, not yet searchable.
    let (s, body) = es_call(
        Method::Post,
        &format!("/{alias}/_search"),
        Some(json!({"size": 100, "query": {"match_all": {}}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let titles: Vec<&serde_json::Value> = body["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| &h["_source"]["title"])
        .collect();
    // At least one update must sit in the window (a refresh from elsewhere
    // on the shared node exposed seven of ten once, in scripts/test's
    // parallel run); each one there is a case the copy must not miss.
    assert!(
        titles.len() == 10 && titles.iter().any(|t| *t == "old"),
        "every update is already searchable, nothing to test: {titles:?}"
    );

    let new_index = format!("{}-000002", n.alias);
    let report = es_sync::ops::reindex::reindex(
        config(&n),
        &n.topic,
        &new_index,
        es_sync::ops::reindex::From::Index,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("reindex from the index");
    assert_eq!(report.from, es_sync::ops::reindex::From::Index);
    let d = all_docs(&new_index).await;
    let stale: Vec<_> = d
        .iter()
        .filter(|(_, (_, s))| s["title"] != "new")
        .map(|(id, (v, s))| format!("{id} v{v} {}", s["title"]))
        .collect();
    assert!(
        d.len() == 10 && stale.is_empty(),
        "{} documents in the new index, older than MongoDB: {stale:?}",
        d.len()
    );
    main.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_coordinate_moves_a_running_group() {
    let n = Names::new("coord");
    create_topic(&n.topic, 2).await;
    let p = producer();
    let t = 1_700_002_500;
    for k in 0..20u32 {
        let id = oid(6500 + u64::from(k));
        let ev = native("insert", &id, t, k, Some(card(&id, "x", 1)));
        produce(&p, &n.topic, &id, &ev, None).await;
    }
    let port = e2e_tests::free_port();
    let mut cfg = config(&n);
    cfg.admin.listen = ([127, 0, 0, 1], port).into();
    cfg.admin.token = Some(shared::config::Secret::new("s3cret"));
    let run = start(cfg);
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    let file = write_config_file(&n, e2e_tests::free_port());
    let file = file.display().to_string();
    let admin = format!("http://127.0.0.1:{port}");
    let replay = |token: Option<&str>| {
        let mut c = Command::new(binary("es-sync"));
        c.args([
            "--config",
            &file,
            "replay",
            "--group",
            &n.group,
            "--to-earliest",
        ]);
        c.args(["--coordinate", &admin]);
        if let Some(t) = token {
            c.env("ES_SYNC__ADMIN__TOKEN", t);
        }
        let out = c.output().expect("run es-sync");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = replay(Some("wrong"));
    assert!(
        !ok && err.contains("401"),
        "a wrong token is refused: {err}"
    );

    let (ok, out, err) = replay(Some("s3cret"));
    assert!(ok, "{err}");
    assert!(
        out.contains("moved") && out.contains("total records to process: 20"),
        "{out}"
    );
    // The running instance rejoined at offset 0 and processed all 20 again
    // (each a version conflict: the index holds them already).
    let conflicted = format!(
        "es_sync_documents_total{{index=\"{}\",outcome=\"conflicted\"}} 20",
        n.alias
    );
    eventually(
        WAIT,
        "20 conflicts after the coordinated replay",
        || async {
            let body = e2e_tests::http_get(port, "/metrics").await?;
            body.contains(&conflicted).then_some(())
        },
    )
    .await;
    wait_caught_up(&n.group, &n.topic, WAIT).await;
    run.stop().await;
}
