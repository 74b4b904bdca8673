//! The dead-letter topic (default `{prefix}.dlq.sync`).
//!
//! A dead-lettered record keeps the original key and value bytes unchanged
//! (so it can be produced back to its topic once fixed) and the original
//! headers; these headers are added:
//!
//! | header | value |
//! |---|---|
//! | `dlq.error.type` | machine-readable type: `not_json`, `unknown_operation`, `missing_id`, `bad_version`, `document_parsing_exception`, ... |
//! | `dlq.error.reason` | human-readable reason |
//! | `dlq.source.topic` | original topic |
//! | `dlq.source.partition` | original partition, decimal |
//! | `dlq.source.offset` | original offset, decimal |
//! | `dlq.source.timestamp` | original record timestamp (ms), when known |
//! | `dlq.index` | target index or alias, when known |
//! | `dlq.failed_at` | time of dead-lettering, ms since the epoch |
//!
//! Delivery guarantee: at-least-once. The producer is idempotent with
//! `acks=all`; a record counts as done only after the broker acknowledged
//! its dead-letter copy, so a crash before that delivers it again (and it
//! may be dead-lettered twice).

use crate::config::SyncConfig;
use crate::metrics::Metrics;
use backoff::backoff::Backoff as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use shared::retry::RetryConfig;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Header names (see the module documentation).
pub mod headers {
    /// Error type.
    pub const ERROR_TYPE: &str = "dlq.error.type";
    /// Error reason.
    pub const ERROR_REASON: &str = "dlq.error.reason";
    /// Source topic.
    pub const TOPIC: &str = "dlq.source.topic";
    /// Source partition.
    pub const PARTITION: &str = "dlq.source.partition";
    /// Source offset.
    pub const OFFSET: &str = "dlq.source.offset";
    /// Source timestamp.
    pub const TIMESTAMP: &str = "dlq.source.timestamp";
    /// Target index.
    pub const INDEX: &str = "dlq.index";
    /// Time of dead-lettering.
    pub const FAILED_AT: &str = "dlq.failed_at";
}

/// An owned copy of a consumed Kafka record.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
}

impl RawRecord {
    /// Approximate memory held, for the buffer bound.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len) + 64
    }
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqReason {
    /// Machine-readable type.
    pub error_type: String,
    /// Human-readable reason.
    pub reason: String,
    /// Target index, when known.
    pub index: Option<String>,
}

/// Writes dead-letter records.
#[derive(Clone)]
pub struct DlqWriter {
    producer: FutureProducer,
    topic: String,
    retry: RetryConfig,
    metrics: Metrics,
}

impl DlqWriter {
    /// A writer for the configured dead-letter topic (no I/O yet).
    pub fn new(cfg: &SyncConfig, metrics: Metrics) -> Result<Self, rdkafka::error::KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .set("message.timeout.ms", "30000");
        for (k, v) in cfg.kafka.client_properties() {
            cc.set(k, v);
        }
        Ok(Self {
            producer: cc.create()?,
            topic: cfg.dlq.topic_name(),
            retry: cfg.retry.clone(),
            metrics,
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `record` with `why`, retrying until acknowledged. Returns
    /// `false` only if `stop` fired first (the record is then not done).
    pub async fn send(
        &self,
        record: &RawRecord,
        why: &DlqReason,
        stop: &CancellationToken,
    ) -> bool {
        let mut schedule = self.retry.backoff();
        schedule.max_elapsed_time = None;
        loop {
            let headers = dlq_headers(record, why);
            let mut fr: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &record.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(p) = &record.payload {
                fr = fr.payload(p.as_slice());
            }
            let result = tokio::select! {
                r = self.producer.send(fr, Duration::from_secs(30)) => r,
                () = stop.cancelled() => return false,
            };
            match result {
                Ok(_) => {
                    tracing::warn!(
                        topic = %record.topic, partition = record.partition, offset = record.offset,
                        error_type = %why.error_type, reason = %why.reason, dlq = %self.topic,
                        "record dead-lettered"
                    );
                    return true;
                }
                Err((e, _)) => {
                    self.metrics.retry("dlq", 1);
                    let delay = schedule.next_backoff().unwrap_or(Duration::from_secs(30));
                    tracing::error!(error = %e, dlq = %self.topic, delay_ms = delay.as_millis() as u64, "cannot write to the dead-letter topic; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// The headers of the dead-letter copy of `record`.
pub fn dlq_headers(record: &RawRecord, why: &DlqReason) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(record.headers.len() + 8);
    for (k, v) in &record.headers {
        h = h.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let add = |h: OwnedHeaders, k: &str, v: String| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    };
    h = add(h, headers::ERROR_TYPE, why.error_type.clone());
    h = add(h, headers::ERROR_REASON, why.reason.clone());
    h = add(h, headers::TOPIC, record.topic.clone());
    h = add(h, headers::PARTITION, record.partition.to_string());
    h = add(h, headers::OFFSET, record.offset.to_string());
    if let Some(ts) = record.timestamp {
        h = add(h, headers::TIMESTAMP, ts.to_string());
    }
    if let Some(i) = &why.index {
        h = add(h, headers::INDEX, i.clone());
    }
    add(h, headers::FAILED_AT, now.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn headers_keep_the_original_and_add_the_reason() {
        let rec = RawRecord {
            topic: "live.mountain.card".into(),
            partition: 2,
            offset: 41,
            key: Some(b"k".to_vec()),
            payload: Some(b"garbage".to_vec()),
            headers: vec![("op".into(), Some(b"insert".to_vec()))],
            timestamp: Some(1_700_000_000_000),
        };
        let why = DlqReason {
            error_type: "not_json".into(),
            reason: "expected value".into(),
            index: None,
        };
        let h = dlq_headers(&rec, &why);
        let get = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        assert_eq!(get("op").as_deref(), Some("insert"));
        assert_eq!(get(headers::ERROR_TYPE).as_deref(), Some("not_json"));
        assert_eq!(
            get(headers::ERROR_REASON).as_deref(),
            Some("expected value")
        );
        assert_eq!(get(headers::TOPIC).as_deref(), Some("live.mountain.card"));
        assert_eq!(get(headers::PARTITION).as_deref(), Some("2"));
        assert_eq!(get(headers::OFFSET).as_deref(), Some("41"));
        assert_eq!(get(headers::TIMESTAMP).as_deref(), Some("1700000000000"));
        assert!(get(headers::INDEX).is_none());
        assert!(get(headers::FAILED_AT).is_some());
    }
}
