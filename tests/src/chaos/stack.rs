//! The chaos suite's private bench: a [`PrivateStack`] whose broker does
//! not create topics (as in the compose deployment, so a deleted
//! dead-letter topic stays gone), and two [`Proxy`]s a run may put in the
//! binaries' way.
//!
//! The broker proxy: Kafka tells clients which address to connect to (its
//! advertised listener), so a proxy in front of the usual listener would be
//! bypassed after the first metadata answer. The broker therefore gets a
//! second listener, `PROXIED` (`KAFKA_PROXIED_PORT` of `scripts/stack`),
//! that advertises the proxy's port: a client bootstrapping through the
//! proxy is told the proxy's address and every connection it makes crosses
//! the proxy. The usual listener (inter-broker traffic, the test's own
//! readers and admin calls) stays direct, so a partitioned client does not
//! partition the broker from itself or the test from its judge.

use crate::private_stack::{es_call, PrivateStack};
use crate::proxy::{Mode, Proxy};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The bench of the chaos suite.
pub struct ChaosStack {
    /// The servers.
    pub stack: PrivateStack,
    /// In front of the broker's `PROXIED` listener.
    pub kafka_proxy: Proxy,
    /// In front of Elasticsearch's HTTP port.
    pub es_proxy: Proxy,
    es: elasticsearch::Elasticsearch,
}

impl ChaosStack {
    /// Starts the servers (about 30 s) and the proxies, and points this
    /// process's clients (`MONGODB_URI`, `KAFKA_BOOTSTRAP_SERVERS`,
    /// `ELASTICSEARCH_URL`) at the servers directly.
    pub async fn start() -> Self {
        let proxy_port = crate::free_port();
        let stack = tokio::task::spawn_blocking(move || {
            PrivateStack::start_with(
                &[
                    ("KAFKA_AUTO_CREATE_TOPICS", "false".into()),
                    ("KAFKA_PROXIED_ADVERTISED_PORT", proxy_port.to_string()),
                ],
                &["KAFKA_PROXIED_PORT"],
            )
        })
        .await
        .expect("start the private stack");
        for (k, v) in stack.env() {
            std::env::set_var(k, v);
        }
        let kafka_proxy = Proxy::start(
            proxy_port,
            ([127, 0, 0, 1], stack.port("KAFKA_PROXIED_PORT")).into(),
        )
        .await
        .expect("kafka proxy");
        let es_proxy = Proxy::start(
            crate::free_port(),
            ([127, 0, 0, 1], stack.port("ES_PORT")).into(),
        )
        .await
        .expect("elasticsearch proxy");
        let url = format!("http://127.0.0.1:{}", stack.port("ES_PORT"));
        let pool = SingleNodeConnectionPool::new(url.parse().expect("url"));
        let t = TransportBuilder::new(pool)
            .enable_meta_header(false)
            .build()
            .expect("transport");
        Self {
            stack,
            kafka_proxy,
            es_proxy,
            es: elasticsearch::Elasticsearch::new(t),
        }
    }

    /// `scripts/stack ARGS` on the private stack, off the async workers.
    pub async fn servers(&self, args: &[&str], env: &[(&str, &str)]) {
        tokio::task::block_in_place(|| self.stack.run_with(args, env));
    }

    /// One request to Elasticsearch, directly: status and JSON body.
    pub async fn es(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        es_call(&self.es, method, path, body).await
    }

    /// Like [`ChaosStack::es`], asserting a 2xx answer.
    pub async fn es_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, b) = self.es(method, path, body).await;
        assert!((200..300).contains(&s), "{path}: {s} {b}");
        b
    }

    /// Bootstrap servers through the broker proxy.
    pub fn kafka_via_proxy(&self) -> String {
        self.kafka_proxy.addr()
    }

    /// Elasticsearch's URL through its proxy.
    pub fn es_via_proxy(&self) -> String {
        format!("http://{}", self.es_proxy.addr())
    }

    /// Undoes whatever a run may have left behind when it failed half-way:
    /// proxies pass again, Elasticsearch thawed and without the cluster
    /// settings the faults set, no index blocked.
    pub async fn heal(&self) {
        self.kafka_proxy.set(Mode::Pass);
        self.es_proxy.set(Mode::Pass);
        self.servers(&["resume", "elasticsearch"], &[]).await;
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            self.es(
                Method::Put,
                "/_cluster/settings",
                Some(json!({"transient": {
                    "cluster.routing.allocation.disk.threshold_enabled": null,
                    "cluster.routing.allocation.disk.watermark.low": null,
                    "cluster.routing.allocation.disk.watermark.high": null,
                    "cluster.routing.allocation.disk.watermark.flood_stage": null,
                    "cluster.info.update.interval": null,
                    "action.auto_create_index": null,
                }})),
            )
            .await;
            self.es(
                Method::Put,
                "/_all/_settings",
                Some(json!({"index.blocks.read_only_allow_delete": null, "index.blocks.write": null})),
            )
            .await;
        })
        .await;
    }
}
