//! Peer of mongo-source: a Kafka Connect worker (`connect-runtime`, the
//! broker's version) in distributed mode with exactly-once source support
//! enabled (`exactly.once.source.support=enabled`; KIP-618 exists only in
//! distributed mode), running the MongoDB Kafka Source Connector, one
//! connector per collection like mongo-source's one stream per collection.
//! Each poll's records and source offsets are committed in one Kafka
//! transaction (`transaction.boundary=poll`), as mongo-source commits each
//! batch with its resume position.
//!
//! The worker starts once per run and stays up (pinned with the measured
//! processes) through the source phases; each trial creates the two
//! connectors over REST under new names (fresh offsets) into topics of
//! their own, counts their records with a read_committed consumer, first to
//! last (like mongo-source), and deletes them. RSS and CPU are the worker
//! JVM's over the trial.

use crate::clients::{http, kafka};
use crate::ctx::Ctx;
use crate::log::log;
use crate::phases::source::Seeded;
use crate::process::{procmon, Child};
use crate::stats::{rate, round};
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// JVM flags of Kafka's own `bin/connect-distributed.sh` (heap) and
/// `bin/kafka-run-class.sh` (GC), as a worker started by those scripts gets.
pub const JVM_OPTS: &[&str] = &[
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// The worker's settings that differ from its defaults (besides addresses
/// and names).
pub const WORKER_SETTINGS: &[(&str, &str)] = &[
    ("exactly.once.source.support", "enabled"),
    (
        "key.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    (
        "value.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    ("producer.compression.type", "zstd"),
    ("config.storage.replication.factor", "1"),
    ("offset.storage.replication.factor", "1"),
    ("status.storage.replication.factor", "1"),
    ("offset.storage.partitions", "5"),
    ("plugin.discovery", "only_scan"),
];

/// The connector's settings that differ from its defaults (besides names);
/// the batch sizes and wait are mongo-source's (filled in by
/// [`connector_settings`]).
const CONNECTOR_SETTINGS: &[(&str, &str)] = &[
    ("change.stream.full.document", "updateLookup"),
    ("startup.mode", "timestamp"),
    ("output.format.key", "json"),
    ("output.format.value", "json"),
    ("exactly.once.support", "requested"),
    ("transaction.boundary", "poll"),
];

/// Every connector setting besides names: the fixed ones and mongo-source's
/// batch size (`poll.max.batch.size`, the cursor's `batch.size`) and wait
/// (`poll.await.time.ms`).
pub fn connector_settings(cx: &Ctx) -> Vec<(String, String)> {
    let b = &cx.batching;
    let mut v: Vec<(String, String)> = CONNECTOR_SETTINGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.push((
        "poll.max.batch.size".into(),
        b.source_max_events.to_string(),
    ));
    v.push(("batch.size".into(), b.source_max_events.to_string()));
    v.push((
        "poll.await.time.ms".into(),
        b.source_max_wait_ms.to_string(),
    ));
    v
}

fn properties(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// A running worker.
pub struct Worker {
    child: Child,
    rest: String,
    log_file: PathBuf,
}

impl Worker {
    /// Starts a worker; waits for its REST API.
    pub async fn start(cx: &Ctx, home: &Path, tag: &str) -> Result<Self> {
        let dir = cx.work(&format!("peers-connect-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let rest = cx.ports.addr()?;
        let mut worker: Vec<(String, String)> = vec![
            ("bootstrap.servers".into(), cx.o.kafka.clone()),
            ("group.id".into(), format!("bench-connect-{tag}")),
            (
                "config.storage.topic".into(),
                format!("bench-connect-{tag}-configs"),
            ),
            (
                "offset.storage.topic".into(),
                format!("bench-connect-{tag}-offsets"),
            ),
            (
                "status.storage.topic".into(),
                format!("bench-connect-{tag}-status"),
            ),
            (
                "plugin.path".into(),
                home.join("plugins").display().to_string(),
            ),
            ("listeners".into(), format!("http://{rest}")),
        ];
        worker.extend(
            WORKER_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let worker_file = dir.join("worker.properties");
        std::fs::write(&worker_file, properties(&worker))?;
        let java = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .unwrap_or_else(|| "java".into());
        let mut cmd = cx.pin.command(java);
        cmd.args(JVM_OPTS)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                home.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/lib/*", home.display()))
            .arg("org.apache.kafka.connect.cli.ConnectDistributed")
            .arg(&worker_file);
        let log_file = dir.join("connect.log");
        let t0 = Instant::now();
        let mut child = Child::spawn(cmd, rest.clone(), &log_file)?;
        loop {
            if let Ok((200, _)) = http::get(&rest, "/connectors").await {
                break;
            }
            child.check_alive("Kafka Connect worker")?;
            if t0.elapsed() > Duration::from_secs(180) {
                bail!(
                    "Kafka Connect worker not up after 180 s; log: {}",
                    log_file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        log(&format!(
            "[peers] Kafka Connect worker (exactly-once source support) up in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
        Ok(Self {
            child,
            rest,
            log_file,
        })
    }

    /// Creates a connector (retried while the worker rebalances).
    async fn create(&self, name: &str, config: Value) -> Result<()> {
        let body = json!({"name": name, "config": config}).to_string();
        let t0 = Instant::now();
        loop {
            let (s, text) = http::request(&self.rest, "POST", "/connectors", Some(&body)).await?;
            match s {
                200..=299 => return Ok(()),
                409 | 500..=599 if t0.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => bail!("create connector {name}: HTTP {s}: {text}"),
            }
        }
    }

    /// One trial: both collections of `db` from its start time into the
    /// topics `{prefix}.{db}.{card,reply}`.
    pub async fn trial(&mut self, cx: &Ctx, db: &Seeded, prefix: &str) -> Result<Value> {
        let n = db.docs;
        let colls = ["card", "reply"];
        let topics: Vec<String> = colls
            .iter()
            .map(|c| format!("{prefix}.{}.{c}", db.names.db))
            .collect();
        kafka::create_topics(&cx.o.kafka, &topics, cx.o.partitions).await?;
        let before = self.child.mon.now();
        let servers0 = cx.o.servers.mark();
        let t0 = Instant::now();
        let mut names = vec![];
        for c in colls {
            let name = format!("{prefix}-{c}");
            let mut config = serde_json::Map::new();
            for (k, v) in [
                (
                    "connector.class",
                    "com.mongodb.kafka.connect.MongoSourceConnector".to_string(),
                ),
                ("tasks.max", "1".into()),
                ("connection.uri", db.uri.clone()),
                ("database", db.names.db.clone()),
                ("collection", c.into()),
                ("topic.prefix", prefix.into()),
                (
                    "startup.mode.timestamp.start.at.operation.time",
                    db.ts.to_string(),
                ),
            ] {
                config.insert(k.into(), json!(v));
            }
            for (k, v) in connector_settings(cx) {
                config.insert(k, json!(v));
            }
            self.create(&name, Value::Object(config)).await?;
            names.push(name);
        }
        let timeout = crate::phases::watch::trial_timeout(n);
        let read = tokio::select! {
            r = kafka::read_n_async(&cx.o.kafka, &topics, cx.o.partitions, n, timeout) => r,
            st = self.child.child.wait() => Err(anyhow::anyhow!(
                "Kafka Connect exited ({st:?}); log: {}", self.log_file.display()
            )),
        };
        let after = self.child.mon.now();
        let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
        for name in &names {
            let _ = http::request(&self.rest, "DELETE", &format!("/connectors/{name}"), None).await;
        }
        let read = read.with_context(|| format!("log: {}", self.log_file.display()))?;
        let u = procmon::usage(&self.child.mon.samples(), before, after, n);
        Ok(json!({
            "events_per_s": round(rate(n.saturating_sub(1), (read.last - read.first).as_secs_f64()), 0),
            "events_per_s_incl_startup": round(rate(n, t0.elapsed().as_secs_f64()), 0),
            "first_record_after_create_s": round(read.first.as_secs_f64(), 2),
            "resources": u.json(),
            "servers_cpu": servers,
        }))
    }

    /// Stops the worker.
    pub async fn stop(self) -> Result<()> {
        self.child.stop().await
    }
}

/// How the peer is configured (for the report).
pub fn settings_json(cx: &Ctx) -> Value {
    let worker: serde_json::Map<String, Value> = WORKER_SETTINGS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let connector: serde_json::Map<String, Value> = connector_settings(cx)
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    json!({"worker": worker, "connector": connector, "jvm": JVM_OPTS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_runs_exactly_once_and_the_connector_takes_our_batch_size() {
        assert!(WORKER_SETTINGS.contains(&("exactly.once.source.support", "enabled")));
        let cx = crate::peers::tests::ctx();
        let s = connector_settings(&cx);
        let get = |k: &str| s.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        let events = cx.batching.source_max_events.to_string();
        assert_eq!(get("poll.max.batch.size"), Some(events.as_str()));
        assert_eq!(get("batch.size"), Some(events.as_str()));
        assert_eq!(get("transaction.boundary"), Some("poll"));
        assert_eq!(properties(&[("a".into(), "b".into())]), "a=b\n");
    }
}
