//! `es-sync reindex --topic T --into NEW_INDEX`: rebuilds a topic's alias
//! into a new concrete index, with no downtime for search.
//!
//! 1. Creates `NEW_INDEX` from the topic's index file (kept if it exists:
//!    an interrupted reindex resumes).
//! 2. Consumes `T` from the earliest offset with a separate group
//!    (`{group_id}.reindex.{NEW_INDEX}`), writing into `NEW_INDEX` only,
//!    until every partition reached the high watermark read at the start.
//! 3. Swaps the alias atomically (one `_aliases` request removing the old
//!    indices and adding `NEW_INDEX` as write index): searches always see
//!    one complete index.
//! 4. Keeps consuming until the high watermarks read after the swap, so
//!    changes the running `es-sync` wrote into the old index between 2 and
//!    3 also reach the new one; then stops. The old index is left for the
//!    operator to delete.
//!
//! Delivery guarantee: the same as the main consumer (at-least-once,
//! idempotent by external versions); after step 4 the new index holds
//! every change of the topic, and the running `es-sync` writes there.

use crate::config::{validate_index_name, SyncConfig};
use crate::elastic::{self, EsError};
use crate::index_bootstrap;
use crate::status::SyncStatus;
use anyhow::{bail, Context as _};
use elasticsearch::http::Method;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
}

/// The group a reindex into `index` uses.
pub fn reindex_group(cfg: &SyncConfig, index: &str) -> String {
    format!("{}.reindex.{index}", cfg.kafka.group_id)
}

/// High watermarks of every partition of `topic`.
fn watermarks(cfg: &SyncConfig, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in cfg.kafka.client_properties() {
        cc.set(k, v);
    }
    let c: BaseConsumer = cc.create().context("kafka client")?;
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
    if elastic::index_exists(&es, into).await? {
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
    let group = reindex_group(&cfg, into);
    let mut sub = cfg.clone();
    sub.kafka.group_id = group.clone();
    sub.kafka.auto_offset_reset = "earliest".into();
    sub.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    sub.topics = vec![crate::config::TopicConfig {
        alias: into.to_string(),
        ..route.clone()
    }];

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
