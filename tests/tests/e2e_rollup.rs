//! Replies rolled up into their card, through both binaries on the real
//! bench: `reply_count`, `last_reply_at` and `latest_replies` of each card
//! equal MongoDB after reply inserts, deletes, a reply moved to another
//! card, card updates, a card deleted and recreated, kill -9 of es-sync, a
//! replay from the earliest offset and a reindex. Every scenario ends with
//! the verifier, which checks the roll-up too.

use e2e_tests::e2e::{es_documents, Pipeline};
use e2e_tests::process::Proc;
use e2e_tests::{eventually, mongo};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::Collection;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn at(s: i64) -> DateTime {
    DateTime::from_millis(1_700_000_000_000 + s * 1000)
}

fn reply(id: &str, card: ObjectId, s: i64, body: &str) -> Document {
    doc! { "_id": id, "card_id": card, "created_at": at(s), "body": body }
}

/// Waits until the card `id` shows `count` replies (and returns it).
async fn card_with(p: &Pipeline, id: ObjectId, count: u64) -> Value {
    card_where(p, id, &format!("{count} replies"), |c| {
        c["reply_count"] == json!(count)
    })
    .await
}

/// Waits until the card `id` satisfies `check` (and returns it).
async fn card_where(
    p: &Pipeline,
    id: ObjectId,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("card {id}: {what}"), WAIT, || async {
        let docs = es_documents(&p.cards).await;
        docs.get(&id.to_hex()).filter(|c| check(c)).cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_counts_follow_every_kind_of_change() {
    let p = Pipeline::new();
    let client = mongo().await;
    let db = client.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    let (a, b) = (ObjectId::new(), ObjectId::new());
    cards
        .insert_one(doc! { "_id": a, "title": "설악산", "likes": 1 })
        .await
        .unwrap();
    cards
        .insert_one(doc! { "_id": b, "title": "한라산", "likes": 1 })
        .await
        .unwrap();
    replies
        .insert_one(reply("r0", a, 0, "스냅샷 때부터 있던 댓글"))
        .await
        .unwrap();
    let (stop_source, source) = p.source.spawn();
    let (stop_sync, sync) = p.spawn_sync();
    // Through the snapshot: one reply.
    let card = card_with(&p, a, 1).await;
    assert_eq!(card["last_reply_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(card["latest_replies"], json!(["스냅샷 때부터 있던 댓글"]));

    replies
        .insert_one(reply("r1", a, 10, "첫 댓글"))
        .await
        .unwrap();
    replies
        .insert_one(reply("r2", a, 20, "둘째 댓글"))
        .await
        .unwrap();
    replies
        .insert_one(reply("r3", b, 30, "다른 글 댓글"))
        .await
        .unwrap();
    let card = card_with(&p, a, 3).await;
    assert_eq!(
        card["latest_replies"],
        json!(["둘째 댓글", "첫 댓글", "스냅샷 때부터 있던 댓글"])
    );
    card_with(&p, b, 1).await;

    // A reply deleted, a reply moved to the other card.
    replies.delete_one(doc! { "_id": "r2" }).await.unwrap();
    replies
        .update_one(doc! { "_id": "r3" }, doc! { "$set": { "card_id": a } })
        .await
        .unwrap();
    card_where(&p, a, "r2 gone, r3 moved in", |c| {
        c["reply_count"] == 3 && c["last_reply_at"] == "2023-11-14T22:13:50.000Z"
    })
    .await;
    card_with(&p, b, 0).await;

    // A card update keeps its roll-up.
    cards
        .update_one(
            doc! { "_id": a },
            doc! { "$set": { "likes": 9, "title": "설악산 단풍" } },
        )
        .await
        .unwrap();
    let card = eventually("the card update", WAIT, || async {
        es_documents(&p.cards)
            .await
            .get(&a.to_hex())
            .filter(|c| c["likes"] == 9)
            .cloned()
    })
    .await;
    assert_eq!(
        card["reply_count"], 3,
        "a card update never resets the roll-up"
    );

    // A card deleted and recreated: its replies (still pointing at it) count.
    replies
        .insert_one(reply("r4", b, 40, "다시 생길 글의 댓글"))
        .await
        .unwrap();
    card_with(&p, b, 1).await;
    cards.delete_one(doc! { "_id": b }).await.unwrap();
    eventually("card b gone", WAIT, || async {
        (!es_documents(&p.cards).await.contains_key(&b.to_hex())).then_some(())
    })
    .await;
    cards
        .insert_one(doc! { "_id": b, "title": "한라산 다시" })
        .await
        .unwrap();
    card_with(&p, b, 1).await;

    // Many replies at once, on several cards, in one transaction.
    let mut s = client.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    for k in 0..30 {
        let card = if k % 3 == 0 { b } else { a };
        replies
            .insert_one(reply(&format!("t{k}"), card, 100 + k, "묶음 댓글"))
            .session(&mut s)
            .await
            .unwrap();
    }
    s.commit_transaction().await.unwrap();
    card_with(&p, a, 23).await;
    card_with(&p, b, 11).await;
    p.assert_verified().await;

    stop_source.cancel();
    stop_sync.cancel();
    source.await.unwrap().unwrap();
    sync.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_counts_survive_kill_9_replay_and_reindex() {
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    let ids: Vec<ObjectId> = (0..5).map(|_| ObjectId::new()).collect();
    for id in &ids {
        cards
            .insert_one(doc! { "_id": id, "title": "글" })
            .await
            .unwrap();
    }
    let (stop_source, source) = p.source.spawn();
    p.source.wait_snapshot_done("card").await;
    let sync_cfg = p.write_sync();
    let sync_cfg = sync_cfg.to_str().unwrap().to_string();
    let start_sync = || Proc::start("es-sync", &["--config", &sync_cfg], &[]);
    let mut sync = start_sync();
    // Replies arrive while es-sync is killed twice.
    let writer = {
        let (replies, ids) = (replies.clone(), ids.clone());
        tokio::spawn(async move {
            for k in 0..200i64 {
                let card = ids[(k % 5) as usize];
                replies
                    .insert_one(reply(&format!("k{k}"), card, k, "댓글"))
                    .await
                    .unwrap();
                if k % 4 == 3 {
                    replies
                        .delete_one(doc! { "_id": format!("k{}", k - 1) })
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        sync.kill9();
        sync = start_sync();
    }
    writer.await.unwrap();
    for id in &ids {
        card_with(&p, *id, 30).await;
    }
    p.assert_verified().await;

    // A replay of everything from the earliest offset leaves it right.
    assert!(sync.terminate().success(), "{}", sync.log_text());
    let out = std::process::Command::new(e2e_tests::process::binary("es-sync"))
        .args(["--config", &sync_cfg, "replay", "--to-earliest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sync = start_sync();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        card_with(&p, *id, 30).await;
    }
    p.assert_verified().await;

    // A reindex of the cards carries the roll-up into the new index.
    let into = format!("{}-000002", p.cards);
    let out = std::process::Command::new(e2e_tests::process::binary("es-sync"))
        .args([
            "--config",
            &sync_cfg,
            "reindex",
            "--topic",
            &p.source.topic("card"),
            "--into",
            &into,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in &ids {
        card_with(&p, *id, 30).await;
    }
    p.assert_verified().await;
    let mut sync = sync;
    assert!(sync.terminate().success(), "{}", sync.log_text());
    stop_source.cancel();
    source.await.unwrap().unwrap();
}

/// es-sync killed between writing a new card and writing its roll-up:
/// the card is redelivered at the version the index already holds. The
/// redelivered write is a version conflict, and the roll-up must still be
/// computed (the chaos run found cards left without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_card_without_its_roll_up_gets_it() {
    use e2e_tests::sync_support::es_call;
    use elasticsearch::http::Method;
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    let (stop_source, source) = p.source.spawn();
    p.source.wait_snapshot_done("card").await;
    p.source.wait_snapshot_done("reply").await;
    // Changes, not snapshot copies (a parent's snapshot copy always has its
    // roll-up recomputed).
    let id = ObjectId::new();
    cards
        .insert_one(doc! { "_id": id, "title": "단풍" })
        .await
        .unwrap();
    for k in 0..3 {
        replies
            .insert_one(reply(&format!("r{k}"), id, k, "좋아요"))
            .await
            .unwrap();
    }
    let sync_cfg = p.write_sync();
    let sync_cfg = sync_cfg.to_str().unwrap().to_string();
    let start_sync = || Proc::start("es-sync", &["--config", &sync_cfg], &[]);
    let mut sync = start_sync();
    card_with(&p, id, 3).await;
    assert!(sync.terminate().success(), "{}", sync.log_text());

    // The state a crash leaves: the card at its version, no roll-up yet.
    let path = format!("/{}/_doc/{}", p.cards, id.to_hex());
    let (status, got) = es_call(Method::Get, &path, None).await;
    assert_eq!(status, 200, "{got}");
    let mut source_doc = got["_source"].clone();
    for f in ["reply_count", "last_reply_at", "latest_replies"] {
        source_doc.as_object_mut().unwrap().remove(f);
    }
    let index = got["_index"].as_str().unwrap().to_string();
    let put = format!(
        "/{index}/_doc/{}?version={}&version_type=external_gte&refresh=true",
        id.to_hex(),
        got["_version"]
    );
    let (status, body) = es_call(Method::Put, &put, Some(source_doc)).await;
    assert!(status < 300, "{status} {body}");

    // Only the cards are redelivered (the replies' offsets are done).
    let out = std::process::Command::new(e2e_tests::process::binary("es-sync"))
        .args([
            "--config",
            &sync_cfg,
            "replay",
            "--topic",
            &p.source.topic("card"),
            "--to-earliest",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sync = start_sync();
    card_with(&p, id, 3).await;
    p.assert_verified().await;
    assert!(sync.terminate().success(), "{}", sync.log_text());
    stop_source.cancel();
    source.await.unwrap().unwrap();
}

/// es-sync's partitions that say they wait, with their reason.
async fn waiting(p: &Pipeline) -> Vec<String> {
    let status: Value = e2e_tests::http_get(p.sync_admin_port, "/status")
        .await
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(Value::Null);
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["waiting"].as_str().map(str::to_string))
        .collect()
}

/// A roll-up the cards' index refuses (a write block on it while a reply
/// comes; found by the chaos suite's flood-stage fault, where every
/// partition hung in the roll-up's retries and none said it waited): the
/// reply's partition shows it waits on `/status`, es-sync warns once for
/// the episode (not once per retry), and the roll-up lands once the block
/// is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_up_refused_by_a_blocked_card_index_waits_and_lands_once_lifted() {
    use e2e_tests::sync_support::es_call;
    use elasticsearch::http::Method;
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    let (stop_source, source) = p.source.spawn();
    let id = ObjectId::new();
    cards
        .insert_one(doc! { "_id": id, "title": "지리산" })
        .await
        .unwrap();
    let sync_cfg = p.write_sync();
    let sync_cfg = sync_cfg.to_str().unwrap().to_string();
    let mut sync = Proc::start("es-sync", &["--config", &sync_cfg], &[]);
    eventually("the card indexed", WAIT, || async {
        es_documents(&p.cards)
            .await
            .contains_key(&id.to_hex())
            .then_some(())
    })
    .await;
    let (_, alias) = es_call(Method::Get, &format!("/_alias/{}", p.cards), None).await;
    let index = alias.as_object().unwrap().keys().next().unwrap().clone();
    let block = |on: bool| {
        let index = index.clone();
        async move {
            let (s, b) = es_call(
                Method::Put,
                &format!("/{index}/_settings"),
                Some(json!({"index.blocks.write": on})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
    };
    block(true).await;
    replies
        .insert_one(reply("r1", id, 1, "막힌 동안의 댓글"))
        .await
        .unwrap();
    // (The reason shown is the latest error: wait for the block's, past
    // a passing 429 of a busy node.)
    let why = eventually("the reply's partition waits", WAIT, || async {
        waiting(&p)
            .await
            .into_iter()
            .find(|w| w.contains("roll-up") && w.contains("cluster_block_exception"))
    })
    .await;
    assert!(why.contains(&p.source.topic("reply")), "{why}");
    // The reason shown follows the error: the index closed meanwhile (the
    // chaos suite's CloseIndex fault met "preparing to close" first, and
    // the partition kept showing that once the index was closed).
    let index_action = |action: &'static str| {
        let index = index.clone();
        async move {
            let (s, b) = es_call(Method::Post, &format!("/{index}/{action}"), None).await;
            assert_eq!(s, 200, "{action}: {b}");
        }
    };
    index_action("_close").await;
    let why = eventually("the wait says the index is closed", WAIT, || async {
        waiting(&p)
            .await
            .into_iter()
            .find(|w| w.contains("index_closed_exception"))
    })
    .await;
    assert!(why.contains("roll-up"), "{why}");
    index_action("_open").await;
    // The reply itself is written (its index is not blocked).
    eventually("the reply indexed", WAIT, || async {
        es_documents(&p.replies)
            .await
            .contains_key("r1")
            .then_some(())
    })
    .await;
    // Retries go on (every second at most here) without a warning each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    block(false).await;
    card_with(&p, id, 1).await;
    eventually("the wait cleared", WAIT, || async {
        waiting(&p).await.is_empty().then_some(())
    })
    .await;
    p.assert_verified().await;
    assert!(sync.terminate().success(), "{}", sync.log_text());
    let log = sync.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("roll-up"))
        .count();
    assert_eq!(warnings, 1, "one warning for the episode:\n{log}");
    assert!(log.contains("works again: the partition goes on"), "{log}");
    stop_source.cancel();
    source.await.unwrap().unwrap();
}

/// es-sync killed after a request of replies that deletes one (then one
/// that moves one to another card) was applied by Elasticsearch and
/// before the cards' roll-ups were written (a stop point right there,
/// then kill -9). Redelivered, the delete finds no reply left to name its
/// card and the move finds the reply already under its new card: without
/// the parents flagged before the request, the old card kept counting the
/// reply it lost (found by the chaos suite's "Elasticsearch frozen while
/// es-sync gets SIGTERM" fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_deleted_or_moved_just_before_a_crash_leave_their_card() {
    use e2e_tests::sync_support::es_call;
    use elasticsearch::http::Method;
    let p = Pipeline::new();
    let db = mongo().await.database(&p.source.db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    let (a, b) = (ObjectId::new(), ObjectId::new());
    for id in [a, b] {
        cards
            .insert_one(doc! { "_id": id, "title": "단풍" })
            .await
            .unwrap();
    }
    for k in 0..3 {
        replies
            .insert_one(reply(&format!("r{k}"), a, k, "좋아요"))
            .await
            .unwrap();
    }
    let (stop_source, source) = p.source.spawn();
    let sync_cfg = p.write_sync();
    let sync_cfg = sync_cfg.to_str().unwrap().to_string();
    // Stops itself right after the first request that deletes or moves a
    // reply was answered, before the roll-up.
    let start_sync = |faults: &str| {
        Proc::start(
            "es-sync",
            &["--config", &sync_cfg],
            &[(shared::faults::ENV, faults)],
        )
    };
    let armed = "sync.rollup.children_sent:leaving=1";
    let reply_at = |id: &'static str| {
        let index = p.replies.clone();
        async move { es_call(Method::Get, &format!("/{index}/_doc/{id}"), None).await }
    };
    let mut sync = start_sync(armed);
    card_with(&p, a, 3).await;

    // A delete, applied, then the crash.
    replies.delete_one(doc! { "_id": "r1" }).await.unwrap();
    eventually("r1 deleted from the index", WAIT, || async {
        (reply_at("r1").await.0 == 404).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sync.kill9();
    let card = &es_documents(&p.cards).await[&a.to_hex()];
    assert_eq!(card["reply_count"], 3, "the crash came before the roll-up");
    let mut sync = start_sync(armed);
    card_with(&p, a, 2).await;

    // A move to the other card, applied, then the crash.
    replies
        .update_one(doc! { "_id": "r2" }, doc! { "$set": { "card_id": b } })
        .await
        .unwrap();
    eventually("r2 under card b in the index", WAIT, || async {
        let (s, body) = reply_at("r2").await;
        (s == 200 && body["_source"]["_sync"]["parent"] == json!(b.to_hex())).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sync.kill9();
    let mut sync = start_sync("");
    card_with(&p, a, 1).await;
    card_with(&p, b, 1).await;
    // No flag is left once the roll-ups are written.
    let card = &es_documents(&p.cards).await[&a.to_hex()];
    assert!(card["_sync"].get("rollup_pending").is_none(), "{card}");
    p.assert_verified().await;
    assert!(sync.terminate().success(), "{}", sync.log_text());
    stop_source.cancel();
    source.await.unwrap().unwrap();
}
