//! `es-sync reindex --topic T --into NEW_INDEX [--from auto|topic|index]`:
//! rebuilds a topic's alias into a new concrete index (a new mapping, a new
//! analyzer or dictionary), with no downtime for search.
//!
//! Where the documents come from ([`From`]):
//! - `topic`: the topic alone, from its earliest offset. Only when the
//!   topic still holds every document ([`history`]): a topic that deletes
//!   after 7 days (the shipped `retention.ms`) has lost the documents
//!   unchanged for a week, and swapping in an index built from it would
//!   make them vanish from search. Refused then.
//! - `index`: a copy of the current index (Elasticsearch `_reindex`, each
//!   document at its version), then the topic from the offsets the running
//!   group had committed before the copy began: every change not yet in the
//!   copy is applied again (versions make the repeats harmless). The index
//!   is refreshed between reading those offsets and the copy, since the
//!   copy sees only refreshed documents.
//! - `auto` (default): `topic` when its history is complete, else `index`.
//!
//! 1. Creates `NEW_INDEX` from the topic's index file (kept if it exists:
//!    an interrupted reindex resumes).
//! 2. (`index` only) Copies the current index into it and sets the
//!    reindex group's offsets to the running group's.
//! 3. Consumes `T` with a separate group (`{group_id}.reindex.{NEW_INDEX}`),
//!    writing into `NEW_INDEX` only, until every partition reached the high
//!    watermark read at the start.
//! 4. Swaps the alias atomically (one `_aliases` request removing the old
//!    indices and adding `NEW_INDEX` as write index): searches always see
//!    one complete index.
//! 5. Keeps consuming until the high watermarks read after the swap, so
//!    changes the running `es-sync` wrote into the old index between 2 and
//!    3 also reach the new one; then stops. The old index is left for the
//!    operator to delete.
//!
//! Delivery guarantee: the same as the main consumer (at-least-once,
//! idempotent by external versions); after step 4 the new index holds
//! every change of the topic, and the running `es-sync` writes there.

pub mod history;

use crate::config::{validate_index_name, SyncConfig};
use crate::elastic::{self, EsError};
use crate::index_bootstrap;
use crate::status::SyncStatus;
use anyhow::{bail, Context as _};
use elasticsearch::http::Method;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a reindex takes the documents from (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum From {
    /// The topic when its history is complete, else the index.
    #[default]
    Auto,
    /// The topic alone (refused when its history is incomplete).
    Topic,
    /// A copy of the current index, then the topic from the running
    /// group's offsets.
    Index,
}

impl std::str::FromStr for From {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "topic" => Ok(Self::Topic),
            "index" => Ok(Self::Index),
            other => Err(format!("`{other}`: expected auto, topic or index")),
        }
    }
}

/// What a reindex did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// The alias swapped.
    pub alias: String,
    /// Indices the alias pointed at before.
    pub previous: Vec<String>,
    /// The new index.
    pub index: String,
    /// The consumer group used.
    pub group: String,
    /// Where the documents came from (`topic` or `index`).
    pub from: From,
}

/// The group a reindex into `index` uses.
pub fn reindex_group(cfg: &SyncConfig, index: &str) -> String {
    format!("{}.reindex.{index}", cfg.kafka.group_id)
}

/// High watermarks of every partition of `topic`.
fn watermarks(cfg: &SyncConfig, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let c: BaseConsumer = cfg.kafka.client_config().create().context("kafka client")?;
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let md = c
        .fetch_metadata(Some(topic), timeout)
        .context("topic metadata")?;
    let mt = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic not found")?;
    if mt.partitions().is_empty() {
        bail!("topic {topic} not found or has no partitions");
    }
    let mut out = BTreeMap::new();
    for p in mt.partitions() {
        let (_, high) = c
            .fetch_watermarks(topic, p.id(), timeout)
            .context("watermarks")?;
        out.insert(p.id(), high);
    }
    Ok(out)
}

/// Whether the run behind `status` has done every record below `marks`.
fn caught_up(status: &SyncStatus, topic: &str, marks: &BTreeMap<i32, i64>) -> bool {
    let parts = status.partitions();
    marks.iter().all(|(p, high)| {
        *high == 0
            || parts.iter().any(|s| {
                s.topic == topic && s.partition == *p && s.committable.is_some_and(|c| c >= *high)
            })
    })
}

async fn wait_caught_up(
    status: &SyncStatus,
    topic: &str,
    marks: &BTreeMap<i32, i64>,
    task: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if caught_up(status, topic, marks) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            r = &mut *task => {
                r.context("reindex consumer task")??;
                bail!("reindex consumer stopped before catching up");
            }
            () = shutdown.cancelled() => bail!("interrupted; run the same command again to resume"),
        }
    }
}

/// Runs a reindex (see the module documentation).
pub async fn reindex(
    cfg: SyncConfig,
    topic: &str,
    into: &str,
    from: From,
    shutdown: CancellationToken,
) -> anyhow::Result<ReindexReport> {
    cfg.validate()?;
    validate_index_name("--into", into)?;
    let route = cfg
        .route(topic)
        .cloned()
        .with_context(|| format!("topic {topic} is not in the config"))?;
    if into == route.alias {
        bail!(
            "--into must be a new index name, not the alias {}",
            route.alias
        );
    }
    let es = elastic::client(&cfg.elasticsearch)?;
    let file = index_bootstrap::read_index_file(&route.index_file)?;
    let parts = {
        let (c, t) = (cfg.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || history::read(&c, &t)).await??
    };
    let from = choose(from, history::judge(topic, &parts))?;
    let group = reindex_group(&cfg, into);
    if from == From::Index {
        // Before the copy: everything below these offsets is in the index.
        let (c, t, g) = (cfg.clone(), topic.to_string(), cfg.kafka.group_id.clone());
        let ids: Vec<i32> = parts.iter().map(|p| p.partition).collect();
        let live =
            tokio::task::spawn_blocking(move || history::committed(&c, &g, &t, &ids)).await??;
        let start = start_offsets(topic, &cfg.kafka.group_id, &parts, &live)?;
        // The copy is a search, which sees only what a refresh made
        // visible; a change the group committed just before (accepted, not
        // yet refreshed) would be in neither the copy nor the topic from
        // `start`. After this refresh everything below `start` is visible.
        elastic::refresh(&es, &route.alias).await?;
        copy_index(&es, &route.alias, into, &file).await?;
        let (c, g, t) = (cfg.clone(), group.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || commit_offsets(&c, &g, &t, &start)).await??;
    } else if elastic::index_exists(&es, into).await? {
        tracing::info!(index = into, "index exists; resuming the reindex into it");
    } else {
        let (status, body) = index_bootstrap::create_index(&es, into, &file, None).await?;
        if !(200..300).contains(&status) {
            return Err(EsError::Status {
                what: format!("PUT /{into}"),
                status,
                body: body.to_string(),
            }
            .into());
        }
    }
    let mut sub = cfg.clone();
    sub.kafka.group_id = group.clone();
    sub.kafka.auto_offset_reset = "earliest".into();
    sub.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    sub.topics = vec![crate::config::TopicConfig {
        alias: into.to_string(),
        ..route.clone()
    }];
    // The roll-up: a new index of parents gets its roll-ups computed from
    // the live children; a new index of children computes none (it is
    // incomplete until it is done: the running es-sync keeps the cards
    // right, and uses the new index once it is swapped in).
    sub.rollup = match cfg.rollup.clone() {
        Some(mut r) if r.parent_topic == topic => {
            r.parent_index = Some(into.to_string());
            r.child_index = cfg.route(&r.child_topic).map(|c| c.alias.clone());
            Some(r)
        }
        _ => None,
    };

    let marks = {
        let c = cfg.clone();
        let t = topic.to_string();
        tokio::task::spawn_blocking(move || watermarks(&c, &t)).await??
    };
    tracing::info!(topic, index = into, %group, ?marks, "reindex: consuming from the earliest offset");
    let status = Arc::new(SyncStatus::new(&group));
    let stop = shutdown.child_token();
    let mut task = tokio::spawn(crate::run_with_status(sub, stop.clone(), status.clone()));
    let out = async {
        wait_caught_up(&status, topic, &marks, &mut task, &shutdown).await?;
        elastic::refresh(&es, into).await?;
        let previous = elastic::alias_indices(&es, &route.alias).await?;
        let mut actions: Vec<serde_json::Value> = previous
            .iter()
            .filter(|i| i.as_str() != into)
            .map(|i| json!({"remove": {"index": i, "alias": route.alias}}))
            .collect();
        actions.push(json!({"add": {"index": into, "alias": route.alias, "is_write_index": true}}));
        elastic::call_ok(
            &es,
            Method::Post,
            "/_aliases",
            Some(&json!({ "actions": actions })),
        )
        .await?;
        tracing::info!(alias = %route.alias, index = into, ?previous, "reindex: alias swapped");
        let after = {
            let c = cfg.clone();
            let t = topic.to_string();
            tokio::task::spawn_blocking(move || watermarks(&c, &t)).await??
        };
        wait_caught_up(&status, topic, &after, &mut task, &shutdown).await?;
        Ok::<_, anyhow::Error>(ReindexReport {
            alias: route.alias.clone(),
            previous,
            index: into.to_string(),
            group: group.clone(),
            from,
        })
    }
    .await;
    stop.cancel();
    if !task.is_finished() {
        match tokio::time::timeout(Duration::from_secs(60), &mut task).await {
            Ok(r) => r.context("reindex consumer task")??,
            Err(_) => task.abort(),
        }
    }
    out
}

/// The source a reindex uses, given the topic's history.
fn choose(from: From, verdict: history::Verdict) -> anyhow::Result<From> {
    use history::Verdict;
    match (from, verdict) {
        (From::Index, _) => Ok(From::Index),
        (From::Topic | From::Auto, Verdict::Complete) => Ok(From::Topic),
        (From::Topic | From::Auto, Verdict::Unknowable(why)) => {
            tracing::warn!(%why, "rebuilding from the topic");
            Ok(From::Topic)
        }
        (From::Auto, Verdict::Incomplete(why)) => {
            tracing::warn!(?why, "the topic no longer holds every document: copying the current index, then the topic from the running group's offsets");
            Ok(From::Index)
        }
        (From::Topic, Verdict::Incomplete(why)) => bail!(
            "refusing to rebuild from the topic alone, the new index would miss documents: {}; \
             use --from index (a copy of the current index, then the topic from the running \
             group's offsets)",
            why.join("; ")
        ),
    }
}

/// Where the reindex group starts, per partition: the running group's
/// committed offsets, which the topic must still hold.
fn start_offsets(
    topic: &str,
    group: &str,
    parts: &[history::PartitionHistory],
    live: &BTreeMap<i32, Option<i64>>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for p in parts {
        let at = match live.get(&p.partition).copied().flatten() {
            Some(at) => at,
            None if p.high == p.low => p.low,
            None => bail!(
                "the running group {group} has committed nothing on partition {} of {topic}: \
                 its changes may not all be in the current index; let es-sync run, or use \
                 --from topic",
                p.partition
            ),
        };
        if at < p.low {
            bail!(
                "the running group {group} is at offset {at} of partition {} of {topic}, before \
                 the first record still held ({}): changes are lost to retention",
                p.partition,
                p.low
            );
        }
        out.insert(p.partition, at);
    }
    Ok(out)
}

/// Creates `into` and copies `alias` into it with Elasticsearch's
/// `_reindex`, every document at its (external) version: a document the
/// copy meets already newer in `into` (an interrupted run) stays.
async fn copy_index(
    es: &elasticsearch::Elasticsearch,
    alias: &str,
    into: &str,
    file: &serde_json::Value,
) -> anyhow::Result<()> {
    if !elastic::index_exists(es, into).await? {
        let (status, body) = index_bootstrap::create_index(es, into, file, None).await?;
        if !(200..300).contains(&status) {
            return Err(EsError::Status {
                what: format!("PUT /{into}"),
                status,
                body: body.to_string(),
            }
            .into());
        }
    }
    let body = json!({
        "conflicts": "proceed",
        "source": {"index": alias},
        "dest": {"index": into, "version_type": "external"}
    });
    let task = elastic::call_ok(
        es,
        Method::Post,
        "/_reindex?wait_for_completion=false&refresh=true",
        Some(&body),
    )
    .await?;
    let id = task
        .get("task")
        .and_then(serde_json::Value::as_str)
        .context("_reindex answered no task id")?
        .to_string();
    tracing::info!(from = alias, to = into, task = %id, "reindex: copying the current index");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = elastic::call_ok(es, Method::Get, &format!("/_tasks/{id}"), None).await?;
        if t.get("completed").and_then(serde_json::Value::as_bool) != Some(true) {
            continue;
        }
        let resp = &t["response"];
        let failures = resp["failures"].as_array().map_or(0, Vec::len);
        if failures > 0 || t.get("error").is_some() {
            bail!(
                "copying {alias} into {into} failed: {}",
                elastic::shorten(t.to_string(), 2000)
            );
        }
        tracing::info!(
            created = resp["created"].as_u64().unwrap_or(0),
            conflicts = resp["version_conflicts"].as_u64().unwrap_or(0),
            "reindex: copy done"
        );
        return Ok(());
    }
}

/// Commits `offsets` of `topic` for `group` (blocking).
fn commit_offsets(
    cfg: &SyncConfig,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let rows: Vec<crate::ops::replay::PlanRow> = offsets
        .iter()
        .map(|(p, at)| crate::ops::replay::PlanRow {
            topic: topic.to_string(),
            partition: *p,
            current: None,
            target: *at,
            low: 0,
            high: 0,
        })
        .collect();
    crate::ops::replay::apply(cfg, group, &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PartitionStatus;
    use shared::state::StreamState;

    fn part(p: i32, committable: Option<i64>) -> PartitionStatus {
        PartitionStatus {
            topic: "t".into(),
            partition: p,
            state: StreamState::Running,
            committable,
            high_watermark: None,
            lag_records: None,
            outstanding: 0,
            in_flight: false,
            waiting: None,
        }
    }

    #[test]
    fn caught_up_needs_every_partition_at_its_mark() {
        let s = SyncStatus::new("g");
        let marks = BTreeMap::from([(0, 10), (1, 0), (2, 5)]);
        s.set_partitions(vec![part(0, Some(10))], 0, false);
        assert!(!caught_up(&s, "t", &marks), "partition 2 not seen");
        s.set_partitions(vec![part(0, Some(10)), part(2, Some(4))], 0, false);
        assert!(!caught_up(&s, "t", &marks));
        s.set_partitions(vec![part(0, Some(11)), part(2, Some(5))], 0, false);
        assert!(
            caught_up(&s, "t", &marks),
            "empty partition 1 needs nothing"
        );
    }
}
