//! The index refuses writes until an operator acts: a write block, the
//! flood-stage disk block, a closed index, a deleted alias, the mapping's
//! field limit. Each is applied to one of the run's indices under load;
//! es-sync must pause the partitions that write there (seen on `/status`),
//! dead-letter nothing, and land every write once the operator has fixed
//! the index.
//!
//! The field limit (`index.mapping.total_fields.limit`) met by a document
//! with a new field is an operator's fault too, not the document's: es-sync
//! classes it *blocked* (`sync/src/bulk/retry.rs`), so the document waits,
//! with its partition, until the operator raises the limit, then lands with
//! its new field mapped; nothing is dead-lettered. (The shipped mappings
//! are `dynamic: false`, where a new field is kept in `_source` and never
//! meets the limit: the fault first turns dynamic mapping on, as an
//! operator who wants new fields searchable would.)

use super::run::Run;
use super::Fault;
use elasticsearch::http::Method;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime};
use rand::Rng;
use serde_json::json;
use std::time::{Duration, Instant};

/// How long es-sync may take to notice a refused write (the load writes
/// to both indices every few ms; the flood-stage block comes with the
/// node's next disk check, every 10 s at the fastest).
const NOTICE: Duration = Duration::from_secs(90);

/// Injects one of the index faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    match fault {
        Fault::WriteBlock => write_block(run).await,
        Fault::FloodStage => flood_stage(run).await,
        Fault::CloseIndex => close(run).await,
        Fault::AliasDeleted => alias_deleted(run).await,
        Fault::FieldLimit => field_limit(run).await,
        other => unreachable!("{other:?} is not an index fault"),
    }
}

async fn settings(run: &Run, index: &str, body: serde_json::Value) {
    run.stack
        .es_ok(Method::Put, &format!("/{index}/_settings"), Some(body))
        .await;
}

/// Waits until es-sync says it waits for `needle`, holds the fault for
/// `hold`, and notes both.
async fn hold(run: &mut Run, what: &str, needle: &str, hold: Duration) {
    let t = Instant::now();
    run.wait_sync_waiting(needle, NOTICE).await;
    let noticed = t.elapsed();
    tokio::time::sleep(hold).await;
    run.note = format!(
        "{what}, noticed in {:.1} s, held {:.0} s",
        noticed.as_secs_f64(),
        hold.as_secs_f64()
    );
}

async fn write_block(run: &mut Run) {
    let alias = run.pick_alias();
    let index = run.concrete(&alias).await;
    let d = run.pick_ms(5_000..8_000, 5_000..30_000);
    settings(run, &index, json!({"index.blocks.write": true})).await;
    hold(run, &format!("on {alias}"), "cluster_block_exception", d).await;
    settings(run, &index, json!({"index.blocks.write": false})).await;
}

/// Watermarks every disk is over: the node applies `read_only_allow_delete`
/// to every index at its next disk check (`cluster.info.update.interval`,
/// 10 s at the fastest). Then the operator clears them and removes the
/// block (with the threshold off again, as the bench runs, the node does not
/// remove it by itself).
async fn flood_stage(run: &mut Run) {
    let d = run.pick_ms(2_000..4_000, 2_000..15_000);
    run.stack
        .es_ok(
            Method::Put,
            "/_cluster/settings",
            Some(json!({"transient": {
                "cluster.routing.allocation.disk.threshold_enabled": true,
                "cluster.routing.allocation.disk.watermark.low": "1%",
                "cluster.routing.allocation.disk.watermark.high": "1%",
                "cluster.routing.allocation.disk.watermark.flood_stage": "1%",
                "cluster.info.update.interval": "10s",
            }})),
        )
        .await;
    hold(run, "all indices", "flood-stage", d).await;
    run.stack
        .es_ok(
            Method::Put,
            "/_cluster/settings",
            Some(json!({"transient": {
                "cluster.routing.allocation.disk.threshold_enabled": null,
                "cluster.routing.allocation.disk.watermark.low": null,
                "cluster.routing.allocation.disk.watermark.high": null,
                "cluster.routing.allocation.disk.watermark.flood_stage": null,
                "cluster.info.update.interval": null,
            }})),
        )
        .await;
    settings(
        run,
        "_all",
        json!({"index.blocks.read_only_allow_delete": null}),
    )
    .await;
}

async fn close(run: &mut Run) {
    let alias = run.pick_alias();
    let index = run.concrete(&alias).await;
    let d = run.pick_ms(2_000..4_000, 2_000..15_000);
    run.stack
        .es_ok(Method::Post, &format!("/{index}/_close"), None)
        .await;
    hold(run, &format!("{alias} closed"), "index_closed_exception", d).await;
    run.stack
        .es_ok(Method::Post, &format!("/{index}/_open"), None)
        .await;
}

/// The alias deleted from its index, with automatic index creation
/// forbidden for its name (else the first write would create an index of
/// that name with dynamic mappings, which the operator must then delete
/// before the alias can come back), then added again as the write index.
async fn alias_deleted(run: &mut Run) {
    let alias = run.pick_alias();
    let index = run.concrete(&alias).await;
    let d = run.pick_ms(2_000..4_000, 2_000..15_000);
    run.stack
        .es_ok(
            Method::Put,
            "/_cluster/settings",
            Some(json!({"transient": {"action.auto_create_index": format!("-{alias},+*")}})),
        )
        .await;
    run.stack
        .es_ok(Method::Delete, &format!("/{index}/_alias/{alias}"), None)
        .await;
    hold(
        run,
        &format!("{alias} deleted"),
        "index_not_found_exception",
        d,
    )
    .await;
    run.stack
        .es_ok(
            Method::Post,
            "/_aliases",
            Some(json!({"actions": [{"add": {"index": index, "alias": alias, "is_write_index": true}}]})),
        )
        .await;
    run.stack
        .es_ok(
            Method::Put,
            "/_cluster/settings",
            Some(json!({"transient": {"action.auto_create_index": null}})),
        )
        .await;
}

/// Dynamic mapping on and a field limit below what the mapping has, then a
/// document with a new field; the operator raises the limit.
async fn field_limit(run: &mut Run) {
    let alias = run.pick_alias();
    let index = run.concrete(&alias).await;
    let d = run.pick_ms(2_000..4_000, 2_000..15_000);
    run.stack
        .es_ok(
            Method::Put,
            &format!("/{index}/_mapping"),
            Some(json!({"dynamic": true})),
        )
        .await;
    settings(run, &index, json!({"index.mapping.total_fields.limit": 1})).await;
    let field = format!("새필드_{}", run.rng.random_range(0..1000));
    let id = ObjectId::new();
    let doc = if alias == run.p.cards {
        doc! { "_id": id, "title": "필드 한도", "likes": 1, field.as_str(): "새 값" }
    } else {
        doc! { "_id": id, "card_id": ObjectId::new(), "body": "필드 한도 댓글",
        "created_at": DateTime::now(), field.as_str(): "새 값" }
    };
    let coll = if alias == run.p.cards {
        "card"
    } else {
        "reply"
    };
    run.db
        .collection(coll)
        .insert_one(doc)
        .await
        .expect("the document with a new field");
    run.extra_writes += 1;
    hold(
        run,
        &format!("{alias}, new field {field}"),
        "Limit of total fields",
        d,
    )
    .await;
    settings(
        run,
        &index,
        json!({"index.mapping.total_fields.limit": 1000}),
    )
    .await;
    // The document lands with its field mapped.
    let key = crate::e2e::es_id(&Bson::ObjectId(id));
    crate::eventually("the new field's document", Duration::from_secs(60), || {
        let (alias, key) = (alias.clone(), key.clone());
        async move {
            crate::e2e::es_documents(&alias)
                .await
                .contains_key(&key)
                .then_some(())
        }
    })
    .await;
}
