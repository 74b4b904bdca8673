//! `es-sync` configuration: a TOML file (`--config`), every key overridable
//! by `ES_SYNC__{PATH}` environment variables (see [`shared::config`]).
//! [`SyncConfig::validate`] checks every value without I/O; nothing
//! connects before it passed. Relative paths (index files) are resolved
//! against the directory of the config file by [`SyncConfig::load`].

use serde::Deserialize;
use shared::admin::AdminConfig;
use shared::config::{ConfigError, Secret};
use shared::kafka_client::KafkaClientSettings;
use shared::retry::RetryConfig;
use shared::telemetry::LogConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable prefix of the overrides.
pub const ENV_PREFIX: &str = "ES_SYNC";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Kafka connection and consumer group.
    pub kafka: KafkaConfig,
    /// Elasticsearch connection.
    pub elasticsearch: ElasticsearchConfig,
    /// The topics to consume, each into one alias.
    pub topics: Vec<TopicConfig>,
    /// Dead-letter topic.
    #[serde(default)]
    pub dlq: DlqConfig,
    /// Bulk request batching and concurrency.
    #[serde(default)]
    pub bulk: BulkConfig,
    /// Memory bounds and offset commits.
    #[serde(default)]
    pub consumer: ConsumerConfig,
    /// Backoff for retryable Elasticsearch and Kafka failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Admin HTTP server (health, readiness, status, metrics).
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    /// Replies rolled up into their card (optional, see [`crate::rollup`]).
    #[serde(default)]
    pub rollup: Option<crate::rollup::RollupConfig>,
    /// Measuring MongoDB commit -> searchable ([`crate::freshness`]).
    #[serde(default)]
    pub freshness: crate::freshness::FreshnessConfig,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on_port(9465)
}

/// `[kafka]`: the connection settings shared with mongo-source
/// ([`KafkaClientSettings`]: `bootstrap_servers`, `properties`,
/// `property_files`) plus the consumer group's own.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Brokers and librdkafka properties, passed to the consumer, the DLQ
    /// producer (whose `message.max.bytes` es-sync sets to the dead-letter
    /// topic's limit) and the operator commands.
    #[serde(flatten)]
    pub client: KafkaClientSettings,
    /// Consumer group id; offsets are committed under it.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where a partition without a committed offset starts: `earliest`
    /// (default: a new group indexes everything the topic still holds) or
    /// `latest`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// Kafka group session timeout, in ms (`session.timeout.ms`).
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Timeout of a single Kafka operation (commit, metadata), in ms.
    #[serde(default = "default_op_timeout_ms")]
    pub operation_timeout_ms: u64,
    /// Keys no field took, refused by `validate()` (`flatten` rules out
    /// `deny_unknown_fields`).
    #[serde(flatten)]
    pub unknown: shared::kafka_client::UnknownKeys,
}

impl KafkaConfig {
    /// The base librdkafka configuration of every es-sync client.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        self.client.client_config("es-sync")
    }
}

fn default_group() -> String {
    "es-sync".into()
}
fn default_offset_reset() -> String {
    "earliest".into()
}
fn default_session_timeout_ms() -> u64 {
    45_000
}
fn default_op_timeout_ms() -> u64 {
    10_000
}

/// `[elasticsearch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URL, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// Basic-auth user name (with `password` or `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password; never logged. Prefer `password_file`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the basic-auth password (e.g. a docker secret),
    /// trailing newline ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Elasticsearch API key, the base64 `encoded` value of the create-API-key
    /// answer, sent as `Authorization: ApiKey ...`; instead of basic auth.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// File holding the encoded API key, trailing newline ignored.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) that signed the server's
    /// certificate, for `https://` URLs; without it the system roots are
    /// used. Host names (or IPs) are verified against the certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one HTTP request (bulk, bootstrap), in ms.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

impl ElasticsearchConfig {
    /// Checks the credential and TLS keys (no I/O).
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let password = self.password.is_some() || self.password_file.is_some();
        if self.password.is_some() && self.password_file.is_some() {
            return Err(ConfigError::invalid(
                "elasticsearch.password_file",
                "set either elasticsearch.password or elasticsearch.password_file",
            ));
        }
        if self.username.is_some() != password {
            return Err(ConfigError::invalid(
                "elasticsearch.password",
                "set both username and password (or password_file), or neither",
            ));
        }
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return Err(ConfigError::invalid(
                "elasticsearch.api_key_file",
                "set either elasticsearch.api_key or elasticsearch.api_key_file",
            ));
        }
        if password && (self.api_key.is_some() || self.api_key_file.is_some()) {
            return Err(ConfigError::invalid(
                "elasticsearch.api_key",
                "use either basic auth (username/password) or an API key, not both",
            ));
        }
        if self.ca_file.is_some() && !self.url.starts_with("https://") {
            return Err(ConfigError::invalid(
                "elasticsearch.ca_file",
                "needs an https:// elasticsearch.url",
            ));
        }
        Ok(())
    }
}

/// One `[[topics]]` entry: a topic of change events into one alias.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Kafka topic, e.g. `live.mountain.card`.
    pub topic: String,
    /// Elasticsearch alias written to (created with a first concrete index
    /// `{alias}-000001` when missing).
    pub alias: String,
    /// JSON file with `settings` and `mappings` for new concrete indices;
    /// relative paths are relative to the config file.
    pub index_file: PathBuf,
    /// Field whose value becomes the Elasticsearch `_id`: only `_id` (the
    /// default) is accepted. Another field cannot be kept equal to MongoDB:
    /// a delete event carries only the document key, so the document could
    /// not be found to delete, and a changed value would leave the old
    /// document searchable. Index the field as a normal field and query it.
    /// How `_id` values become Elasticsearch ids:
    /// [`crate::action::render_id`].
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Which fields of the document are indexed.
    #[serde(default)]
    pub projection: ProjectionConfig,
}

fn default_id_field() -> String {
    "_id".into()
}

/// The field es-sync adds to every document it writes (its version, op,
/// namespace, partition, cluster time): a projection may not produce it.
pub const SYNC_FIELD: &str = "_sync";

/// `[topics.projection]`: applied to top-level fields, in the order
/// include, exclude, rename.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// Only these top-level fields are kept (empty keeps all).
    pub include: Vec<String>,
    /// These top-level fields are dropped.
    pub exclude: Vec<String>,
    /// Top-level fields renamed, `from = "to"`.
    pub rename: BTreeMap<String, String>,
}

/// `[dlq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Topic prefix; the default topic is `{prefix}.dlq.sync`.
    pub prefix: String,
    /// Explicit dead-letter topic (overrides the prefix rule).
    pub topic: Option<String>,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            prefix: "live".into(),
            topic: None,
        }
    }
}

impl DlqConfig {
    /// The dead-letter topic name.
    pub fn topic_name(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq.sync", self.prefix))
    }
}

/// `[bulk]`: a bulk request is cut at whichever limit comes first.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    /// Actions per bulk request. Elasticsearch's guidance is requests of a
    /// few MiB; 1000 small documents stay well below that while making the
    /// per-request overhead (~1-5 ms) negligible.
    pub max_actions: usize,
    /// Bytes of NDJSON per bulk request (5 MiB): large enough for
    /// throughput, small enough to stay far from `http.max_content_length`
    /// (100 MiB) and to bound memory per request.
    pub max_bytes: usize,
    /// Longest time, in ms, a record waits for its bulk to fill (50 ms):
    /// bounds the latency a quiet topic adds; below the default
    /// `refresh_interval` (1 s) so it does not dominate visibility.
    pub linger_ms: u64,
    /// Bulk requests in flight at once, across partitions (4): one
    /// partition has at most one request in flight (per-document order),
    /// several partitions run in parallel up to this bound.
    pub max_in_flight: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            max_actions: 1000,
            max_bytes: 5 << 20,
            linger_ms: 50,
            max_in_flight: 4,
        }
    }
}

/// `[consumer]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Records buffered (received, not yet done) before consumption pauses
    /// (backpressure); it resumes below half of it. Bounds memory whatever
    /// Elasticsearch does.
    pub max_buffered_records: usize,
    /// Bytes of buffered record values before consumption pauses.
    pub max_buffered_bytes: usize,
    /// How often done offsets are committed, in ms.
    pub commit_interval_ms: u64,
    /// On shutdown, how long in-flight bulks may take to finish, in ms,
    /// before they are abandoned (their records are redelivered later).
    pub shutdown_timeout_ms: u64,
    /// An event whose cluster time is more than this many seconds ahead of
    /// both this host's clock and its record's Kafka timestamp waits (its
    /// partition holds, `/status` says why) until the clocks catch up:
    /// indexed early, its version would tie the document to a clock that is
    /// wrong somewhere. One hour covers any sane skew; 0 turns it off.
    pub max_future_seconds: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_buffered_records: 10_000,
            max_buffered_bytes: 16 << 20,
            commit_interval_ms: 1000,
            shutdown_timeout_ms: 20_000,
            max_future_seconds: 3600,
        }
    }
}

const OFFSET_RESETS: [&str; 2] = ["earliest", "latest"];

impl SyncConfig {
    /// Reads `path` with the process environment's overrides, resolves
    /// relative paths against the file's directory and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: SyncConfig = shared::config::load(path, ENV_PREFIX)?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes relative `index_file`s (and credential and CA files)
    /// relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for t in &mut self.topics {
            if t.index_file.is_relative() {
                t.index_file = base.join(&t.index_file);
            }
        }
        let es = &mut self.elasticsearch;
        for p in [&mut es.password_file, &mut es.api_key_file, &mut es.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks every value; the error names the key. No I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        shared::kafka_client::refuse_unknown("kafka", &self.kafka.unknown)?;
        self.kafka
            .client
            .validate(&MANAGED_PROPERTIES, "offsets are stored only when done")?;
        shared::config::require_name("kafka.group_id", &self.kafka.group_id, &[])?;
        if !OFFSET_RESETS.contains(&self.kafka.auto_offset_reset.as_str()) {
            return Err(ConfigError::invalid(
                "kafka.auto_offset_reset",
                format!(
                    "`{}` is not one of earliest, latest",
                    self.kafka.auto_offset_reset
                ),
            ));
        }
        if self.kafka.session_timeout_ms < 1000 {
            return Err(ConfigError::invalid(
                "kafka.session_timeout_ms",
                "must be >= 1000",
            ));
        }
        if self.kafka.operation_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "kafka.operation_timeout_ms",
                "must be >= 1",
            ));
        }
        match url::Url::parse(&self.elasticsearch.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(_) => {
                return Err(ConfigError::invalid(
                    "elasticsearch.url",
                    "must be http:// or https://",
                ))
            }
            Err(e) => return Err(ConfigError::invalid("elasticsearch.url", e.to_string())),
        }
        self.elasticsearch.validate_auth()?;
        if self.elasticsearch.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "elasticsearch.request_timeout_ms",
                "must be >= 1",
            ));
        }
        if self.topics.is_empty() {
            return Err(ConfigError::invalid(
                "topics",
                "at least one topic is needed",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            shared::config::require_name(&format!("topics[{i}].topic"), &t.topic, &[])?;
            if !seen.insert(&t.topic) {
                return Err(ConfigError::invalid(
                    format!("topics[{i}].topic"),
                    format!("`{}` is listed twice", t.topic),
                ));
            }
            validate_index_name(&format!("topics[{i}].alias"), &t.alias)?;
            if t.index_file.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("topics[{i}].index_file"),
                    "required",
                ));
            }
            if t.id_field != "_id" {
                return Err(ConfigError::invalid(
                    format!("topics[{i}].id_field"),
                    format!(
                        "`{}` is not supported, only `_id`: delete events carry only the \
                         document key, so a document indexed under another field could not be \
                         deleted, and a changed value would leave the old document searchable; \
                         index the field as a normal field and query it instead",
                        t.id_field
                    ),
                ));
            }
            let p = &t.projection;
            for (j, f) in p.include.iter().chain(&p.exclude).enumerate() {
                if f.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("topics[{i}].projection"),
                        format!("field {j} is empty"),
                    ));
                }
            }
            for (from, to) in &p.rename {
                if to.is_empty() || to == "_id" || to == SYNC_FIELD {
                    return Err(ConfigError::invalid(
                        format!("topics[{i}].projection.rename.{from}"),
                        format!("cannot rename to `{to}`"),
                    ));
                }
            }
        }
        shared::config::require_name("dlq.prefix", &self.dlq.prefix, &[])?;
        if let Some(t) = &self.dlq.topic {
            shared::config::require_name("dlq.topic", t, &[])?;
            if seen.contains(t) {
                return Err(ConfigError::invalid(
                    "dlq.topic",
                    "must not be a consumed topic",
                ));
            }
        }
        let b = &self.bulk;
        if b.max_actions == 0 {
            return Err(ConfigError::invalid("bulk.max_actions", "must be >= 1"));
        }
        if b.max_bytes < 1024 {
            return Err(ConfigError::invalid("bulk.max_bytes", "must be >= 1024"));
        }
        if b.linger_ms == 0 {
            return Err(ConfigError::invalid("bulk.linger_ms", "must be >= 1"));
        }
        if b.max_in_flight == 0 {
            return Err(ConfigError::invalid("bulk.max_in_flight", "must be >= 1"));
        }
        let c = &self.consumer;
        if c.max_buffered_records < b.max_actions {
            return Err(ConfigError::invalid(
                "consumer.max_buffered_records",
                "must be >= bulk.max_actions (one full bulk must fit)",
            ));
        }
        if c.max_buffered_bytes < b.max_bytes {
            return Err(ConfigError::invalid(
                "consumer.max_buffered_bytes",
                "must be >= bulk.max_bytes (one full bulk must fit)",
            ));
        }
        if c.commit_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "consumer.commit_interval_ms",
                "must be >= 1",
            ));
        }
        self.retry.validate("retry")?;
        self.log.validate()?;
        self.admin.validate()?;
        if let Some(r) = &self.rollup {
            let mut topics: Vec<&str> = self.topics.iter().map(|t| t.topic.as_str()).collect();
            // `reindex` narrows the topics and names the other index itself.
            if r.parent_index.is_some() {
                topics.push(&r.parent_topic);
            }
            if r.child_index.is_some() {
                topics.push(&r.child_topic);
            }
            r.validate(&topics)?;
        }
        self.freshness.validate()?;
        Ok(())
    }

    /// The topic entry for `topic`.
    pub fn route(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.topic == topic)
    }
}

/// librdkafka properties es-sync sets itself; overriding them would break
/// the offset guarantee.
const MANAGED_PROPERTIES: [&str; 4] = [
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "enable.partition.eof",
];

/// Elasticsearch index/alias naming rules (lower case, no `\ / * ? " < > | , #`
/// or space, not starting with `-`, `_`, `+`, not `.`/`..`, <= 255 bytes).
pub fn validate_index_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.starts_with(['-', '_', '+'])
        || name
            .chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c));
    if bad {
        return Err(ConfigError::invalid(
            key,
            format!("`{name}` is not a valid Elasticsearch index or alias name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../config/es-sync.toml");

    fn load(text: &str, env: &[(&str, &str)]) -> Result<SyncConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let mut cfg: SyncConfig =
            shared::config::load_str(text, Path::new("config/es-sync.toml"), ENV_PREFIX, env)?;
        cfg.resolve_paths(Path::new("config"));
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn shipped_config_is_valid_and_points_at_the_bench() {
        let cfg = load(SHIPPED, &[]).unwrap();
        assert_eq!(cfg.kafka.client.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(cfg.kafka.group_id, "es-sync");
        assert_eq!(cfg.elasticsearch.url, "http://127.0.0.1:9200");
        let card = cfg.route("live.mountain.card").unwrap();
        assert_eq!(card.alias, "cards");
        assert_eq!(card.index_file, Path::new("config/indices/cards.json"));
        assert_eq!(cfg.route("live.mountain.reply").unwrap().alias, "replies");
        assert_eq!(cfg.dlq.topic_name(), "live.dlq.sync");
    }

    #[test]
    fn shipped_index_files_exist_and_parse() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cfg = load(SHIPPED, &[]).unwrap();
        for t in &cfg.topics {
            let text = std::fs::read_to_string(base.join(&t.index_file)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["settings"].is_object() && v["mappings"].is_object(),
                "{t:?}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("ES_SYNC__ELASTICSEARCH__URL", "ftp://x")],
                "elasticsearch.url",
            ),
            (
                &[("ES_SYNC__ELASTICSEARCH__URL", "not a url")],
                "elasticsearch.url",
            ),
            (
                &[("ES_SYNC__KAFKA__AUTO_OFFSET_RESET", "smallest")],
                "kafka.auto_offset_reset",
            ),
            (&[("ES_SYNC__KAFKA__GROUP_ID", "")], "kafka.group_id"),
            (&[("ES_SYNC__BULK__MAX_ACTIONS", "0")], "bulk.max_actions"),
            (
                &[("ES_SYNC__BULK__MAX_ACTIONS", "many")],
                "bulk.max_actions",
            ),
            (
                &[("ES_SYNC__BULK__MAX_IN_FLIGHT", "0")],
                "bulk.max_in_flight",
            ),
            (
                &[("ES_SYNC__CONSUMER__MAX_BUFFERED_RECORDS", "10")],
                "consumer.max_buffered_records",
            ),
            (&[("ES_SYNC__TOPICS__0__ALIAS", "Cards")], "topics[0].alias"),
            (
                &[("ES_SYNC__TOPICS__1__TOPIC", "live.mountain.card")],
                "topics[1].topic",
            ),
            (
                &[("ES_SYNC__TOPICS__0__ID_FIELD", "slug")],
                "topics[0].id_field",
            ),
            (
                &[("ES_SYNC__ELASTICSEARCH__USERNAME", "elastic")],
                "elasticsearch.password",
            ),
            (
                &[
                    ("ES_SYNC__ELASTICSEARCH__USERNAME", "elastic"),
                    ("ES_SYNC__ELASTICSEARCH__PASSWORD", "x"),
                    ("ES_SYNC__ELASTICSEARCH__PASSWORD_FILE", "/pw"),
                ],
                "elasticsearch.password_file",
            ),
            (
                &[
                    ("ES_SYNC__ELASTICSEARCH__USERNAME", "elastic"),
                    ("ES_SYNC__ELASTICSEARCH__PASSWORD_FILE", "/pw"),
                    ("ES_SYNC__ELASTICSEARCH__API_KEY", "k"),
                ],
                "elasticsearch.api_key",
            ),
            (
                &[
                    ("ES_SYNC__ELASTICSEARCH__API_KEY", "k"),
                    ("ES_SYNC__ELASTICSEARCH__API_KEY_FILE", "/k"),
                ],
                "elasticsearch.api_key_file",
            ),
            (
                &[("ES_SYNC__ELASTICSEARCH__CA_FILE", "/ca.pem")],
                "elasticsearch.ca_file",
            ),
            (&[("ES_SYNC__LOG__LEVEL", "x=loud")], "log.level"),
            (&[("ES_SYNC__RETRY__MULTIPLIER", "0.5")], "retry.multiplier"),
        ];
        for (env, key) in cases {
            let err = load(SHIPPED, env).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: expected `{key}` in: {err}");
        }
    }

    #[test]
    fn credential_files_resolve_against_the_config_folder() {
        let env = [
            ("ES_SYNC__ELASTICSEARCH__URL", "https://es:9200"),
            ("ES_SYNC__ELASTICSEARCH__USERNAME", "svc"),
            ("ES_SYNC__ELASTICSEARCH__PASSWORD_FILE", "secrets/es_pw"),
            ("ES_SYNC__ELASTICSEARCH__CA_FILE", "/etc/ca.pem"),
        ];
        let cfg = load(SHIPPED, &env).unwrap();
        let es = &cfg.elasticsearch;
        assert_eq!(
            es.password_file.as_deref(),
            Some(Path::new("config/secrets/es_pw"))
        );
        assert_eq!(es.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    }

    #[test]
    fn kafka_property_files_are_read_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("es-sync-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "Kpw-1\n").unwrap();
        let mut cfg = load(SHIPPED, &[]).unwrap();
        cfg.kafka
            .client
            .properties
            .insert("sasl.username".into(), Secret::new("svc"));
        cfg.kafka
            .client
            .property_files
            .insert("sasl.password".into(), file.clone());
        let cc = cfg.kafka.client_config();
        assert_eq!(cc.get("sasl.username"), Some("svc"));
        assert_eq!(cc.get("sasl.password"), Some("Kpw-1"));
        assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        std::fs::remove_file(&file).unwrap();
        let err = cfg
            .kafka
            .client
            .read_property_files()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.property_files.sasl.password") && err.contains("pw"),
            "{err}"
        );
        assert!(!err.contains("Kpw-1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn managed_kafka_properties_are_refused() {
        let text =
            format!("{SHIPPED}\n[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n");
        // The table already exists in the shipped file only if declared; append safely.
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("enable.auto.offset.store"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{SHIPPED}\n[topics.projection]\nincludes = []\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("includes"), "{err}");
        let env = [("ES_SYNC__BULK__MAX_ACTION", "5")];
        let err = load(SHIPPED, &env).unwrap_err().to_string();
        assert!(err.contains("max_action"), "{err}");
        // `[kafka]` flattens the shared settings: still refused, and named.
        let env = [("ES_SYNC__KAFKA__GROUP", "g")];
        let err = load(SHIPPED, &env).unwrap_err().to_string();
        assert!(err.contains("kafka.group"), "{err}");
    }

    #[test]
    fn renaming_onto_reserved_fields_is_refused() {
        let text = format!("{SHIPPED}\n[topics.projection.rename]\nfoo = \"_sync\"\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("projection.rename.foo"), "{err}");
    }

    #[test]
    fn dlq_topic_defaults_to_prefix_rule() {
        let d = DlqConfig {
            prefix: "test".into(),
            topic: None,
        };
        assert_eq!(d.topic_name(), "test.dlq.sync");
        let d = DlqConfig {
            prefix: "test".into(),
            topic: Some("x".into()),
        };
        assert_eq!(d.topic_name(), "x");
    }
}
