//! Private servers of `scripts/stack` for tests that must not touch the
//! shared bench: a real node in a fresh temporary `STACK_DIR` on free
//! loopback ports, stopped and wiped on drop. Tests may pause (SIGSTOP) or
//! reconfigure it without disturbing the tests that share the bench.

use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `scripts/stack` of this repository.
pub fn stack_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack")
}

/// A private Elasticsearch 7.10.2 node (`scripts/stack start elasticsearch`)
/// in its own `STACK_DIR`, on free HTTP and transport ports. `Drop` runs
/// `scripts/stack down --wipe` (which also thaws a paused node first).
pub struct PrivateElasticsearch {
    dir: PathBuf,
    http_port: u16,
    transport_port: u16,
    client: elasticsearch::Elasticsearch,
}

impl PrivateElasticsearch {
    /// Starts a node with the server's default write queue.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a node; `write_queue_size` sets `thread_pool.write.queue_size`
    /// (`Some(1)` makes the node reject writes with real 429s under load).
    /// Blocks until the node answers (about 8 s).
    pub fn start_with(write_queue_size: Option<u32>) -> Self {
        Self::start_configured(write_queue_size, "", true)
    }

    /// Starts a node with more node settings (`ES_EXTRA_SETTINGS`, e.g.
    /// `"http.max_content_length=1mb"`).
    pub fn start_with_settings(settings: &str) -> Self {
        Self::start_configured(None, settings, true)
    }

    /// Starts a node without the Korean analyzer nori (`ES_NORI=0`), like
    /// a stock engine without the `analysis-nori` plugin.
    pub fn start_without_nori() -> Self {
        Self::start_configured(None, "", false)
    }

    fn start_configured(write_queue_size: Option<u32>, settings: &str, nori: bool) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("stack-es-"));
        let http_port = crate::free_port();
        let mut transport_port = crate::free_port();
        while transport_port == http_port {
            transport_port = crate::free_port();
        }
        let node = Self {
            client: client_for(&format!("http://127.0.0.1:{http_port}")),
            dir,
            http_port,
            transport_port,
        };
        let mut cmd = node.command(&["start", "elasticsearch"]);
        if let Some(q) = write_queue_size {
            cmd.env("ES_WRITE_QUEUE_SIZE", q.to_string());
        }
        cmd.env("ES_EXTRA_SETTINGS", settings);
        cmd.env("ES_NORI", if nori { "1" } else { "0" });
        let st = cmd.status().expect("run scripts/stack");
        assert!(
            st.success(),
            "private elasticsearch did not start (STACK_DIR {})",
            node.dir.display()
        );
        node
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(stack_script());
        c.args(args)
            .env("STACK_DIR", &self.dir)
            .env("ES_PORT", self.http_port.to_string())
            .env("ES_TRANSPORT_PORT", self.transport_port.to_string());
        c
    }

    fn run(&self, args: &[&str]) {
        let st = self.command(args).status().expect("run scripts/stack");
        assert!(st.success(), "scripts/stack {args:?} failed");
    }

    /// The node's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Freezes the node (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.run(&["pause", "elasticsearch"]);
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&self) {
        self.run(&["resume", "elasticsearch"]);
    }

    /// One request to the node: HTTP status and JSON body (`Null` if the
    /// body is not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        es_call(&self.client, method, path, body).await
    }

    /// `_id -> _version` of every document of `index` (at most 10,000),
    /// after a refresh; empty if the index does not exist. Waits out the
    /// 503 of shards still being allocated right after index creation.
    pub async fn versions(&self, index: &str) -> BTreeMap<String, u64> {
        let mut tries = 0;
        let (status, body) = loop {
            self.call(Method::Post, &format!("/{index}/_refresh"), None)
                .await;
            let (status, body) = self
                .call(
                    Method::Post,
                    &format!("/{index}/_search"),
                    Some(json!({
                        "size": 10000, "version": true, "_source": false,
                        "query": {"match_all": {}}
                    })),
                )
                .await;
            if status == 503 && tries < 150 {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            break (status, body);
        };
        if status == 404 {
            return BTreeMap::new();
        }
        assert_eq!(status, 200, "{body}");
        body["hits"]["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| {
                (
                    h["_id"].as_str().expect("_id").to_string(),
                    h["_version"].as_u64().expect("_version"),
                )
            })
            .collect()
    }
}

impl Drop for PrivateElasticsearch {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--wipe"]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request through `client`: HTTP status and JSON body (`Null` if the
/// body is not JSON); panics if the node cannot be reached.
pub async fn es_call(
    client: &elasticsearch::Elasticsearch,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string().into_bytes());
    let r = client
        .send(
            method,
            path,
            elasticsearch::http::headers::HeaderMap::new(),
            None::<&()>,
            body,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap_or_else(|e| panic!("request {path} to Elasticsearch: {e}"));
    let status = r.status_code().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `scripts/stack down --wipe` of the private `STACK_DIR` `dir` (with the
/// environment it was started with), then removes the folder; for `Drop`.
pub fn stack_down(dir: &std::path::Path, env: &[(&str, String)]) {
    let mut c = Command::new(stack_script());
    c.args(["down", "--wipe"]).env("STACK_DIR", dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let _ = c.status();
    let _ = std::fs::remove_dir_all(dir);
}

fn client_for(url: &str) -> elasticsearch::Elasticsearch {
    let pool = SingleNodeConnectionPool::new(url.parse().expect("url"));
    let t = TransportBuilder::new(pool)
        .enable_meta_header(false)
        .build()
        .expect("transport");
    elasticsearch::Elasticsearch::new(t)
}

/// A private Kafka broker (`scripts/stack start kafka`) in its own
/// `STACK_DIR` on free ports, for tests that need a broker configured
/// unlike the bench's. `Drop` runs `scripts/stack down --wipe`.
pub struct PrivateKafka {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    port: u16,
}

impl PrivateKafka {
    /// A broker with `auto.create.topics.enable=false`, as in the compose
    /// deployment: a write to a missing topic fails instead of creating it
    /// (about 15 s to start).
    pub fn start_without_auto_create() -> Self {
        let port = crate::free_port();
        let mut controller = crate::free_port();
        while controller == port {
            controller = crate::free_port();
        }
        let k = Self {
            dir: std::env::temp_dir().join(crate::unique("stack-kafka-")),
            env: vec![
                ("KAFKA_PORT", port.to_string()),
                ("KAFKA_CONTROLLER_PORT", controller.to_string()),
                ("KAFKA_AUTO_CREATE_TOPICS", "false".into()),
            ],
            port,
        };
        let mut c = Command::new(stack_script());
        c.args(["start", "kafka"]).env("STACK_DIR", &k.dir);
        for (name, v) in &k.env {
            c.env(name, v);
        }
        let st = c.status().expect("run scripts/stack");
        assert!(
            st.success(),
            "private kafka did not start (STACK_DIR {})",
            k.dir.display()
        );
        k
    }

    /// Its bootstrap servers, `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        stack_down(&self.dir, &self.env);
    }
}

/// A private copy of the whole bench (Kafka, Elasticsearch, MongoDB) in its
/// own `STACK_DIR` on free ports, for tests that restart servers (chaos).
/// `Drop` runs `scripts/stack down --wipe`.
pub struct PrivateStack {
    dir: PathBuf,
    ports: Vec<(&'static str, u16)>,
    /// More `scripts/stack` settings, given to every command.
    settings: Vec<(&'static str, String)>,
}

impl PrivateStack {
    /// Starts all three servers (blocks until they answer).
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Starts all three servers with more `scripts/stack` settings (e.g.
    /// `KAFKA_AUTO_CREATE_TOPICS=false`) and more named ports taken from
    /// [`crate::free_port`] (e.g. `KAFKA_PROXIED_PORT`); blocks until they
    /// answer.
    pub fn start_with(settings: &[(&'static str, String)], more_ports: &[&'static str]) -> Self {
        let mut used = std::collections::HashSet::new();
        let mut port = || loop {
            let p = crate::free_port();
            if used.insert(p) {
                return p;
            }
        };
        let names = [
            "KAFKA_PORT",
            "KAFKA_CONTROLLER_PORT",
            "ES_PORT",
            "ES_TRANSPORT_PORT",
            "MONGO_PORT",
        ];
        let s = Self {
            dir: std::env::temp_dir().join(crate::unique("stack-all-")),
            ports: names
                .iter()
                .chain(more_ports)
                .map(|n| (*n, port()))
                .collect(),
            settings: settings.to_vec(),
        };
        s.run(&["up"]);
        s
    }

    /// The port named `name` (`KAFKA_PORT`, `ES_PORT`, ...; 0 if unknown).
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, p)| *p)
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(stack_script());
        c.args(args).env("STACK_DIR", &self.dir);
        for (k, v) in &self.settings {
            c.env(k, v);
        }
        for (k, v) in &self.ports {
            c.env(k, v.to_string());
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs `scripts/stack ARGS` on this stack.
    pub fn run(&self, args: &[&str]) {
        self.run_with(args, &[]);
    }

    /// Runs `scripts/stack ARGS` on this stack with extra environment
    /// (e.g. `ES_WRITE_QUEUE_SIZE` for a restart).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) {
        let st = self.command(args, env).status().expect("run scripts/stack");
        assert!(
            st.success(),
            "scripts/stack {args:?} failed (STACK_DIR {})",
            self.dir.display()
        );
    }

    /// The PID of one of its servers (`kafka`, `elasticsearch`, `mongodb`)
    /// while it runs.
    pub fn pid(&self, server: &str) -> Option<u32> {
        let file = self.dir.join("run").join(format!("{server}.pid"));
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// `MONGODB_URI`, `KAFKA_BOOTSTRAP_SERVERS`, `ELASTICSEARCH_URL` of it.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            (
                "MONGODB_URI",
                format!(
                    "mongodb://127.0.0.1:{}/?directConnection=true",
                    self.port("MONGO_PORT")
                ),
            ),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", self.port("KAFKA_PORT")),
            ),
            (
                "ELASTICSEARCH_URL",
                format!("http://127.0.0.1:{}", self.port("ES_PORT")),
            ),
        ]
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--wipe"], &[]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
