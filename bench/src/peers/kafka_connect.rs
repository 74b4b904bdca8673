//! Peer: a Kafka Connect standalone worker (`connect-runtime`, the broker's
//! version) running the MongoDB Kafka Source Connector, one connector per
//! collection like `mongo-source`'s one stream per collection, on the
//! documents seeded in phase 1 from the same start time. Measured like
//! `mongo-source` in phase 1: records visible to a read_committed consumer,
//! first to last, and the worker JVM's RSS from `/proc`.

use crate::peers::{self, ratio};
use crate::{free_port, kafka, log, procmon, rate, round, usage_json, Opts};
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// JVM flags of Kafka's own `bin/connect-standalone.sh` (heap) and
/// `bin/kafka-run-class.sh` (GC), as a worker started by those scripts gets.
const JVM_OPTS: &[&str] = &[
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// The connector's settings that differ from its defaults (besides names).
const CONNECTOR_SETTINGS: &[(&str, &str)] = &[
    ("poll.max.batch.size", "1000"),
    ("poll.await.time.ms", "100"),
    ("change.stream.full.document", "updateLookup"),
    ("startup.mode", "timestamp"),
    ("output.format.key", "json"),
    ("output.format.value", "json"),
];

/// The worker's settings that differ from its defaults (besides addresses).
const WORKER_SETTINGS: &[(&str, &str)] = &[
    (
        "key.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    (
        "value.converter",
        "org.apache.kafka.connect.storage.StringConverter",
    ),
    ("producer.compression.type", "zstd"),
    ("offset.flush.interval.ms", "10000"),
    ("plugin.discovery", "only_scan"),
];

fn properties(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Runs the worker on the database of a source phase (`src`, its JSON:
/// phase 1 on the Python SecantusDB, or its rerun on the Rust one) and
/// compares it with `mongo-source`'s figures of that phase.
pub async fn run(o: &Opts, home: &Path, src: &Value) -> Result<Value> {
    let db = src["names"]["db"]
        .as_str()
        .context("phase 1 has no names")?;
    let prefix = format!(
        "{}kc",
        src["names"]["prefix"].as_str().context("phase 1 prefix")?
    );
    let ts = src["start_ts"]
        .as_u64()
        .context("phase 1 has no start_ts")?;
    // The server of that phase (the Python or the Rust SecantusDB).
    let server = src["server"]
        .as_str()
        .map_or_else(|| o.mongo_uri.clone(), String::from);
    let n = o.docs;
    let colls = ["card", "reply"];
    let topics: Vec<String> = colls.iter().map(|c| format!("{prefix}.{db}.{c}")).collect();
    kafka::create_topics(&o.kafka, &topics, 3).await?;
    let dir = o.work.join(format!("peers-{prefix}"));
    std::fs::create_dir_all(&dir)?;
    let rest = format!("127.0.0.1:{}", free_port()?);
    let mut worker = vec![
        ("bootstrap.servers", o.kafka.clone()),
        (
            "offset.storage.file.filename",
            dir.join("offsets").display().to_string(),
        ),
        ("plugin.path", home.join("plugins").display().to_string()),
        ("listeners", format!("http://{rest}")),
    ];
    worker.extend(WORKER_SETTINGS.iter().map(|(k, v)| (*k, v.to_string())));
    let worker_file = dir.join("worker.properties");
    std::fs::write(&worker_file, properties(&worker))?;
    let mut connectors: Vec<PathBuf> = vec![];
    for c in colls {
        let mut p = vec![
            ("name", format!("mongo-{c}")),
            (
                "connector.class",
                "com.mongodb.kafka.connect.MongoSourceConnector".into(),
            ),
            ("tasks.max", "1".into()),
            ("connection.uri", server.clone()),
            ("database", db.to_string()),
            ("collection", c.to_string()),
            ("topic.prefix", prefix.clone()),
            (
                "startup.mode.timestamp.start.at.operation.time",
                ts.to_string(),
            ),
        ];
        p.extend(CONNECTOR_SETTINGS.iter().map(|(k, v)| (*k, v.to_string())));
        let f = dir.join(format!("mongo-{c}.properties"));
        std::fs::write(&f, properties(&p))?;
        connectors.push(f);
    }
    let java = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .unwrap_or_else(|| "java".into());
    let mut cmd = tokio::process::Command::new(java);
    cmd.args(JVM_OPTS)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            home.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(format!("{}/lib/*", home.display()))
        .arg("org.apache.kafka.connect.cli.ConnectStandalone")
        .arg(&worker_file)
        .args(&connectors);
    let log_file = dir.join("connect.log");
    log(&format!(
        "[peers] Kafka Connect + MongoDB source connector on {db} from {ts} ({n} events)"
    ));
    let t_spawn = Instant::now();
    let mut child = peers::spawn(cmd, rest, &log_file)?;
    let before = child.mon.now();
    let (bootstrap, tps) = (o.kafka.clone(), topics.clone());
    let timeout = peers::catch_up_timeout(n);
    let mut reader =
        tokio::task::spawn_blocking(move || kafka::read_n(&bootstrap, &tps, 3, n, false, timeout));
    let read = tokio::select! {
        r = &mut reader => r??,
        st = child.child.wait() => anyhow::bail!(
            "Kafka Connect exited before {n} records ({st:?}); log: {}",
            log_file.display()
        ),
    };
    let after = child.mon.now();
    let peer = rate(n.saturating_sub(1), (read.last - read.first).as_secs_f64());
    let u = procmon::usage(&child.mon.samples(), before, after, n);
    let wall = rate(n, t_spawn.elapsed().as_secs_f64());
    child.stop().await?;
    let ours = src["mongo_source"]["events_per_s"].as_f64().unwrap_or(0.0);
    let ours_rss = src["mongo_source"]["resources"]["steady_rss_mib"]
        .as_f64()
        .unwrap_or(0.0);
    log(&format!(
        "[peers] Kafka Connect: {peer:.0} events/s (first record {:.2} s after spawn), RSS steady {:.1} peak {:.1} MiB; mongo-source {ours:.0} events/s, {ours_rss:.1} MiB",
        read.first.as_secs_f64(),
        u.steady_rss_mib,
        u.peak_rss_mib
    ));
    let settings: Value = CONNECTOR_SETTINGS
        .iter()
        .chain(WORKER_SETTINGS)
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(json!({
        "status": "run",
        "server": server,
        "events": n,
        "events_per_s": round(peer, 0),
        "events_per_s_incl_startup": round(wall, 0),
        "first_record_after_spawn_s": round(read.first.as_secs_f64(), 2),
        "resources": usage_json(&u),
        "settings": settings,
        "jvm": JVM_OPTS,
        "mongo_source_events_per_s": ours,
        "mongo_source_steady_rss_mib": ours_rss,
        "ratio_events_per_s": ratio(ours, peer),
        "ratio_steady_rss": ratio(ours_rss, u.steady_rss_mib),
    }))
}
