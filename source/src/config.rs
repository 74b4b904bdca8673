//! `mongo-source` configuration: a TOML file (`--config`), every key
//! overridable by `MONGO_SOURCE__{PATH}` environment variables (see
//! [`shared::config`]). [`SourceConfig::validate`] checks every value
//! without I/O; nothing connects before it passed.

use serde::Deserialize;
use shared::admin::AdminConfig;
use shared::config::{ConfigError, Secret};
use shared::kafka_client::KafkaClientSettings;
use shared::retry::RetryConfig;
use shared::telemetry::LogConfig;
use shared::wire::event::{default_topic, Namespace};

/// Environment variable prefix of the overrides.
pub const ENV_PREFIX: &str = "MONGO_SOURCE";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// MongoDB connection.
    pub mongodb: MongoConfig,
    /// Kafka connection and producer settings.
    pub kafka: KafkaConfig,
    /// Topic naming.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The collections to stream, one change stream each.
    pub collections: Vec<CollectionConfig>,
    /// Where a stream starts when no resume token is stored yet.
    #[serde(default)]
    pub start: StartConfig,
    /// Batching of events into Kafka transactions.
    #[serde(default)]
    pub batch: BatchConfig,
    /// What to do with records over the size limits.
    #[serde(default)]
    pub oversized: OversizedConfig,
    /// Running several instances: stream ownership by leases.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Backoff for retryable failures and stream restarts.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Admin HTTP server (health, readiness, status, metrics).
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    /// How long, in ms, to wait at start-up for MongoDB and Kafka to answer
    /// before exiting with an error naming what did not answer (0 waits
    /// forever). Once started, outages are retried without limit.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
}

fn default_startup_timeout_ms() -> u64 {
    120_000
}

fn default_admin() -> AdminConfig {
    AdminConfig::on_port(9464)
}

/// `[mongodb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://h1,h2,h3/?replicaSet=rs0`. A
    /// password in it is never logged.
    pub uri: Secret,
    /// Database holding the collections.
    pub database: String,
    /// Time to find a usable server before an operation fails, in ms.
    #[serde(default = "default_server_selection_ms")]
    pub server_selection_timeout_ms: u64,
    /// User name (instead of putting it in the URI).
    #[serde(default)]
    pub username: Option<String>,
    /// Password (instead of the URI); prefer `password_file`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (e.g. a docker secret), trailing newline
    /// ignored.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// CA certificate file for TLS (the same as `tlsCAFile` in the URI).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
}

fn default_server_selection_ms() -> u64 {
    10_000
}

/// `[kafka]`: the connection settings shared with es-sync
/// ([`KafkaClientSettings`]: `bootstrap_servers`, `properties`,
/// `property_files`) plus the producer's own.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Brokers and librdkafka properties, passed to every client.
    #[serde(flatten)]
    pub client: KafkaClientSettings,
    /// `exactly_once` needs transactions and fails without them;
    /// `at_least_once` never uses them; `auto` uses them when the broker
    /// supports them and says so in the log and on `/status` when it does not.
    #[serde(default)]
    pub delivery: Delivery,
    /// Prefix of the per-stream `transactional.id` (`{prefix}.{db}.{coll}`):
    /// two instances streaming the same collection fence each other.
    #[serde(default = "default_txn_prefix")]
    pub transactional_id_prefix: String,
    /// Largest record the producer sends, in bytes (librdkafka
    /// `message.max.bytes`). Keep it at or below the topics'
    /// `max.message.bytes`; larger records are treated as oversized.
    #[serde(default = "default_message_max_bytes")]
    pub message_max_bytes: usize,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Kafka transaction timeout, in ms (`transaction.timeout.ms`).
    #[serde(default = "default_txn_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Timeout of a single Kafka operation (commit, metadata), in ms.
    #[serde(default = "default_op_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// Keys no field took, refused by `validate()` (`flatten` rules out
    /// `deny_unknown_fields`).
    #[serde(flatten)]
    pub unknown: shared::kafka_client::UnknownKeys,
}

fn default_txn_prefix() -> String {
    "mongo-source".into()
}
fn default_message_max_bytes() -> usize {
    1_048_576
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_txn_timeout_ms() -> u64 {
    60_000
}
fn default_op_timeout_ms() -> u64 {
    30_000
}

/// Delivery guarantee into Kafka.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Transactions when supported, else at-least-once (with a warning).
    #[default]
    Auto,
    /// Transactions or fail.
    ExactlyOnce,
    /// No transactions: the token is stored after the events are acknowledged.
    AtLeastOnce,
}

/// `[topics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Prefix of the event topics: `{prefix}.{db}.{collection}`.
    pub prefix: String,
    /// Compacted topic holding the resume token of every stream; default
    /// `{prefix}.mongo-source.offsets`.
    pub offsets: Option<String>,
    /// Dead-letter topic for oversized records; default `{prefix}.dlq`.
    pub dlq: Option<String>,
    /// Create missing topics (offsets topic always compacted).
    pub create: bool,
    /// Partitions of event topics created by `mongo-source`.
    pub partitions: i32,
    /// Replication factor of topics created by `mongo-source`.
    pub replication_factor: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: "live".into(),
            offsets: None,
            dlq: None,
            create: true,
            partitions: 3,
            replication_factor: 1,
        }
    }
}

impl TopicsConfig {
    /// The offsets topic name.
    pub fn offsets_topic(&self) -> String {
        self.offsets
            .clone()
            .unwrap_or_else(|| format!("{}.mongo-source.offsets", self.prefix))
    }
    /// The dead-letter topic name.
    pub fn dlq_topic(&self) -> String {
        self.dlq
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.prefix))
    }
}

/// One `[[collections]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Collection name.
    pub name: String,
    /// Topic; default `{prefix}.{db}.{name}`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Extra change-stream stages, e.g. `[{ "$match" = { ... } }]`: only
    /// `$match`, `$project`, `$addFields`, `$set`, `$unset` are allowed.
    #[serde(default)]
    pub pipeline: Vec<toml::Table>,
}

/// `[start]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartConfig {
    /// `snapshot` (copy existing documents, then stream), `now`, or
    /// `timestamp` (stream from `timestamp`).
    pub mode: StartMode,
    /// Seconds since the epoch, for `mode = "timestamp"`.
    pub timestamp: Option<u32>,
    /// When the stored token is no longer in the oplog: `resnapshot` or `fail`.
    pub on_history_lost: HistoryLostPolicy,
    /// Documents per snapshot transaction.
    pub snapshot_batch: usize,
}

impl Default for StartConfig {
    fn default() -> Self {
        Self {
            mode: StartMode::Snapshot,
            timestamp: None,
            on_history_lost: HistoryLostPolicy::Resnapshot,
            snapshot_batch: 1000,
        }
    }
}

/// Start position without a stored token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// Copy, then stream from the time read before the copy.
    Snapshot,
    /// Stream from now; existing documents are not sent.
    Now,
    /// Stream from `start.timestamp`.
    Timestamp,
}

/// Policy when the resume point fell off the oplog.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HistoryLostPolicy {
    /// Copy the collection again, announced by snapshot markers.
    Resnapshot,
    /// Stop the stream (state FAILED) until an operator acts.
    Fail,
}

/// `[batch]`: a Kafka transaction is cut at whichever limit comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Events per transaction, and the change stream's cursor batch size.
    /// Each commit costs a round trip to the transaction coordinator
    /// (~5-20 ms), so larger batches raise throughput: on 100k events from
    /// the Rust SecantusDB, 1000 ran at 18.9k/23.1k events/s, 2000 at
    /// 23.6k/26.7k, 5000 at 22.9k/27.3k, with peak RSS about 48, 55 and 62 MiB.
    /// 2000 takes most of the gain for little memory.
    pub max_events: usize,
    /// Bytes of serialised records per transaction: bounds the memory one
    /// stream holds (8 MiB) whatever the write rate or document size.
    pub max_bytes: usize,
    /// Longest wait, in ms, from the first event of a batch to its commit:
    /// bounds the latency a quiet stream adds (100 ms).
    pub max_wait_ms: u64,
    /// How often, in ms, an idle stream stores its advancing resume token,
    /// so a quiet collection never falls off the oplog.
    pub idle_commit_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 2000,
            max_bytes: 8 << 20,
            max_wait_ms: 100,
            idle_commit_ms: 10_000,
        }
    }
}

/// `[cluster]`: instances with the same config form a cluster; each stream
/// is owned by exactly one of them, by a lease that is a partition of the
/// leases topic assigned by a Kafka consumer group (see `docs/operations.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Consumer group of the leases; default `mongo-source.{prefix}.{db}`.
    pub group_id: Option<String>,
    /// Leases topic (one partition per stream); default
    /// `{prefix}.mongo-source.leases`.
    pub leases_topic: Option<String>,
    /// Topic where instances publish their state for the cluster-wide
    /// `/status`; default `{prefix}.mongo-source.cluster`.
    pub members_topic: Option<String>,
    /// How long a silent instance keeps its leases, in ms (Kafka
    /// `session.timeout.ms`; the broker's minimum is 6000). Failover takes
    /// about this long plus the new owner's start.
    pub session_timeout_ms: u64,
    /// Heartbeat interval, in ms (below a third of the session timeout).
    pub heartbeat_interval_ms: u64,
    /// How often each instance publishes its state, in ms.
    pub publish_interval_ms: u64,
    /// This instance's name in the cluster; default `{host}-{pid}`.
    pub instance_id: Option<String>,
    /// A stream fenced twice within this many ms by a producer outside the
    /// lease group (same `transactional.id`, another group or process)
    /// gives its lease up: this instance leaves the lease group for this
    /// long, so another instance takes the stream over, then joins again.
    pub fencing_cooldown_ms: u64,
}

impl ClusterConfig {
    /// How long a stream waits, after its transaction failed in a way that
    /// a pause of the process explains, for the lease group to tell this
    /// instance that its lease moved: two heartbeats and a second. Counted
    /// in time the process ran (see `stream::sleep_awake`).
    pub fn lease_check(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2 * self.heartbeat_interval_ms + 1000)
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            group_id: None,
            leases_topic: None,
            members_topic: None,
            session_timeout_ms: 6000,
            heartbeat_interval_ms: 1000,
            publish_interval_ms: 2000,
            instance_id: None,
            fencing_cooldown_ms: 60_000,
        }
    }
}

/// `[oversized]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OversizedConfig {
    /// `truncate` (default): write the event with its largest text fields
    /// cut to fit (marked `_truncated`) and a pointer to the dead-letter
    /// topic; `dlq`: only the pointer (the document drops out of search);
    /// `fail`: stop the stream.
    pub policy: OversizedPolicy,
}

impl Default for OversizedConfig {
    fn default() -> Self {
        Self {
            policy: OversizedPolicy::Truncate,
        }
    }
}

/// Policy for a record over the size limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OversizedPolicy {
    /// Cut the largest text fields to fit, and dead-letter a pointer
    /// saying so ([`crate::stream::truncate`]); a pointer alone when
    /// cutting text cannot make it fit.
    Truncate,
    /// Dead-letter a pointer and continue.
    Dlq,
    /// Stop the stream.
    Fail,
}

const ALLOWED_STAGES: [&str; 5] = ["$match", "$project", "$addFields", "$set", "$unset"];
/// librdkafka properties mongo-source sets itself.
const MANAGED_PROPERTIES: [&str; 2] = ["allow.auto.create.topics", "transactional.id"];

const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

impl SourceConfig {
    /// Checks every value; the error names the key. No I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let uri = self.mongodb.uri.expose();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::invalid(
                "mongodb.uri",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        shared::config::require_name("mongodb.database", &self.mongodb.database, &['$'])?;
        if self.mongodb.password.is_some() && self.mongodb.password_file.is_some() {
            return Err(ConfigError::invalid(
                "mongodb.password_file",
                "set either mongodb.password or mongodb.password_file",
            ));
        }
        shared::kafka_client::refuse_unknown("kafka", &self.kafka.unknown)?;
        self.kafka.client.validate(
            &MANAGED_PROPERTIES,
            "topics are created only with their configured settings; \
             transactional ids are per stream",
        )?;
        if !COMPRESSIONS.contains(&self.kafka.compression.as_str()) {
            return Err(ConfigError::invalid(
                "kafka.compression",
                format!(
                    "`{}` is not one of {}",
                    self.kafka.compression,
                    COMPRESSIONS.join(", ")
                ),
            ));
        }
        if !(1024..=1_000_000_000).contains(&self.kafka.message_max_bytes) {
            return Err(ConfigError::invalid(
                "kafka.message_max_bytes",
                "must be between 1024 and 1000000000",
            ));
        }
        shared::config::require_name(
            "kafka.transactional_id_prefix",
            &self.kafka.transactional_id_prefix,
            &['$'],
        )?;
        shared::config::require_name("topics.prefix", &self.topics.prefix, &['$'])?;
        if self.topics.partitions < 1 {
            return Err(ConfigError::invalid("topics.partitions", "must be >= 1"));
        }
        if self.topics.replication_factor < 1 {
            return Err(ConfigError::invalid(
                "topics.replication_factor",
                "must be >= 1",
            ));
        }
        if self.collections.is_empty() {
            return Err(ConfigError::invalid(
                "collections",
                "at least one collection is needed",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.collections.iter().enumerate() {
            shared::config::require_name(&format!("collections[{i}].name"), &c.name, &['$'])?;
            if !seen.insert(&c.name) {
                return Err(ConfigError::invalid(
                    format!("collections[{i}].name"),
                    format!("`{}` is listed twice", c.name),
                ));
            }
            for (j, stage) in c.pipeline.iter().enumerate() {
                let key = format!("collections[{i}].pipeline[{j}]");
                let name = match stage.keys().collect::<Vec<_>>().as_slice() {
                    [one] => one.as_str(),
                    _ => return Err(ConfigError::invalid(key, "a stage has exactly one key")),
                };
                if !ALLOWED_STAGES.contains(&name) {
                    return Err(ConfigError::invalid(
                        key,
                        format!(
                            "stage `{name}` is not allowed; use {}",
                            ALLOWED_STAGES.join(", ")
                        ),
                    ));
                }
            }
        }
        if self.start.mode == StartMode::Timestamp && self.start.timestamp.is_none() {
            return Err(ConfigError::invalid(
                "start.timestamp",
                "required when start.mode = \"timestamp\"",
            ));
        }
        if self.start.snapshot_batch == 0 {
            return Err(ConfigError::invalid("start.snapshot_batch", "must be >= 1"));
        }
        if self.batch.max_events == 0 {
            return Err(ConfigError::invalid("batch.max_events", "must be >= 1"));
        }
        if self.batch.max_bytes < self.kafka.message_max_bytes {
            return Err(ConfigError::invalid(
                "batch.max_bytes",
                "must be >= kafka.message_max_bytes (one record must fit a batch)",
            ));
        }
        if self.batch.max_wait_ms == 0 {
            return Err(ConfigError::invalid("batch.max_wait_ms", "must be >= 1"));
        }
        if self.batch.max_wait_ms >= self.kafka.transaction_timeout_ms {
            return Err(ConfigError::invalid(
                "batch.max_wait_ms",
                "must be below kafka.transaction_timeout_ms",
            ));
        }
        if self.cluster.session_timeout_ms < 1000 {
            return Err(ConfigError::invalid(
                "cluster.session_timeout_ms",
                "must be >= 1000",
            ));
        }
        if self.cluster.heartbeat_interval_ms * 3 > self.cluster.session_timeout_ms {
            return Err(ConfigError::invalid(
                "cluster.heartbeat_interval_ms",
                "must be at most a third of cluster.session_timeout_ms",
            ));
        }
        if self.cluster.fencing_cooldown_ms < 1000 {
            return Err(ConfigError::invalid(
                "cluster.fencing_cooldown_ms",
                "must be >= 1000",
            ));
        }
        if self.cluster.publish_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "cluster.publish_interval_ms",
                "must be >= 1",
            ));
        }
        self.retry.validate("retry")?;
        self.log.validate()?;
        self.admin.validate()?;
        Ok(())
    }

    /// Consumer group of the leases.
    pub fn lease_group(&self) -> String {
        self.cluster.group_id.clone().unwrap_or_else(|| {
            format!(
                "mongo-source.{}.{}",
                self.topics.prefix, self.mongodb.database
            )
        })
    }

    /// Leases topic.
    pub fn leases_topic(&self) -> String {
        self.cluster
            .leases_topic
            .clone()
            .unwrap_or_else(|| format!("{}.mongo-source.leases", self.topics.prefix))
    }

    /// Members topic.
    pub fn members_topic(&self) -> String {
        self.cluster
            .members_topic
            .clone()
            .unwrap_or_else(|| format!("{}.mongo-source.cluster", self.topics.prefix))
    }

    /// The streams, one per collection, with their resolved topics.
    pub fn streams(&self) -> Vec<StreamSpec> {
        self.collections
            .iter()
            .map(|c| {
                let ns = Namespace {
                    db: self.mongodb.database.clone(),
                    coll: c.name.clone(),
                };
                StreamSpec {
                    name: ns.to_string(),
                    topic: c
                        .topic
                        .clone()
                        .unwrap_or_else(|| default_topic(&self.topics.prefix, &ns)),
                    transactional_id: format!("{}.{}", self.kafka.transactional_id_prefix, ns),
                    ns,
                    pipeline: c.pipeline.clone(),
                }
            })
            .collect()
    }
}

/// A resolved stream.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// `db.collection`, the stream's name and its key in the offsets topic.
    pub name: String,
    /// Database and collection.
    pub ns: Namespace,
    /// Event topic.
    pub topic: String,
    /// Kafka `transactional.id` of this stream.
    pub transactional_id: String,
    /// User pipeline stages.
    pub pipeline: Vec<toml::Table>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SHIPPED: &str = include_str!("../../config/mongo-source.toml");

    fn load(text: &str, env: &[(&str, &str)]) -> Result<SourceConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg: SourceConfig =
            shared::config::load_str(text, Path::new("t.toml"), ENV_PREFIX, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn shipped_config_is_valid() {
        let cfg = load(SHIPPED, &[]).unwrap();
        let streams = cfg.streams();
        assert_eq!(streams[0].topic, "live.mountain.card");
        assert_eq!(streams[1].topic, "live.mountain.reply");
        assert_eq!(streams[0].transactional_id, "mongo-source.mountain.card");
        assert_eq!(cfg.topics.dlq_topic(), "live.dlq");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MONGO_SOURCE__MONGODB__URI", "http://x")], "mongodb.uri"),
            (
                &[("MONGO_SOURCE__KAFKA__COMPRESSION", "brotli")],
                "kafka.compression",
            ),
            (
                &[("MONGO_SOURCE__KAFKA__COMPRESION", "zstd")],
                "kafka.compresion",
            ),
            (
                &[("MONGO_SOURCE__KAFKA__BOOTSTRAP_SERVERS", " ")],
                "kafka.bootstrap_servers",
            ),
            (
                &[("MONGO_SOURCE__BATCH__MAX_EVENTS", "0")],
                "batch.max_events",
            ),
            (
                &[("MONGO_SOURCE__BATCH__MAX_EVENTS", "many")],
                "batch.max_events",
            ),
            (
                &[("MONGO_SOURCE__START__MODE", "timestamp")],
                "start.timestamp",
            ),
            (
                &[("MONGO_SOURCE__COLLECTIONS__1__NAME", "card")],
                "collections[1].name",
            ),
            (
                &[("MONGO_SOURCE__LOG__LEVEL", "mongo_source=verbose")],
                "log.level",
            ),
        ];
        for (env, key) in cases {
            let err = load(SHIPPED, env).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: expected `{key}` in: {err}");
        }
    }

    #[test]
    fn pipeline_stages_are_checked() {
        let text = format!(
            "{SHIPPED}\n[[collections]]\nname = \"x\"\npipeline = [{{ \"$out\" = \"y\" }}]\n"
        );
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("collections[2].pipeline[0]") && err.contains("$out"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{SHIPPED}\n[batch]\nmax_event = 5\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("max_event"), "{err}");
    }
}
