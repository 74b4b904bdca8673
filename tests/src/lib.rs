//! Support for the integration tests: connections to the servers of
//! `scripts/stack` (addresses from `MONGODB_URI`, `KAFKA_BOOTSTRAP_SERVERS`,
//! `ELASTICSEARCH_URL`), unique names so tests run in parallel and re-run
//! without cleanup, Kafka readers, and the built binaries.

pub mod chaos;
pub mod cluster;
pub mod kafka;
pub mod logs;
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
    mongodb::Client::with_uri_str(mongodb_uri())
        .await
        .expect("mongodb client")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(what, timeout, check, String::new).await
}

/// [`eventually`], whose failure message also carries `context()` (what
/// the test last saw).
pub async fn eventually_or<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    context: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    logs::init();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            let context = context();
            let sep = if context.is_empty() { "" } else { "\n" };
            panic!(
                "timed out after {timeout:?} waiting for {what}{sep}{context}{}",
                logs::tail_of_warnings(12)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The environment variable that confines [`free_port`] to a range of
/// ports, `LOW-HIGH` (e.g. `21400-21499`), so that the servers and admin
/// ports a test run opens stay out of other people's ports on a shared
/// machine (the kernel's own choice comes from its outgoing-port range,
/// 32768-60999, where others may have fixed ports).
pub const PORT_RANGE_ENV: &str = "TEST_PORT_RANGE";

/// A free TCP port on 127.0.0.1 (bound then released): the kernel's
/// choice, or one of [`PORT_RANGE_ENV`]'s range when it is set (a port
/// not handed out before by this process).
pub fn free_port() -> u16 {
    match std::env::var(PORT_RANGE_ENV) {
        Ok(range) => port_in_range(&range),
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port"),
    }
}

fn port_in_range(range: &str) -> u16 {
    use rand::Rng;
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, high) = range
        .split_once('-')
        .and_then(|(l, h)| Some((l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?)))
        .filter(|(l, h)| 0 < *l && l <= h)
        .unwrap_or_else(|| panic!("{PORT_RANGE_ENV}={range}: expected LOW-HIGH, e.g. 21400-21499"));
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u32::from(high - low) + 1;
    let start = rand::rng().random_range(0..span);
    for k in 0..span {
        let port = low + ((start + k) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("{PORT_RANGE_ENV}={range}: no free port left in the range")
}

/// Helpers of the es-sync integration tests (`tests/sync_*.rs`).
pub mod sync_support;

pub mod e2e;
pub mod korean_corpus;
pub mod private_stack;
pub mod proxy;
pub mod secure_stack;
pub mod source;
pub mod workload;

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; the body, or None if the
/// server is not there.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    http_request(port, "GET", path, None)
        .await
        .map(|(_, body)| body)
}

/// A plain HTTP/1.1 request with an optional bearer token; the status code
/// and body, or None if the server is not there.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, dechunk(body)));
    }
    Some((code, body.to_string()))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sum of the samples of a metric family (all label sets) in OpenMetrics
/// text; a histogram's `_sum` and `_count` are families of their own.
/// `name{k="v",...}` sums only the samples whose labels include each of
/// those pairs.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    let (name, wanted) = match name.split_once('{') {
        Some((n, labels)) => (n, labels.trim_end_matches('}')),
        None => (name, ""),
    };
    let wanted: Vec<&str> = wanted.split(',').filter(|p| !p.is_empty()).collect();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| {
                let labels = r.strip_prefix('{').and_then(|r| r.split_once('}'));
                match labels {
                    Some((labels, _)) => {
                        let have: Vec<&str> = labels.split(',').collect();
                        wanted.iter().all(|w| have.contains(w))
                    }
                    None => r.starts_with(' ') && wanted.is_empty(),
                }
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0
}

/// Whether es-sync's metrics say everything it was given is done: no
/// record buffered and no lag on any partition (its lag counts what is in
/// Kafka and not yet finished). The tests' judge and the bench's latency
/// runs wait for it.
pub fn es_sync_drained(metrics: &str) -> bool {
    metric_sum(metrics, "es_sync_buffered_records") == 0.0
        && metric_sum(metrics, "es_sync_consumer_lag_records") == 0.0
}

/// The value of a Prometheus sample `name{labels}` in `text`, if present.
pub fn metric_value(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A tiny JSON-over-HTTP client for Elasticsearch checks in tests.
pub struct JsonClient(elasticsearch::http::transport::Transport);

/// A [`JsonClient`] for the bench's Elasticsearch.
pub fn http_json_client() -> JsonClient {
    JsonClient(
        elasticsearch::http::transport::Transport::single_node(&elasticsearch_url())
            .expect("transport"),
    )
}

impl JsonClient {
    /// POST `url` (a full URL of the bench's node) with an optional JSON body.
    pub async fn post(
        &self,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Option<serde_json::Value> {
        let path = url.strip_prefix(&elasticsearch_url()).unwrap_or(url);
        let headers = elasticsearch::http::headers::HeaderMap::new();
        let resp = self
            .0
            .send(
                elasticsearch::http::Method::Post,
                path,
                headers,
                None::<&()>,
                body.map(elasticsearch::http::request::JsonBody::new),
                None,
            )
            .await
            .ok()?;
        resp.json().await.ok()
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    const TEXT: &str = "# HELP es_sync_documents Records\n\
# TYPE es_sync_documents counter\n\
es_sync_documents_total{index=\"cards\",outcome=\"indexed\"} 30\n\
es_sync_documents_total{index=\"replies\",outcome=\"indexed\"} 12\n\
es_sync_consumer_paused 1\n\
es_sync_bulk_in_flight_sum 14.0\n\
es_sync_bulk_in_flight_count 5\n\
es_sync_bulk_in_flight_bucket{le=\"1.0\"} 1\n\
es_sync_documents_totally_else 99\n";

    #[test]
    fn families_are_summed_over_labels_and_never_by_prefix() {
        assert_eq!(metric_sum(TEXT, "es_sync_documents_total"), 42.0);
        assert_eq!(metric_sum(TEXT, "es_sync_consumer_paused"), 1.0);
        assert_eq!(metric_sum(TEXT, "es_sync_bulk_in_flight_sum"), 14.0);
        assert_eq!(metric_sum(TEXT, "es_sync_bulk_in_flight_count"), 5.0);
        assert_eq!(metric_sum(TEXT, "es_sync_missing").to_string(), "0");
    }

    #[test]
    fn a_label_filter_keeps_the_samples_with_those_labels() {
        let text = "mongo_source_stage_seconds_total{stream=\"d.card\",stage=\"read\"} 1.5\n\
mongo_source_stage_seconds_total{stream=\"d.reply\",stage=\"read\"} 0.5\n\
mongo_source_stage_seconds_total{stream=\"d.card\",stage=\"convert\"} 2\n\
mongo_source_stage_seconds_total 7\n";
        let f = "mongo_source_stage_seconds_total";
        assert_eq!(metric_sum(text, &format!("{f}{{stage=\"read\"}}")), 2.0);
        assert_eq!(
            metric_sum(text, &format!("{f}{{stream=\"d.card\",stage=\"convert\"}}")),
            2.0
        );
        assert_eq!(metric_sum(text, f), 11.0);
        assert_eq!(
            metric_sum(TEXT, "es_sync_documents_total{index=\"cards\"}"),
            30.0
        );
    }

    #[test]
    fn drained_only_with_nothing_buffered_and_no_lag_on_any_partition() {
        let text = |buffered: u32, lag0: u32, lag1: u32| {
            format!(
                "# TYPE es_sync_buffered_records gauge\nes_sync_buffered_records {buffered}\n\
                 # TYPE es_sync_consumer_lag_records gauge\n\
                 es_sync_consumer_lag_records{{topic=\"t\",partition=\"0\"}} {lag0}\n\
                 es_sync_consumer_lag_records{{topic=\"t\",partition=\"1\"}} {lag1}\n# EOF\n"
            )
        };
        assert!(es_sync_drained(&text(0, 0, 0)));
        assert!(!es_sync_drained(&text(3, 0, 0)), "records buffered");
        assert!(!es_sync_drained(&text(0, 0, 120)), "lag on one partition");
    }
}
