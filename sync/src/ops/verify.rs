//! `es-sync verify`: compares a MongoDB collection with the alias its topic
//! feeds, document by document, and optionally repairs the differences.
//!
//! Two passes, each in batches so memory stays bounded whatever the size:
//!
//! 1. MongoDB in `_id` order: each batch of documents is turned into the
//!    body es-sync would index (same id rule, projection and JSON mapping,
//!    [`crate::action::document`]) and compared with the index's copies,
//!    fetched by `_mget`: absent = **missing**, different = **stale**.
//! 2. The index by scroll: each page of ids is looked up in MongoDB with one
//!    `$in` query: absent there = **extra**.
//!
//! `--repair` re-emits the differences *through the pipeline*: the current
//! MongoDB document of a missing or stale one as a `snapshot` record, a
//! `delete` for an extra one, produced to the topic with the version of the
//! cluster time read *before* the comparison began. A change made after
//! that time has a higher version, so a repair never overwrites it; the fix
//! is versioned like any other change.

use crate::action;
use crate::config::{SyncConfig, TopicConfig};
use crate::elastic;
use anyhow::Context as _;
use elasticsearch::http::Method;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{json, Map, Value};
use shared::ejson::{bson_to_json, canonical_key, document_to_json, json_to_bson};
use shared::wire::event::{ChangeEvent, ClusterTime, Namespace, SnapshotInfo, SCHEMA};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to verify.
#[derive(Debug, Clone)]
pub struct Request {
    /// Topic of the config whose alias is checked.
    pub topic: String,
    /// MongoDB connection string.
    pub mongodb_uri: String,
    /// `db.collection`; default from the topic name `{prefix}.{db}.{coll}`.
    pub collection: Option<String>,
    /// Re-emit the differences through the topic.
    pub repair: bool,
    /// Documents per batch.
    pub batch: usize,
    /// Ids listed per kind of difference.
    pub sample: usize,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// The outcome (printed as JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Topic.
    pub topic: String,
    /// Alias compared.
    pub alias: String,
    /// `db.collection` compared.
    pub collection: String,
    /// Documents read from MongoDB.
    pub mongo_documents: u64,
    /// Documents read from the index.
    pub index_documents: u64,
    /// In MongoDB, not in the index.
    pub missing: u64,
    /// In both, with different content.
    pub stale: u64,
    /// In the index, not in MongoDB.
    pub extra: u64,
    /// MongoDB documents es-sync cannot index (no id, not an object): they
    /// are dead-lettered by design, not counted as differences.
    pub unindexable: u64,
    /// A few ids of each kind.
    pub samples: Samples,
    /// Records re-emitted by `--repair`.
    pub repaired: u64,
    /// Wall time of the comparison.
    pub seconds: f64,
    /// (MongoDB + index documents) / seconds.
    pub documents_per_second: f64,
    /// No difference found.
    pub equal: bool,
}

/// Sample ids.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Samples {
    /// Missing ids.
    pub missing: Vec<String>,
    /// Stale ids.
    pub stale: Vec<String>,
    /// Extra ids.
    pub extra: Vec<String>,
    /// For each sampled stale id, the top-level fields that differ (what an
    /// operator looks at first: a body field, or a roll-up field).
    pub stale_fields: BTreeMap<String, Vec<String>>,
}

/// `{prefix}.{db}.{coll}` -> `(db, coll)`.
pub fn namespace_of_topic(topic: &str) -> Option<(String, String)> {
    let mut parts = topic.rsplitn(3, '.');
    let coll = parts.next()?;
    let db = parts.next()?;
    parts.next()?;
    Some((db.to_string(), coll.to_string()))
}

/// The field mongo-source adds to a document it cut to fit the Kafka limit
/// (`source/src/stream/truncate.rs`).
pub const TRUNCATED_FIELD: &str = "_truncated";

/// `expected` as the index should hold it when the indexed copy was cut to
/// fit the Kafka limit: each field it names as cut holds a prefix of the
/// MongoDB text (then taken as equal), and the marker itself is expected.
/// A cut that is not a prefix stays a difference.
pub fn accept_truncation(expected: &Map<String, Value>, indexed: &Value) -> Map<String, Value> {
    let mut out = expected.clone();
    let Some(marker) = indexed.get(TRUNCATED_FIELD) else {
        return out;
    };
    let fields = marker["fields"].as_array().cloned().unwrap_or_default();
    for f in fields.iter().filter_map(Value::as_str) {
        let path: Vec<&str> = f.split('.').collect();
        let got = path.iter().try_fold(indexed, |v, seg| match v {
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => v.get(seg),
        });
        let Some(Value::String(cut)) = got else {
            continue;
        };
        let mut slot: Option<&mut Value> = None;
        for (k, seg) in path.iter().enumerate() {
            slot = match (k, slot) {
                (0, _) => out.get_mut(*seg),
                (_, Some(Value::Array(a))) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                (_, Some(v)) => v.get_mut(*seg),
                (_, None) => None,
            };
        }
        if let Some(Value::String(full)) = slot {
            if full.starts_with(cut.as_str()) {
                *full = cut.clone();
            }
        }
    }
    out.insert(TRUNCATED_FIELD.to_string(), marker.clone());
    out
}

/// Whether the index copy (with its `_sync`) holds `expected`.
pub fn same_content(expected: &Map<String, Value>, indexed: &Value) -> bool {
    let Some(obj) = indexed.as_object() else {
        return false;
    };
    let mut copy = obj.clone();
    copy.remove(action::SYNC_FIELD);
    &copy == expected
}

/// The top-level fields whose values differ between `expected` (what
/// MongoDB says the indexed document should be) and `indexed` (its
/// `_source`), ignoring the bookkeeping field; sorted.
pub fn differing_fields(expected: &Map<String, Value>, indexed: &Value) -> Vec<String> {
    let empty = Map::new();
    let got = indexed.as_object().unwrap_or(&empty);
    let mut out: Vec<String> = expected
        .keys()
        .chain(got.keys())
        .filter(|k| k.as_str() != action::SYNC_FIELD)
        .filter(|k| expected.get(k.as_str()) != got.get(k.as_str()))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// MongoDB values whose rendering as an Elasticsearch id is `id`.
pub fn id_candidates(id: &str) -> Vec<Bson> {
    let parsed = action::parse_id(id);
    if let Some(n) = parsed.as_i64() {
        let mut out = vec![Bson::Int64(n), Bson::Double(n as f64)];
        if let Ok(small) = i32::try_from(n) {
            out.push(Bson::Int32(small));
        }
        return out;
    }
    json_to_bson(&parsed)
        .map(|b| vec![b])
        .unwrap_or_else(|_| vec![Bson::String(id.to_string())])
}

struct Ctx<'a> {
    route: &'a TopicConfig,
    es: elasticsearch::Elasticsearch,
    /// Backoff of the reads retried while Elasticsearch is busy.
    retry: shared::retry::RetryConfig,
    coll: mongodb::Collection<Document>,
    ns: Namespace,
    repair: Option<(FutureProducer, SnapshotInfo)>,
    report: Report,
    sample: usize,
    /// The roll-up, when this topic's documents are parents.
    rollup: Option<super::rollup_check::RollupCheck>,
}

/// Runs the comparison (and the repair) and returns the report.
pub async fn verify(cfg: &SyncConfig, req: Request) -> anyhow::Result<Report> {
    let route = cfg
        .topics
        .iter()
        .find(|t| t.topic == req.topic)
        .with_context(|| format!("topic {} is not in the configuration", req.topic))?;
    let (db, coll) = match &req.collection {
        Some(c) => c
            .split_once('.')
            .map(|(d, c)| (d.to_string(), c.to_string()))
            .with_context(|| format!("--collection {c}: expected db.collection"))?,
        None => namespace_of_topic(&req.topic).with_context(|| {
            format!(
                "cannot tell the collection from topic {}: pass --collection db.coll",
                req.topic
            )
        })?,
    };
    let client = mongodb::Client::with_uri_str(&req.mongodb_uri)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "mongodb: {}",
                shared::config::scrub(&e.to_string(), &req.mongodb_uri)
            )
        })?;
    let ns = Namespace {
        db: db.clone(),
        coll: coll.clone(),
    };
    let collection = client.database(&db).collection::<Document>(&coll);
    let es = elastic::client(&cfg.elasticsearch)?;
    let repair = if req.repair {
        // Versioned like a snapshot copy: one tick before the time read
        // first, so a change at that very time (still committing while the
        // comparison read) is newer than the repair and wins.
        let ts = cluster_time(&client, &collection).await?;
        let version = shared::wire::change_stream::snapshot_version(mongodb::bson::Timestamp {
            time: ts.t,
            increment: ts.i,
        });
        let producer: FutureProducer = cfg
            .kafka
            .client_config()
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .context("kafka producer")?;
        let info = SnapshotInfo {
            id: format!("verify-{}", uuid::Uuid::new_v4()),
            version,
        };
        Some((producer, info))
    } else {
        None
    };
    let rollup = match &cfg.rollup {
        Some(r) if r.parent_topic == req.topic => {
            let (cdb, ccoll) = namespace_of_topic(&r.child_topic).with_context(|| {
                format!(
                    "cannot tell the children's collection from topic {}",
                    r.child_topic
                )
            })?;
            Some(super::rollup_check::RollupCheck {
                cfg: r.clone(),
                children: client.database(&cdb).collection::<Document>(&ccoll),
            })
        }
        _ => None,
    };
    let mut ctx = Ctx {
        rollup,
        route,
        es,
        retry: cfg.retry.clone(),
        coll: collection,
        ns: ns.clone(),
        repair,
        report: Report {
            topic: req.topic.clone(),
            alias: route.alias.clone(),
            collection: ns.to_string(),
            mongo_documents: 0,
            index_documents: 0,
            missing: 0,
            stale: 0,
            extra: 0,
            unindexable: 0,
            samples: Samples::default(),
            repaired: 0,
            seconds: 0.0,
            documents_per_second: 0.0,
            equal: false,
        },
        sample: req.sample,
    };
    let started = Instant::now();
    let mongo_total = ctx.coll.estimated_document_count().await.unwrap_or(0);
    let index_total = count(&ctx.es, &ctx.retry, &route.alias).await.unwrap_or(0);
    let bar = progress_bar(req.progress, mongo_total + index_total);
    mongo_pass(&mut ctx, req.batch, &bar).await?;
    index_pass(&mut ctx, req.batch, &bar).await?;
    bar.finish_and_clear();
    let r = &mut ctx.report;
    r.seconds = started.elapsed().as_secs_f64();
    r.documents_per_second = (r.mongo_documents + r.index_documents) as f64 / r.seconds.max(1e-9);
    r.equal = r.missing == 0 && r.stale == 0 && r.extra == 0;
    Ok(ctx.report)
}

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} documents, {per_sec}, ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn cluster_time(
    client: &mongodb::Client,
    coll: &mongodb::Collection<Document>,
) -> anyhow::Result<ClusterTime> {
    let mut session = client.start_session().await?;
    coll.find_one(doc! {}).session(&mut session).await?;
    let t = session
        .operation_time()
        .context("the server reports no cluster time (is it a replica set?)")?;
    Ok(ClusterTime {
        t: t.time,
        i: t.increment,
    })
}

async fn count(
    es: &elasticsearch::Elasticsearch,
    retry: &shared::retry::RetryConfig,
    alias: &str,
) -> anyhow::Result<u64> {
    let v = elastic::call_ok_retrying(es, retry, Method::Get, &format!("/{alias}/_count"), None)
        .await?;
    Ok(v["count"].as_u64().unwrap_or(0))
}

fn note(list: &mut Vec<String>, limit: usize, id: &str) {
    if list.len() < limit {
        list.push(id.to_string());
    }
}

async fn mongo_pass(
    ctx: &mut Ctx<'_>,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    bar.set_message("MongoDB -> index");
    let mut cursor = ctx
        .coll
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .batch_size(u32::try_from(batch).unwrap_or(1000))
        .await?;
    let mut docs: Vec<Document> = Vec::with_capacity(batch);
    loop {
        let next = cursor.try_next().await?;
        let done = next.is_none();
        if let Some(d) = next {
            docs.push(d);
        }
        if docs.len() >= batch || (done && !docs.is_empty()) {
            check_mongo_batch(ctx, std::mem::take(&mut docs)).await?;
            bar.set_position(ctx.report.mongo_documents);
        }
        if done {
            return Ok(());
        }
    }
}

async fn check_mongo_batch(ctx: &mut Ctx<'_>, docs: Vec<Document>) -> anyhow::Result<()> {
    let mut expected = Vec::with_capacity(docs.len());
    for d in &docs {
        ctx.report.mongo_documents += 1;
        let json = document_to_json(d);
        let key = json!({ "_id": d.get("_id").map(bson_to_json).unwrap_or(Value::Null) });
        match action::document(&json, &key, ctx.route) {
            Ok((id, body)) => expected.push((id, body, d)),
            Err(_) => ctx.report.unindexable += 1,
        }
    }
    if expected.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = expected.iter().map(|(id, _, _)| id.as_str()).collect();
    let body = json!({ "ids": ids });
    let v = elastic::call_ok_retrying(
        &ctx.es,
        &ctx.retry,
        Method::Post,
        &format!("/{}/_mget", ctx.route.alias),
        Some(&body),
    )
    .await?;
    let found = v["docs"].as_array().cloned().unwrap_or_default();
    let rollups = match &ctx.rollup {
        Some(check) => {
            let ids: Vec<Bson> = expected
                .iter()
                .filter_map(|(_, _, d)| d.get("_id").cloned())
                .collect();
            Some(check.expected(&ids).await?)
        }
        None => None,
    };
    let mut to_repair = vec![];
    for ((id, body, d), hit) in expected.iter().zip(found.iter()) {
        let body = &accept_truncation(body, &hit["_source"]);
        let same = match (&ctx.rollup, rollups.as_ref().and_then(|r| r.get(id))) {
            (Some(check), Some(r)) => check.holds(body, r, &hit["_source"]),
            _ => same_content(body, &hit["_source"]),
        };
        if hit["found"] != true {
            ctx.report.missing += 1;
            note(&mut ctx.report.samples.missing, ctx.sample, id);
            to_repair.push(*d);
        } else if !same {
            ctx.report.stale += 1;
            if ctx.report.samples.stale.len() < ctx.sample {
                let mut want = body.clone();
                if let (Some(check), Some(r)) =
                    (&ctx.rollup, rollups.as_ref().and_then(|r| r.get(id)))
                {
                    r.apply(&check.cfg, &mut want);
                }
                let fields = differing_fields(&want, &hit["_source"]);
                tracing::info!(id = %id, fields = ?fields, "stale document");
                ctx.report.samples.stale_fields.insert(id.clone(), fields);
            }
            note(&mut ctx.report.samples.stale, ctx.sample, id);
            to_repair.push(*d);
        }
    }
    for d in to_repair {
        emit_document(ctx, d).await?;
    }
    Ok(())
}

async fn index_pass(
    ctx: &mut Ctx<'_>,
    batch: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    bar.set_message("index -> MongoDB");
    let alias = ctx.route.alias.clone();
    let body = json!({ "size": batch, "_source": false, "sort": ["_doc"] });
    let mut page = elastic::call_ok_retrying(
        &ctx.es,
        &ctx.retry,
        Method::Post,
        &format!("/{alias}/_search?scroll=2m"),
        Some(&body),
    )
    .await?;
    let mut scroll_id = page["_scroll_id"].as_str().map(str::to_string);
    loop {
        let hits: Vec<String> = page["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["_id"].as_str().map(str::to_string))
            .collect();
        if hits.is_empty() {
            break;
        }
        ctx.report.index_documents += hits.len() as u64;
        check_index_page(ctx, &hits).await?;
        bar.set_position(ctx.report.mongo_documents + ctx.report.index_documents);
        let Some(sid) = scroll_id.clone() else { break };
        page = elastic::call_ok_retrying(
            &ctx.es,
            &ctx.retry,
            Method::Post,
            "/_search/scroll",
            Some(&json!({ "scroll": "2m", "scroll_id": sid })),
        )
        .await?;
        scroll_id = page["_scroll_id"]
            .as_str()
            .map(str::to_string)
            .or(scroll_id);
    }
    if let Some(sid) = scroll_id {
        let _ = elastic::call(
            &ctx.es,
            Method::Delete,
            "/_search/scroll",
            Some(&json!({ "scroll_id": [sid] })),
        )
        .await;
    }
    Ok(())
}

async fn check_index_page(ctx: &mut Ctx<'_>, ids: &[String]) -> anyhow::Result<()> {
    let field = ctx.route.id_field.clone();
    let candidates: Vec<Bson> = ids.iter().flat_map(|id| id_candidates(id)).collect();
    let filter = doc! { field.as_str(): { "$in": candidates } };
    let projection = doc! { field.as_str(): 1 };
    let found: Vec<Document> = ctx
        .coll
        .find(filter)
        .projection(projection)
        .await?
        .try_collect()
        .await?;
    let present: std::collections::HashSet<String> = found
        .iter()
        .filter_map(|d| {
            let json = document_to_json(d);
            let key = json!({ "_id": d.get("_id").map(bson_to_json).unwrap_or(Value::Null) });
            // The id rule needs only the id field; the rest of the body is not read.
            action::document(&json, &key, ctx.route)
                .ok()
                .map(|(id, _)| id)
        })
        .collect();
    for id in ids {
        if !present.contains(id) {
            ctx.report.extra += 1;
            note(&mut ctx.report.samples.extra, ctx.sample, id);
            emit_delete(ctx, id).await?;
        }
    }
    Ok(())
}

async fn emit_document(ctx: &mut Ctx<'_>, d: &Document) -> anyhow::Result<()> {
    let Some((producer, info)) = &ctx.repair else {
        return Ok(());
    };
    let Some(id) = d.get("_id") else {
        return Ok(());
    };
    let (key, ev) = shared::wire::change_stream::snapshot_record(d, &ctx.ns, info)?;
    debug_assert_eq!(key, canonical_key(id));
    produce(producer, &ctx.route.topic, &key, &ev).await?;
    ctx.report.repaired += 1;
    Ok(())
}

async fn emit_delete(ctx: &mut Ctx<'_>, es_id: &str) -> anyhow::Result<()> {
    let Some((producer, info)) = &ctx.repair else {
        return Ok(());
    };
    // The `_id` that renders to this Elasticsearch id, keyed as a change
    // of that document would be (so it lands in the same partition).
    let id = action::parse_id(es_id);
    let bson = json_to_bson(&id).map_err(|e| anyhow::anyhow!("id {es_id}: {e}"))?;
    let ev = shared::wire::change_stream::delete_event(&ctx.ns, &bson, info.version);
    produce(producer, &ctx.route.topic, &canonical_key(&bson), &ev).await?;
    ctx.report.repaired += 1;
    Ok(())
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    ev: &ChangeEvent,
) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(ev)?;
    let version = ev.version.to_string();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "op",
            value: Some(ev.op.as_str()),
        })
        .insert(rdkafka::message::Header {
            key: "version",
            value: Some(version.as_str()),
        })
        .insert(rdkafka::message::Header {
            key: "schema",
            value: Some(SCHEMA),
        });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("repair record to {topic}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_give_the_collection() {
        assert_eq!(
            namespace_of_topic("live.mountain.card"),
            Some(("mountain".into(), "card".into()))
        );
        assert_eq!(
            namespace_of_topic("a.b.live.mountain.card"),
            Some(("mountain".into(), "card".into()))
        );
        assert_eq!(namespace_of_topic("card"), None);
    }

    #[test]
    fn differing_fields_name_changed_missing_and_extra_fields() {
        let expected = json!({"title": "t", "likes": 2, "tags": ["a"]});
        let indexed = json!({"title": "t", "likes": 3, "extra": 1, "_sync": {"version": 1}});
        assert_eq!(
            differing_fields(expected.as_object().unwrap(), &indexed),
            vec!["extra", "likes", "tags"]
        );
        let same = json!({"title": "t", "likes": 2, "tags": ["a"], "_sync": {}});
        assert!(differing_fields(expected.as_object().unwrap(), &same).is_empty());
    }

    #[test]
    fn content_ignores_sync_metadata_and_field_order() {
        let expected = json!({"title": "t", "likes": 2})
            .as_object()
            .cloned()
            .unwrap();
        assert!(same_content(
            &expected,
            &json!({"likes": 2, "title": "t", "_sync": {"version": 9}})
        ));
        assert!(!same_content(&expected, &json!({"likes": 3, "title": "t"})));
        assert!(!same_content(&expected, &json!({"title": "t"})));
    }

    #[test]
    fn id_candidates_cover_the_rendered_types() {
        let c = id_candidates("65a1b2c3d4e5f60718293a4b");
        assert!(c.iter().any(|b| matches!(b, Bson::ObjectId(_))));
        let c = id_candidates("42");
        assert!(c.contains(&Bson::Int32(42)) && c.contains(&Bson::Int64(42)));
        assert!(
            !c.contains(&Bson::String("42".into())),
            "the string is s:42"
        );
        assert_eq!(id_candidates("s:42"), vec![Bson::String("42".into())]);
        assert_eq!(id_candidates("plain"), vec![Bson::String("plain".into())]);
    }

    #[test]
    fn a_copy_cut_to_fit_is_equal_when_it_holds_a_prefix() {
        let expected = json!({"title": "t", "body": "설악산 단풍이 들었다", "n": {"x": "abcdef"}})
            .as_object()
            .unwrap()
            .clone();
        let marker = json!({"fields": ["body", "n.x"], "original_size": 2_000_000});
        let cut =
            json!({"title": "t", "body": "설악산 단풍", "n": {"x": "abc"}, "_truncated": marker});
        assert!(same_content(&accept_truncation(&expected, &cut), &cut));
        let wrong =
            json!({"title": "t", "body": "다른 글", "n": {"x": "abc"}, "_truncated": marker});
        assert!(!same_content(&accept_truncation(&expected, &wrong), &wrong));
        let whole = json!({"title": "t", "body": "설악산 단풍이 들었다", "n": {"x": "abcdef"}});
        assert!(same_content(&accept_truncation(&expected, &whole), &whole));
    }
}
