//! The cluster view: every instance publishes its streams' state to the
//! members topic every `cluster.publish_interval_ms`, and reads everyone
//! else's, so `/status` of any instance shows the whole cluster (owner of
//! each stream, state, lag), as the Kafka Connect REST API does.

use crate::config::SourceConfig;
use crate::status::{ClusterView, StatusBoard};
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

/// How many stale periods a silent instance stays listed (as not alive)
/// before it is forgotten.
pub const FORGET_AFTER_STALE_PERIODS: u64 = 10;

/// The latest report of every instance that reported recently. Instances
/// come and go (the default instance id holds the process id, so every
/// restart is a new one): one silent for [`FORGET_AFTER_STALE_PERIODS`]
/// stale periods, or gone with a last report saying it left, is dropped,
/// so the map holds about the live instances, not every one ever seen.
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
        self.record_at(instance, report, now_ms());
    }

    /// Keeps `report` (unless already too old to show) and forgets
    /// the instances silent for too long as of `now`.
    fn record_at(&self, instance: String, report: Value, now: u64) {
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reports.insert(instance, report);
        let forget_after = self
            .stale_after_ms
            .saturating_mul(FORGET_AFTER_STALE_PERIODS);
        reports.retain(|_, r| {
            let age = now.saturating_sub(r["at_ms"].as_u64().unwrap_or(0));
            let left = r["left"].as_bool().unwrap_or(false);
            age <= forget_after && !(left && age > self.stale_after_ms)
        });
    }

    /// How many instances are listed.
    pub fn len(&self) -> usize {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no instance is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClusterView for Members {
    fn to_json(&self) -> Value {
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
    let topic = cfg.members_topic();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    std::thread::Builder::new()
        .name("members".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                // Supervised per report: a panic while reading one is
                // logged and the thread goes on with the next.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shared::faults::panic_point(|| format!("source.members.read:{topic}"));
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                        let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                            return;
                        };
                        if let Ok(report) = serde_json::from_slice::<Value>(v) {
                            members.record(String::from_utf8_lossy(k).into_owned(), report);
                        }
                    }
                }));
                if let Err(panic) = read {
                    tracing::error!(
                        error = shared::supervise::panic_message(panic.as_ref()),
                        "members reader panicked on a report; going on"
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .map_err(|e| rdkafka::error::KafkaError::Subscription(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at_ms: u64, left: bool) -> Value {
        json!({"instance": "x", "at_ms": at_ms, "left": left, "streams": []})
    }

    #[test]
    fn instances_silent_for_long_are_forgotten() {
        let members = Members::new(1_000);
        let now = now_ms();
        // A thousand restarts, one report each, a minute apart: only the
        // recent ones stay.
        for n in 0..1_000_u64 {
            let at = now - (1_000 - n) * 60_000;
            members.record_at(format!("host-{n}"), report(at, false), at);
        }
        members.record_at("live".into(), report(now, false), now);
        assert_eq!(members.len(), 1, "{}", members.to_json());
        // Silent for a while: listed, not alive.
        members.record_at("quiet".into(), report(now - 5_000, false), now);
        let view = members.to_json();
        let quiet = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["instance"] == "quiet")
            .expect("still listed");
        assert_eq!(quiet["alive"], false);
        // Silent for more than ten stale periods: forgotten.
        members.record_at("live".into(), report(now + 11_000, false), now + 11_000);
        assert_eq!(members.len(), 1);
    }

    #[test]
    fn an_instance_that_left_is_forgotten_after_one_stale_period() {
        let members = Members::new(1_000);
        members.record_at("gone".into(), report(10_000, true), 10_000);
        assert_eq!(members.len(), 1, "shown as left for a while");
        members.record_at("other".into(), report(11_500, false), 11_500);
        assert_eq!(members.len(), 1, "{}", members.to_json());
    }
}
