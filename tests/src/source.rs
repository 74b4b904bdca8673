//! Fixtures for `mongo-source` tests: a config on unique names (database,
//! topic prefix, transactional ids) and ways to run the source.

use mongo_source::config::SourceConfig;
use shared::shutdown::CancellationToken;
use std::path::PathBuf;

/// A source set-up on unique names.
pub struct SourceFixture {
    /// Database (unique per test).
    pub db: String,
    /// Topic prefix (unique per test).
    pub prefix: String,
    /// Admin port.
    pub admin_port: u16,
    /// Extra TOML appended to the config (sections not in the base).
    pub extra: String,
    /// Collections.
    pub collections: Vec<String>,
    /// Overrides of `[batch]` keys, as TOML lines.
    pub batch: String,
    /// Overrides of `[kafka]` keys, as TOML lines.
    pub kafka: String,
    /// Overrides of `[topics]` keys, as TOML lines.
    pub topics: String,
    /// Overrides of `[admin]` keys, as TOML lines.
    pub admin: String,
    /// The `[retry]` section's lines.
    pub retry: String,
    /// The `[oversized]` section's lines (default: the shipped policy).
    pub oversized: String,
    /// Extra TOML lines per collection (`topic = ...`, `pipeline = ...`).
    pub collection_extra: std::collections::HashMap<String, String>,
}

impl SourceFixture {
    /// A fixture streaming `collections`.
    pub fn new(collections: &[&str]) -> Self {
        crate::logs::init();
        let tag = crate::unique("");
        Self {
            db: format!("it_{tag}"),
            prefix: format!("t{tag}"),
            admin_port: crate::free_port(),
            extra: String::new(),
            collections: collections.iter().map(|s| s.to_string()).collect(),
            batch: String::new(),
            kafka: String::new(),
            topics: String::new(),
            admin: String::new(),
            collection_extra: Default::default(),
            retry: "initial_ms = 100\nmax_ms = 2000".into(),
            oversized: String::new(),
        }
    }

    /// Topic of a collection.
    pub fn topic(&self, coll: &str) -> String {
        format!("{}.{}.{}", self.prefix, self.db, coll)
    }

    /// Dead-letter topic.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    /// Positions topic.
    pub fn positions(&self) -> String {
        format!("{}.mongo-source.offsets", self.prefix)
    }

    /// The config text.
    pub fn toml(&self) -> String {
        let mut s = format!(
            r#"
[mongodb]
uri = "{uri}"
database = "{db}"

[kafka]
bootstrap_servers = "{kafka}"
transactional_id_prefix = "{prefix}"
{kafka_extra}

[topics]
prefix = "{prefix}"
partitions = 3
{topics}

[batch]
{batch}

[retry]
{retry}

[admin]
listen = "127.0.0.1:{port}"
{admin}

[oversized]
{oversized}
"#,
            uri = crate::mongodb_uri(),
            db = self.db,
            kafka = crate::kafka_bootstrap(),
            prefix = self.prefix,
            kafka_extra = self.kafka,
            oversized = self.oversized,
            batch = self.batch,
            port = self.admin_port,
            topics = self.topics,
            admin = self.admin,
            retry = self.retry,
        );
        for c in &self.collections {
            s.push_str(&format!("\n[[collections]]\nname = \"{c}\"\n"));
            if let Some(extra) = self.collection_extra.get(c) {
                s.push_str(extra);
                s.push('\n');
            }
        }
        s.push_str(&self.extra);
        s
    }

    /// Writes the config to a temp file.
    pub fn write(&self) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}.toml", crate::unique("mongo-source-")));
        std::fs::write(&path, self.toml()).expect("write config");
        path
    }

    /// The parsed, validated config.
    pub fn config(&self) -> SourceConfig {
        let cfg: SourceConfig = shared::config::load_str(
            &self.toml(),
            std::path::Path::new("test.toml"),
            "NONE",
            Vec::<(String, String)>::new(),
        )
        .expect("config");
        cfg.validate().expect("valid config");
        cfg
    }

    /// Runs the source in this process until the returned token is cancelled.
    pub fn spawn(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let token = CancellationToken::new();
        let handle = tokio::spawn(mongo_source::run(self.config(), token.clone()));
        (token, handle)
    }

    /// Waits until the snapshot end markers of `coll` (one per partition of
    /// its topic, 3 with this fixture) are on the topic.
    pub async fn wait_snapshot_done(&self, coll: &str) {
        let topic = self.topic(coll);
        crate::eventually(
            "snapshot end markers",
            std::time::Duration::from_secs(60),
            || async {
                let recs = crate::kafka::read_all(&topic).await;
                let ends = recs
                    .iter()
                    .filter(|r| r.value["op"] == "snapshot_end")
                    .count();
                (ends >= 3).then_some(())
            },
        )
        .await;
    }

    /// The `/status` document (Null while the server is not up).
    pub async fn status(&self) -> serde_json::Value {
        match self.admin_get("/status").await {
            Some(body) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        }
    }

    /// GET a path of the admin server, as text.
    pub async fn admin_get(&self, path: &str) -> Option<String> {
        crate::http_get(self.admin_port, path).await
    }
}
