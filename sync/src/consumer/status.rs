//! Status and health: partition states, lag and buffer published to
//! `/status` and the metrics every second, and the Elasticsearch and
//! Kafka reachability and watermark checks.

use super::{Loop, Report, Tp};
use crate::elastic;
use crate::metrics::PartitionLabels;
use crate::status::PartitionStatus;
use rdkafka::consumer::Consumer;
use shared::state::StreamState;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl Loop {
    pub(super) fn publish_status(&self) {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::with_capacity(self.parts.len());
        for ((topic, partition), p) in &self.parts {
            let labels = PartitionLabels {
                topic: topic.clone(),
                partition: *partition,
            };
            let lag = match (p.high_watermark, p.tracker.committable().or(p.stored)) {
                (Some(h), Some(c)) => Some((h - c).max(0)),
                _ => None,
            };
            if let Some(l) = lag {
                self.metrics.lag_records.get_or_create(&labels).set(l);
            }
            let lag_secs = p
                .outstanding
                .values()
                .next()
                .map_or(0, |(t, _)| now_secs.saturating_sub(*t) as i64);
            self.metrics
                .lag_seconds
                .get_or_create(&labels)
                .set(lag_secs);
            out.push(PartitionStatus {
                topic: topic.clone(),
                partition: *partition,
                state: if self.paused {
                    StreamState::Paused
                } else if p.waiting.is_some() {
                    StreamState::Retrying
                } else {
                    p.state
                },
                committable: p.tracker.committable(),
                high_watermark: p.high_watermark,
                lag_records: lag,
                outstanding: p.tracker.outstanding(),
                in_flight: p.busy,
                waiting: p.waiting.as_ref().map(ToString::to_string),
            });
        }
        for reason in ["index", "cleanup", "clock"] {
            let n = self
                .parts
                .values()
                .filter(|p| p.waiting.as_ref().is_some_and(|w| w.label() == reason))
                .count();
            self.metrics
                .waiting
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let (n, _) = self.buffered();
        self.status.set_partitions(out, n, self.paused);
    }

    pub(super) fn spawn_health_checks(&self) {
        let es = self.es.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let ok = elastic::ping(&es).await;
            status.set_elasticsearch_ok(ok);
        });
        let consumer = self.consumer.clone();
        let parts: Vec<Tp> = self.parts.keys().cloned().collect();
        let status = self.status.clone();
        let tx = self.tx.clone();
        let timeout = Duration::from_millis(self.cfg.kafka.operation_timeout_ms);
        tokio::task::spawn_blocking(move || {
            let ok = consumer.fetch_metadata(None, timeout).is_ok();
            status.set_kafka_ok(ok);
            if !ok {
                return;
            }
            let marks: Vec<(Tp, i64)> = parts
                .into_iter()
                .filter_map(|(t, p)| {
                    let (_, high) = consumer.fetch_watermarks(&t, p, timeout).ok()?;
                    Some(((t, p), high))
                })
                .collect();
            let _ = tx.send(Report::Watermarks(marks));
        });
    }
}
