//! The cluster view: every instance publishes its streams' state to the
//! members topic every `cluster.publish_interval_ms`, and reads everyone
//! else's, so `/status` of any instance shows the whole cluster (owner of
//! each stream, state, lag), as the Kafka Connect REST API does.

use crate::config::SourceConfig;
use crate::status::StatusBoard;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use shared::shutdown::CancellationToken;
use shared::state::StreamState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The latest report of every instance.
#[derive(Default)]
pub struct Members {
    reports: Mutex<BTreeMap<String, Value>>,
    stale_after_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Members {
    /// An empty view; a report older than `stale_after_ms` counts as gone.
    pub fn new(stale_after_ms: u64) -> Self {
        Self {
            reports: Mutex::new(BTreeMap::new()),
            stale_after_ms,
        }
    }

    fn record(&self, instance: String, report: Value) {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(instance, report);
    }

    /// `{"members": [...], "owners": {stream: instance}}`.
    pub fn to_json(&self) -> Value {
        let now = now_ms();
        let reports = self
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut owners = BTreeMap::new();
        let members: Vec<Value> = reports
            .iter()
            .map(|(id, r)| {
                let at = r["at_ms"].as_u64().unwrap_or(0);
                let alive = !r["left"].as_bool().unwrap_or(false)
                    && now.saturating_sub(at) <= self.stale_after_ms;
                if alive {
                    for s in r["streams"].as_array().into_iter().flatten() {
                        let state = s["state"].as_str().unwrap_or("");
                        if state != StreamState::Standby.as_str()
                            && state != StreamState::Stopped.as_str()
                        {
                            if let Some(name) = s["stream"].as_str() {
                                owners.insert(name.to_string(), json!(id));
                            }
                        }
                    }
                }
                json!({
                    "instance": id,
                    "alive": alive,
                    "admin": r["admin"],
                    "seen_ms_ago": now.saturating_sub(at),
                    "streams": r["streams"],
                })
            })
            .collect();
        json!({ "members": members, "owners": owners })
    }
}

/// Publishes this instance's report until `cancel`, then a last one saying
/// it left.
pub async fn publish(
    cfg: Arc<SourceConfig>,
    instance: String,
    board: Arc<StatusBoard>,
    cancel: CancellationToken,
) {
    let producer: FutureProducer = match crate::kafka::client_config(&cfg.kafka)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "5000")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the members producer");
            return;
        }
    };
    let topic = cfg.members_topic();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.cluster.publish_interval_ms));
    loop {
        let left = tokio::select! {
            _ = tick.tick() => false,
            () = cancel.cancelled() => true,
        };
        let report = json!({
            "instance": instance,
            "admin": cfg.admin.listen.to_string(),
            "at_ms": now_ms(),
            "left": left,
            "streams": board.streams.iter().map(|s| s.summary()).collect::<Vec<_>>(),
        });
        let payload = report.to_string();
        let record = FutureRecord::to(&topic).key(&instance).payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::debug!(error = %e, "cannot publish the member report");
        }
        if left {
            return;
        }
    }
}

/// Reads every instance's reports into `members` until `cancel`.
pub fn read(
    cfg: &SourceConfig,
    members: Arc<Members>,
    cancel: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, rdkafka::error::KafkaError> {
    let mut c = crate::kafka::client_config(&cfg.kafka);
    c.set("group.id", format!("{}.members-reader", cfg.lease_group()))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.members_topic(), 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    std::thread::Builder::new()
        .name("members".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                        continue;
                    };
                    if let Ok(report) = serde_json::from_slice::<Value>(v) {
                        members.record(String::from_utf8_lossy(k).into_owned(), report);
                    }
                }
            }
        })
        .map_err(|e| rdkafka::error::KafkaError::Subscription(e.to_string()))
}
