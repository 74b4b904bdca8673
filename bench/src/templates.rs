//! Config templating: the TOML files of `mongo-source` and `es-sync` for one
//! trial, and the batch settings they run with, which the baselines copy
//! (the raw read takes mongo-source's cursor batch size and wait, the
//! `_bulk` baseline es-sync's actions, bytes and requests in flight).
//!
//! The settings come from the shipped example configs in `config/` where
//! they are written there (es-sync's `[bulk]`), otherwise from the binaries'
//! documented defaults below; either way the bench writes them into the
//! configs it renders, so ours and the baseline run the same values by
//! construction.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Names of one scenario (unique per run, phase and trial).
#[derive(Clone, Debug)]
pub struct Names {
    /// MongoDB database.
    pub db: String,
    /// Prefix of the topics, the transactional ids and the DLQ.
    pub prefix: String,
}

impl Names {
    /// The topic of collection `coll`.
    pub fn topic(&self, coll: &str) -> String {
        format!("{}.{}.{}", self.prefix, self.db, coll)
    }

    /// The topics of both collections.
    pub fn topics(&self) -> Vec<String> {
        vec![self.topic("card"), self.topic("reply")]
    }

    /// The same database with another topic prefix.
    pub fn with_prefix(&self, prefix: String) -> Self {
        Self {
            db: self.db.clone(),
            prefix,
        }
    }
}

/// mongo-source's `batch.max_events` default (docs/source.md): events per
/// transaction and the change stream's cursor batch size.
pub const SOURCE_MAX_EVENTS: u64 = 2000;
/// mongo-source's `batch.max_wait_ms` default: the cursor's `maxAwaitTimeMS`.
pub const SOURCE_MAX_WAIT_MS: u64 = 100;

/// The batch settings both sides of a comparison run with.
#[derive(Clone, Debug, PartialEq)]
pub struct Batching {
    /// mongo-source `batch.max_events` (= the raw read's cursor batch size).
    pub source_max_events: u64,
    /// mongo-source `batch.max_wait_ms` (= the raw read's `maxAwaitTimeMS`).
    pub source_max_wait_ms: u64,
    /// es-sync's `[bulk]` table as shipped (rendered verbatim).
    pub bulk_table: toml::Table,
    /// `bulk.max_actions` (= the `_bulk` baseline's actions per request).
    pub bulk_max_actions: u64,
    /// `bulk.max_bytes` (= its bytes per request).
    pub bulk_max_bytes: u64,
    /// `bulk.max_in_flight` (= its requests in flight).
    pub bulk_in_flight: u64,
    /// `bulk.linger_ms`.
    pub bulk_linger_ms: u64,
    /// es-sync's `[rollup]` table as shipped (rendered with the trial's
    /// topics when a trial runs with the roll-up).
    pub rollup_table: Option<toml::Table>,
    /// Where the values come from (for the report).
    pub from: String,
}

impl Batching {
    /// Reads `config/es-sync.toml` of `repo`.
    pub fn load(repo: &Path) -> Result<Self> {
        let path = repo.join("config/es-sync.toml");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Self::from_sync_toml(&text).with_context(|| format!("{}", path.display()))
    }

    /// From the text of a shipped es-sync config.
    pub fn from_sync_toml(text: &str) -> Result<Self> {
        let v: toml::Table = toml::from_str(text)?;
        let rollup_table = v.get("rollup").and_then(toml::Value::as_table).cloned();
        let bulk = v
            .get("bulk")
            .and_then(toml::Value::as_table)
            .cloned()
            .context("no [bulk] table")?;
        let num = |k: &str| -> Result<u64> {
            bulk.get(k)
                .and_then(toml::Value::as_integer)
                .and_then(|i| u64::try_from(i).ok())
                .with_context(|| format!("[bulk] {k} missing or not a count"))
        };
        Ok(Self {
            source_max_events: SOURCE_MAX_EVENTS,
            source_max_wait_ms: SOURCE_MAX_WAIT_MS,
            bulk_max_actions: num("max_actions")?,
            bulk_max_bytes: num("max_bytes")?,
            bulk_in_flight: num("max_in_flight")?,
            bulk_linger_ms: num("linger_ms")?,
            bulk_table: bulk,
            rollup_table,
            from: "es-sync: [bulk] of config/es-sync.toml; mongo-source: the documented \
                   defaults of [batch] (docs/source.md), written into its config"
                .into(),
        })
    }

    /// The same with `[bulk]` keys replaced (`--bulk max_actions=2000,...`):
    /// es-sync and the `_bulk` baseline both take them.
    pub fn with_bulk(&self, overrides: &[(String, u64)]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut bulk = self.bulk_table.clone();
        for (k, v) in overrides {
            if !bulk.contains_key(k) {
                anyhow::bail!("--bulk {k}: not a key of [bulk] in config/es-sync.toml");
            }
            let v = i64::try_from(*v).with_context(|| format!("--bulk {k}={v}: too large"))?;
            bulk.insert(k.clone(), toml::Value::Integer(v));
        }
        let mut text = toml::Table::new();
        text.insert("bulk".into(), toml::Value::Table(bulk));
        if let Some(r) = &self.rollup_table {
            text.insert("rollup".into(), toml::Value::Table(r.clone()));
        }
        let mut out = Self::from_sync_toml(&toml::to_string(&text)?)?;
        let list: Vec<String> = overrides
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        out.from = format!(
            "{} ([bulk] overridden by --bulk: {})",
            self.from,
            list.join(", ")
        );
        Ok(out)
    }

    /// As JSON for the report.
    pub fn json(&self) -> Value {
        json!({
            "source_max_events": self.source_max_events,
            "source_max_wait_ms": self.source_max_wait_ms,
            "bulk_max_actions": self.bulk_max_actions,
            "bulk_max_bytes": self.bulk_max_bytes,
            "bulk_in_flight": self.bulk_in_flight,
            "bulk_linger_ms": self.bulk_linger_ms,
            "from": self.from,
        })
    }
}

/// mongo-source's config for one trial.
pub struct SourceConfig<'a> {
    /// MongoDB URI.
    pub uri: &'a str,
    /// Kafka bootstrap.
    pub kafka: &'a str,
    /// Database and topic prefix.
    pub names: &'a Names,
    /// Admin listener.
    pub admin: &'a str,
    /// The body of `[start]` (`mode = "now"`, or a timestamp).
    pub start: String,
    /// `exactly_once` or `at_least_once`.
    pub delivery: &'a str,
    /// Partitions of the topics.
    pub partitions: i32,
}

impl SourceConfig<'_> {
    /// The TOML text.
    pub fn render(&self, b: &Batching) -> String {
        format!(
            r#"[mongodb]
uri = "{uri}"
database = "{db}"

[kafka]
bootstrap_servers = "{kafka}"
delivery = "{delivery}"
transactional_id_prefix = "{prefix}"
compression = "zstd"

[topics]
prefix = "{prefix}"
partitions = {partitions}

[[collections]]
name = "card"

[[collections]]
name = "reply"

[batch]
max_events = {max_events}
max_wait_ms = {max_wait}

[start]
{start}

[log]
level = "warn"

[admin]
listen = "{admin}"
"#,
            uri = self.uri,
            db = self.names.db,
            kafka = self.kafka,
            delivery = self.delivery,
            prefix = self.names.prefix,
            partitions = self.partitions,
            max_events = b.source_max_events,
            max_wait = b.source_max_wait_ms,
            start = self.start,
            admin = self.admin,
        )
    }
}

/// `[start]` from a timestamp (seconds).
pub fn start_at(ts: u32) -> String {
    format!("mode = \"timestamp\"\ntimestamp = {ts}")
}

/// es-sync's config for one trial.
pub struct SyncConfig<'a> {
    /// Kafka bootstrap.
    pub kafka: &'a str,
    /// Elasticsearch URL.
    pub es: &'a str,
    /// Topics (and the DLQ prefix).
    pub names: &'a Names,
    /// Consumer group.
    pub group: &'a str,
    /// Aliases are `{alias_prefix}-cards` and `{alias_prefix}-replies`.
    pub alias_prefix: &'a str,
    /// Admin listener.
    pub admin: &'a str,
    /// `config/indices` of the repository.
    pub index_dir: PathBuf,
    /// `bulk.linger_ms` instead of the shipped one (Monstache's flush).
    pub linger_ms: Option<u64>,
    /// With the shipped `[rollup]` (replies rolled up into their card).
    pub rollup: bool,
}

impl SyncConfig<'_> {
    /// The TOML text.
    pub fn render(&self, b: &Batching) -> String {
        let mut bulk = b.bulk_table.clone();
        if let Some(l) = self.linger_ms {
            bulk.insert(
                "linger_ms".into(),
                toml::Value::Integer(i64::try_from(l).unwrap_or(i64::MAX)),
            );
        }
        let bulk = toml::to_string(&bulk).unwrap_or_default();
        let rollup = match (&b.rollup_table, self.rollup) {
            (Some(r), true) => {
                let mut r = r.clone();
                r.insert(
                    "parent_topic".into(),
                    toml::Value::String(self.names.topic("card")),
                );
                r.insert(
                    "child_topic".into(),
                    toml::Value::String(self.names.topic("reply")),
                );
                r.remove("parent_index");
                r.remove("child_index");
                format!("\n[rollup]\n{}", toml::to_string(&r).unwrap_or_default())
            }
            _ => String::new(),
        };
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{kafka}"
group_id = "{group}"
auto_offset_reset = "earliest"

[elasticsearch]
url = "{es}"

[bulk]
{bulk}
[dlq]
prefix = "{prefix}"

[log]
level = "warn"

[admin]
listen = "{admin}"

[[topics]]
topic = "{card}"
alias = "{alias}-cards"
index_file = "{idx}/cards.json"

[[topics]]
topic = "{reply}"
alias = "{alias}-replies"
index_file = "{idx}/replies.json"
"#,
            kafka = self.kafka,
            group = self.group,
            es = self.es,
            prefix = self.names.prefix,
            admin = self.admin,
            card = self.names.topic("card"),
            reply = self.names.topic("reply"),
            alias = self.alias_prefix,
            idx = self.index_dir.display(),
        );
        text + &rollup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn names() -> Names {
        Names {
            db: "bench_1".into(),
            prefix: "b1".into(),
        }
    }

    #[test]
    fn the_shipped_es_sync_config_has_the_bulk_settings_the_baseline_copies() {
        let b = Batching::load(&repo()).expect("config/es-sync.toml");
        assert!(b.bulk_max_actions > 0 && b.bulk_max_bytes >= 1024 && b.bulk_in_flight > 0);
        assert_eq!(b.source_max_events, SOURCE_MAX_EVENTS);
        let err = Batching::from_sync_toml("[bulk]\nmax_actions = 5\n").expect_err("partial");
        assert!(format!("{err:#}").contains("max_bytes"));
        assert!(Batching::from_sync_toml("[kafka]\n").is_err());
    }

    #[test]
    fn rendered_configs_are_toml_with_the_same_batch_settings() {
        let b = Batching::from_sync_toml(
            "[bulk]\nmax_actions = 700\nmax_bytes = 4096\nlinger_ms = 50\nmax_in_flight = 3\n",
        )
        .expect("bulk");
        let n = names();
        let src = SourceConfig {
            uri: "mongodb://x",
            kafka: "k:1",
            names: &n,
            admin: "127.0.0.1:9",
            start: start_at(17),
            delivery: "exactly_once",
            partitions: 3,
        }
        .render(&b);
        let v: toml::Table = toml::from_str(&src).expect("source TOML");
        assert_eq!(v["batch"]["max_events"].as_integer(), Some(2000));
        assert_eq!(v["start"]["timestamp"].as_integer(), Some(17));
        assert_eq!(v["kafka"]["transactional_id_prefix"].as_str(), Some("b1"));
        let sync = SyncConfig {
            kafka: "k:1",
            es: "http://e",
            names: &n,
            group: "g",
            alias_prefix: "b1-t3",
            admin: "127.0.0.1:9",
            index_dir: "/r/config/indices".into(),
            linger_ms: Some(1000),
            rollup: false,
        }
        .render(&b);
        let v: toml::Table = toml::from_str(&sync).expect("sync TOML");
        assert_eq!(v["bulk"]["max_actions"].as_integer(), Some(700));
        assert_eq!(v["bulk"]["max_in_flight"].as_integer(), Some(3));
        assert_eq!(v["bulk"]["linger_ms"].as_integer(), Some(1000), "override");
        let topics = v["topics"].as_array().expect("topics");
        assert_eq!(topics[0]["topic"].as_str(), Some("b1.bench_1.card"));
        assert_eq!(topics[1]["alias"].as_str(), Some("b1-t3-replies"));
    }

    #[test]
    fn a_trial_with_the_rollup_gets_the_shipped_table_on_its_own_topics() {
        let b = Batching::load(&repo()).expect("config/es-sync.toml");
        let shipped = b
            .rollup_table
            .clone()
            .expect("config/es-sync.toml ships [rollup]");
        let n = names();
        let cfg = |rollup| SyncConfig {
            kafka: "k:1",
            es: "http://e",
            names: &n,
            group: "g",
            alias_prefix: "b1-t3",
            admin: "127.0.0.1:9",
            index_dir: "/r/config/indices".into(),
            linger_ms: None,
            rollup,
        };
        let v: toml::Table = toml::from_str(&cfg(true).render(&b)).expect("sync TOML");
        let r = v["rollup"].as_table().expect("[rollup]");
        assert_eq!(r["parent_topic"].as_str(), Some("b1.bench_1.card"));
        assert_eq!(r["child_topic"].as_str(), Some("b1.bench_1.reply"));
        assert_eq!(r["parent_field"], shipped["parent_field"]);
        assert_eq!(r["latest"], shipped["latest"]);
        let v: toml::Table = toml::from_str(&cfg(false).render(&b)).expect("sync TOML");
        assert!(v.get("rollup").is_none());
    }

    #[test]
    fn bulk_overrides_replace_shipped_keys_only() {
        let b = Batching::from_sync_toml(
            "[bulk]\nmax_actions = 700\nmax_bytes = 4096\nlinger_ms = 50\nmax_in_flight = 3\n",
        )
        .expect("bulk");
        let o = b
            .with_bulk(&[("max_actions".into(), 2000), ("max_bytes".into(), 8192)])
            .expect("overrides");
        assert_eq!((o.bulk_max_actions, o.bulk_max_bytes), (2000, 8192));
        assert_eq!(o.bulk_in_flight, 3);
        assert!(o.from.contains("max_actions = 2000"), "{}", o.from);
        let err = b.with_bulk(&[("max_action".into(), 1)]).expect_err("typo");
        assert!(format!("{err:#}").contains("max_action"));
    }
}
