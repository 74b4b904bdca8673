//! Prometheus metrics of es-sync (served on `/metrics` by the admin
//! server). Every name starts with `es_sync_`.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `es_sync_documents_total` | `index`, `outcome` = indexed, deleted, conflicted, dead_lettered, skipped, skipped_no_base | final outcome of every record (`skipped_no_base`: an update that carries only what changed, for a document the index does not hold) |
//! | `es_sync_bulk_duration_seconds` | | latency of one bulk HTTP request |
//! | `es_sync_bulk_bytes` | | NDJSON bytes per bulk request |
//! | `es_sync_bulk_in_flight` | | bulk requests in flight when one starts, itself included (how many of `bulk.max_in_flight` are used) |
//! | `es_sync_retries_total` | `reason` (429, 5xx, transport, es_rejected_execution_exception, dlq, ...) | items (or DLQ writes) retried |
//! | `es_sync_consumer_lag_records` | `topic`, `partition` | high watermark minus the committable offset |
//! | `es_sync_consumer_lag_seconds` | `topic`, `partition` | now minus the event time of the oldest record not yet done (0 when caught up) |
//! | `es_sync_buffered_records` | | records received and not yet done |
//! | `es_sync_consumer_paused` | | 1 while consumption is paused for backpressure |
//! | `es_sync_snapshot_cleanups_total` | `index` | documents removed by re-snapshot cleanups |
//! | `es_sync_clock_holds_total` | | records held because their cluster time is ahead of this host's clock and of their Kafka timestamp |
//! | `es_sync_rollups_total` | | parents (cards) whose roll-up was written (recomputed and changed) |
//! | `es_sync_rollup_requests_total` | `request` = read_children, read_parents, search, write, flag, refresh, search_pending | the roll-up's own requests to Elasticsearch, beside the bulks of the records (its cost: `docs/benchmarks.md`) |
//! | `es_sync_task_panics_total` | | tasks (bulk requests, cleanups, dead-letter writes) that panicked; each restarts its partition |
//! | `es_sync_partitions_waiting` | `reason` = index, cleanup, clock, dlq | partitions waiting on a fault an operator fixes (a blocked, closed or missing index; a snapshot cleanup Elasticsearch refuses; a clock) |
//! | `es_sync_freshness_requests_total` | `index` | requests the freshness measurement sent (refresh statistics, and the refresh interval every 30 s) while documents of the alias waited; none while none do |
//! | `es_sync_freshness_seconds` | `index` | histogram: MongoDB commit of a change -> searchable (accepted by a bulk and past the next refresh of the index), see [`crate::freshness`] |
//! | `es_sync_dlq_records_total` | `form` = copy, pointer | records written to the dead-letter topic: the original copied whole, or a pointer to it (the copy was over the topic's `max.message.bytes`) |
//! | `es_sync_dlq_write_errors_total` | `fault` = missing_topic, not_authorized, unreachable, too_large, other | failed dead-letter writes (each is retried; the partition waits meanwhile) |
//! | `es_sync_dlq_unavailable` | | 1 while the dead-letter topic cannot be written (partitions with a record to dead-letter wait) |
//!
//! Delivery guarantee: none (observability only).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `es_sync_documents_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocLabels {
    /// Target index or alias.
    pub index: String,
    /// `indexed`, `deleted`, `conflicted`, `dead_lettered`, `skipped`.
    pub outcome: String,
}

/// Labels of the retry counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why it was retried.
    pub reason: String,
}

/// Labels of per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// Labels of `es_sync_dlq_records_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormLabels {
    /// `copy` or `pointer`.
    pub form: String,
}

/// Labels of `es_sync_dlq_write_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// `missing_topic`, `not_authorized`, `unreachable`, `too_large`, `other`.
    pub fault: String,
}

/// Labels of `es_sync_rollup_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `read_children`, `read_parents`, `search`, `write`, `flag`,
    /// `refresh`, `search_pending`.
    pub request: String,
}

/// Labels by index.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IndexLabels {
    /// Target index or alias.
    pub index: String,
}

/// All metrics, cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// Final outcome per record.
    pub documents: Family<DocLabels, Counter>,
    /// Bulk request latency.
    pub bulk_duration: Histogram,
    /// Bulk request size.
    pub bulk_bytes: Histogram,
    /// Requests in flight when a bulk starts (itself included).
    pub bulk_in_flight: Histogram,
    /// Retries by reason.
    pub retries: Family<ReasonLabels, Counter>,
    /// Lag in records.
    pub lag_records: Family<PartitionLabels, Gauge>,
    /// Lag in seconds.
    pub lag_seconds: Family<PartitionLabels, Gauge>,
    /// Buffered records.
    pub buffered: Gauge,
    /// Backpressure pause.
    pub paused: Gauge,
    /// Documents removed by snapshot cleanups.
    pub cleanups: Family<IndexLabels, Counter>,
    /// Records held for the clock.
    pub clock_holds: Counter,
    /// Partitions waiting on a fault, by reason.
    pub waiting: Family<ReasonLabels, Gauge>,
    /// Tasks that panicked.
    pub task_panics: Counter,
    /// Roll-ups written.
    pub rollups: Counter,
    /// The roll-up's own requests, by kind.
    pub rollup_requests: Family<RequestLabels, Counter>,
    /// MongoDB commit -> searchable, per alias.
    pub freshness_seconds: Family<IndexLabels, Histogram, fn() -> Histogram>,
    /// Requests of the freshness measurement, per alias.
    pub freshness_requests: Family<IndexLabels, Counter>,
    /// Items accepted by Elasticsearch, waiting to be found searchable.
    pub freshness: crate::freshness::Freshness,
    /// Dead-letter records written, by form.
    pub dlq_records: Family<FormLabels, Counter>,
    /// Failed dead-letter writes, by fault.
    pub dlq_write_errors: Family<FaultLabels, Counter>,
    /// 1 while the dead-letter topic cannot be written.
    pub dlq_unavailable: Gauge,
}

/// A histogram of `es_sync_freshness_seconds`.
fn freshness_histogram() -> Histogram {
    Histogram::new(crate::freshness::BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            documents: Family::default(),
            bulk_duration: Histogram::new(exponential_buckets(0.002, 2.0, 14)),
            bulk_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 10)),
            bulk_in_flight: Histogram::new(exponential_buckets(1.0, 2.0, 6)),
            retries: Family::default(),
            lag_records: Family::default(),
            lag_seconds: Family::default(),
            buffered: Gauge::default(),
            paused: Gauge::default(),
            cleanups: Family::default(),
            clock_holds: Counter::default(),
            waiting: Family::default(),
            task_panics: Counter::default(),
            rollups: Counter::default(),
            rollup_requests: Family::default(),
            freshness_seconds: Family::new_with_constructor(freshness_histogram),
            freshness_requests: Family::default(),
            freshness: crate::freshness::Freshness::default(),
            dlq_records: Family::default(),
            dlq_write_errors: Family::default(),
            dlq_unavailable: Gauge::default(),
        }
    }
}

impl Metrics {
    /// New metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("es_sync");
        r.register(
            "documents",
            "Records by final outcome and target index",
            m.documents.clone(),
        );
        r.register(
            "bulk_duration_seconds",
            "Latency of bulk requests",
            m.bulk_duration.clone(),
        );
        r.register(
            "bulk_bytes",
            "NDJSON bytes per bulk request",
            m.bulk_bytes.clone(),
        );
        r.register(
            "bulk_in_flight",
            "Bulk requests in flight when one starts, itself included",
            m.bulk_in_flight.clone(),
        );
        r.register(
            "retries",
            "Items or DLQ writes retried, by reason",
            m.retries.clone(),
        );
        r.register(
            "consumer_lag_records",
            "High watermark minus committable offset",
            m.lag_records.clone(),
        );
        r.register(
            "consumer_lag_seconds",
            "Age (event time) of the oldest record not yet done",
            m.lag_seconds.clone(),
        );
        r.register(
            "buffered_records",
            "Records received and not yet done",
            m.buffered.clone(),
        );
        r.register(
            "consumer_paused",
            "1 while consumption is paused (backpressure)",
            m.paused.clone(),
        );
        r.register(
            "snapshot_cleanups",
            "Documents removed by re-snapshot cleanups",
            m.cleanups.clone(),
        );
        r.register(
            "rollups",
            "Parents whose roll-up was recomputed and written",
            m.rollups.clone(),
        );
        r.register(
            "rollup_requests",
            "The roll-up's own requests to Elasticsearch, by kind",
            m.rollup_requests.clone(),
        );
        r.register(
            "task_panics",
            "Tasks that panicked (each restarts its partition)",
            m.task_panics.clone(),
        );
        r.register(
            "partitions_waiting",
            "Partitions waiting on a fault an operator fixes, by reason",
            m.waiting.clone(),
        );
        r.register(
            "freshness_requests",
            "Requests of the freshness measurement, per alias",
            m.freshness_requests.clone(),
        );
        r.register(
            "freshness_seconds",
            "MongoDB commit of a change to searchable (accepted and past the next refresh), per index",
            m.freshness_seconds.clone(),
        );
        r.register(
            "clock_holds",
            "Records held because their cluster time is ahead of the clocks",
            m.clock_holds.clone(),
        );
        r.register(
            "dlq_records",
            "Records written to the dead-letter topic, copied whole or as a pointer",
            m.dlq_records.clone(),
        );
        r.register(
            "dlq_write_errors",
            "Failed dead-letter writes (retried), by fault",
            m.dlq_write_errors.clone(),
        );
        r.register(
            "dlq_unavailable",
            "1 while the dead-letter topic cannot be written",
            m.dlq_unavailable.clone(),
        );
        m
    }

    /// Counts `n` records of `index` with `outcome`.
    pub fn count(&self, index: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.documents
                .get_or_create(&DocLabels {
                    index: index.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Counts one retry of `n` items for `reason`.
    pub fn retry(&self, reason: &str, n: u64) {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// The value of a documents counter (for tests and status).
    pub fn documents_count(&self, index: &str, outcome: &str) -> u64 {
        self.documents
            .get_or_create(&DocLabels {
                index: index.to_string(),
                outcome: outcome.to_string(),
            })
            .get()
    }

    /// Total retries over all reasons is not tracked; value for `reason`.
    pub fn retries_count(&self, reason: &str) -> u64 {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_their_labels() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        m.count("cards", "indexed", 3);
        m.count("cards", "conflicted", 0);
        m.retry("429", 2);
        m.bulk_duration.observe(0.01);
        m.lag_records
            .get_or_create(&PartitionLabels {
                topic: "t".into(),
                partition: 1,
            })
            .set(5);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"es_sync_documents_total{index="cards",outcome="indexed"} 3"#),
            "{out}"
        );
        assert!(
            !out.contains("conflicted"),
            "zero increments create no series"
        );
        assert!(
            out.contains(r#"es_sync_retries_total{reason="429"} 2"#),
            "{out}"
        );
        assert!(
            out.contains("es_sync_bulk_duration_seconds_count 1"),
            "{out}"
        );
        assert!(
            out.contains(r#"es_sync_consumer_lag_records{topic="t",partition="1"} 5"#),
            "{out}"
        );
        assert_eq!(m.documents_count("cards", "indexed"), 3);
        m.freshness_seconds
            .get_or_create(&IndexLabels {
                index: "cards".into(),
            })
            .observe(0.7);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for line in [
            r#"es_sync_freshness_seconds_bucket{le="0.5",index="cards"} 0"#,
            r#"es_sync_freshness_seconds_bucket{le="0.75",index="cards"} 1"#,
            r#"es_sync_freshness_seconds_count{index="cards"} 1"#,
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
