//! Support for the integration tests: connections to the servers of
//! `scripts/stack` (addresses from `MONGODB_URI`, `KAFKA_BOOTSTRAP_SERVERS`,
//! `ELASTICSEARCH_URL`), unique names so tests run in parallel and re-run
//! without cleanup, Kafka readers, and the built binaries.

pub mod kafka;
pub mod process;

use std::future::Future;
use std::time::{Duration, Instant};

/// MongoDB connection string of the test bench.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into())
}

/// Kafka bootstrap servers of the test bench.
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Elasticsearch URL of the test bench.
pub fn elasticsearch_url() -> String {
    std::env::var("ELASTICSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// A short random name with a prefix, valid as a topic, index or database.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}

/// A MongoDB client for the bench.
pub async fn mongo() -> mongodb::Client {
    mongodb::Client::with_uri_str(mongodb_uri()).await.expect("mongodb client")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Helpers of the es-sync integration tests (`tests/sync_*.rs`).
pub mod sync_support;
