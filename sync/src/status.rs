//! What `/status` and `/readyz` show: per partition its state, offsets and
//! lag; Kafka and Elasticsearch reachability; per alias the text analysis of
//! its live index (nori, or the cjk fallback; see [`crate::analysis`]). The
//! consumer updates it about once a second, the bootstrap the analysis; the
//! admin server reads it.
//!
//! Ready means: Elasticsearch answered its last ping, Kafka answered its
//! last metadata request, the consumer runs, and no assigned partition is
//! FAILED.
//!
//! Delivery guarantee: none (observability only).

use crate::analysis::IndexAnalysis;
use serde::Serialize;
use shared::admin::AdminState;
use shared::state::StreamState;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// State of one assigned partition.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Life-cycle state.
    pub state: StreamState,
    /// Next offset to commit: everything before it is done (past the
    /// transaction markers of a partition that has done everything).
    pub committable: Option<i64>,
    /// Last known high watermark.
    pub high_watermark: Option<i64>,
    /// `high_watermark - committable`.
    pub lag_records: Option<i64>,
    /// Records received and not yet done.
    pub outstanding: usize,
    /// Whether a bulk request or cleanup of this partition is in flight.
    pub in_flight: bool,
    /// Why the partition waits instead of going on (a record ahead of the
    /// clocks, a snapshot cleanup that keeps failing), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    running: bool,
    paused: bool,
    elasticsearch_ok: bool,
    kafka_ok: bool,
    buffered_records: usize,
    partitions: BTreeMap<(String, i32), PartitionStatus>,
    indices: BTreeMap<String, IndexAnalysis>,
    group: String,
}

/// Shared status (see the module documentation).
#[derive(Debug, Default)]
pub struct SyncStatus {
    inner: Mutex<Inner>,
}

impl SyncStatus {
    /// An empty status for consumer group `group`.
    pub fn new(group: &str) -> Self {
        Self {
            inner: Mutex::new(Inner {
                group: group.to_string(),
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets whether the consumer loop runs.
    pub fn set_running(&self, running: bool) {
        self.lock().running = running;
    }

    /// Records the last Elasticsearch ping.
    pub fn set_elasticsearch_ok(&self, ok: bool) {
        self.lock().elasticsearch_ok = ok;
    }

    /// Records the last Kafka metadata answer.
    pub fn set_kafka_ok(&self, ok: bool) {
        self.lock().kafka_ok = ok;
    }

    /// Replaces the per-partition view.
    pub fn set_partitions(&self, parts: Vec<PartitionStatus>, buffered: usize, paused: bool) {
        let mut g = self.lock();
        g.partitions = parts
            .into_iter()
            .map(|p| ((p.topic.clone(), p.partition), p))
            .collect();
        g.buffered_records = buffered;
        g.paused = paused;
    }

    /// Records the analysis of one alias's live index (bootstrap).
    pub fn set_index_analysis(&self, a: IndexAnalysis) {
        self.lock().indices.insert(a.alias.clone(), a);
    }

    /// The per-partition view.
    pub fn partitions(&self) -> Vec<PartitionStatus> {
        self.lock().partitions.values().cloned().collect()
    }
}

impl AdminState for SyncStatus {
    fn readiness(&self) -> (bool, serde_json::Value) {
        let g = self.lock();
        let failed: Vec<String> = g
            .partitions
            .values()
            .filter(|p| p.state == StreamState::Failed)
            .map(|p| format!("{}/{}", p.topic, p.partition))
            .collect();
        let ready = g.running && g.elasticsearch_ok && g.kafka_ok && failed.is_empty();
        (
            ready,
            serde_json::json!({
                "consumer_running": g.running,
                "elasticsearch": g.elasticsearch_ok,
                "kafka": g.kafka_ok,
                "assigned_partitions": g.partitions.len(),
                "failed_partitions": failed,
            }),
        )
    }

    fn status(&self) -> serde_json::Value {
        let g = self.lock();
        serde_json::json!({
            "group": g.group,
            "running": g.running,
            "paused": g.paused,
            "buffered_records": g.buffered_records,
            "elasticsearch_ok": g.elasticsearch_ok,
            "kafka_ok": g.kafka_ok,
            "partitions": g.partitions.values().collect::<Vec<_>>(),
            "indices": g.indices.values().collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(state: StreamState) -> PartitionStatus {
        PartitionStatus {
            topic: "t".into(),
            partition: 0,
            state,
            committable: Some(5),
            high_watermark: Some(7),
            lag_records: Some(2),
            outstanding: 1,
            in_flight: false,
            waiting: None,
        }
    }

    #[test]
    fn ready_needs_both_servers_and_no_failed_partition() {
        let s = SyncStatus::new("g");
        assert!(!s.readiness().0);
        s.set_running(true);
        s.set_elasticsearch_ok(true);
        assert!(!s.readiness().0, "kafka not yet reachable");
        s.set_kafka_ok(true);
        assert!(s.readiness().0);
        s.set_partitions(vec![part(StreamState::Failed)], 1, false);
        let (ready, detail) = s.readiness();
        assert!(!ready);
        assert_eq!(detail["failed_partitions"][0], "t/0");
    }

    #[test]
    fn status_lists_the_analysis_of_each_alias() {
        let s = SyncStatus::new("g");
        s.set_index_analysis(IndexAnalysis {
            alias: "cards".into(),
            index: "cards-000001".into(),
            analysis: crate::analysis::AnalysisMode::CjkFallback,
            fallback_reason: Some("Unknown tokenizer type [nori_tokenizer]".into()),
            live_revision: Some(1),
            shipped_revision: Some(1),
            reindex_needed: true,
        });
        let v = s.status();
        assert_eq!(v["indices"][0]["alias"], "cards");
        assert_eq!(v["indices"][0]["analysis"], "cjk_fallback");
        assert_eq!(
            v["indices"][0]["fallback_reason"],
            "Unknown tokenizer type [nori_tokenizer]"
        );
        assert_eq!(v["indices"][0]["reindex_needed"], true);
    }

    #[test]
    fn status_lists_partitions() {
        let s = SyncStatus::new("g");
        s.set_partitions(vec![part(StreamState::Running)], 1, true);
        let v = s.status();
        assert_eq!(v["group"], "g");
        assert_eq!(v["paused"], true);
        assert_eq!(v["partitions"][0]["state"], "RUNNING");
        assert_eq!(v["partitions"][0]["lag_records"], 2);
    }
}
