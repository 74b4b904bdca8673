//! Prometheus metrics of `mongo-source` (all prefixed `mongo_source_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use shared::state::StreamState;
use std::sync::atomic::AtomicU64;

/// Labels naming a stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// `db.collection`.
    pub stream: String,
}

/// Labels naming a stream and an operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamOp {
    /// `db.collection`.
    pub stream: String,
    /// `insert`, `update`, ...
    pub op: String,
}

/// Labels naming a stream and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamReason {
    /// `db.collection`.
    pub stream: String,
    /// Machine-readable reason.
    pub reason: String,
}

/// Labels naming a stream and a state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamStateLabel {
    /// `db.collection`.
    pub stream: String,
    /// `RUNNING`, `FAILED`, ...
    pub state: String,
}

/// Labels naming a stream and a stage of its task
/// ([`crate::stream::stages`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamStage {
    /// `db.collection`.
    pub stream: String,
    /// `read`, `commit_wait`, `convert`.
    pub stage: String,
}

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

/// All metrics.
pub struct Metrics {
    /// Change events committed to Kafka.
    pub events: Family<StreamOp, Counter>,
    /// Events per committed batch.
    pub batch_events: Family<StreamLabel, Histogram>,
    /// Time to write and commit one batch.
    pub produce_seconds: Family<StreamLabel, Histogram>,
    /// Wall time of a stream's task by stage ([`crate::stream::stages`]).
    pub stage_seconds: Family<StreamStage, FCounter>,
    /// Now minus the cluster time of the last committed event (0 when idle).
    pub lag_seconds: Family<StreamLabel, FGauge>,
    /// Time since the stream's position was last committed.
    pub token_age_seconds: Family<StreamLabel, FGauge>,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: Family<StreamReason, Counter>,
    /// Records over the size limit.
    pub oversized: Family<StreamLabel, Counter>,
    /// Changes whose version had to be clamped (increment or transaction
    /// rank past the version layout).
    pub versions_clamped: Family<StreamLabel, Counter>,
    /// Change events written through the event tree instead of straight
    /// from their BSON (`shared::wire::change_stream::raw`): the same
    /// records, at a higher cost.
    pub tree_path: Family<StreamLabel, Counter>,
    /// Stream restarts after a failure.
    pub restarts: Family<StreamLabel, Counter>,
    /// Resume points lost from the oplog.
    pub history_lost: Family<StreamLabel, Counter>,
    /// Documents copied by snapshots.
    pub snapshot_documents: Family<StreamLabel, Counter>,
    /// Errors by class (`retryable` / `fatal`).
    pub errors: Family<StreamReason, Counter>,
    /// 1 for the stream's current state, 0 for the others.
    pub stream_state: Family<StreamStateLabel, Gauge>,
    /// 1 when the stream writes with Kafka transactions, 0 at-least-once.
    pub exactly_once: Family<StreamLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            events: Family::default(),
            batch_events: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 4.0, 8))
            }),
            produce_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            stage_seconds: Family::default(),
            lag_seconds: Family::default(),
            token_age_seconds: Family::default(),
            dead_lettered: Family::default(),
            oversized: Family::default(),
            versions_clamped: Family::default(),
            tree_path: Family::default(),
            restarts: Family::default(),
            history_lost: Family::default(),
            snapshot_documents: Family::default(),
            errors: Family::default(),
            stream_state: Family::default(),
            exactly_once: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("mongo_source");
        r.register(
            "events",
            "Change events committed to Kafka",
            m.events.clone(),
        );
        r.register(
            "batch_events",
            "Events per committed Kafka transaction",
            m.batch_events.clone(),
        );
        r.register_with_unit(
            "produce",
            "Time to write and commit one batch",
            prometheus_client::registry::Unit::Seconds,
            m.produce_seconds.clone(),
        );
        r.register_with_unit(
            "stage",
            "Wall time of a stream's task following the change stream, by stage: read (waiting for MongoDB), commit_wait (for the previous Kafka commit), convert (own work)",
            prometheus_client::registry::Unit::Seconds,
            m.stage_seconds.clone(),
        );
        r.register_with_unit(
            "lag",
            "Now minus the cluster time of the last committed event (0 when caught up)",
            prometheus_client::registry::Unit::Seconds,
            m.lag_seconds.clone(),
        );
        r.register_with_unit(
            "token_age",
            "Time since the stream's resume position was last committed",
            prometheus_client::registry::Unit::Seconds,
            m.token_age_seconds.clone(),
        );
        r.register(
            "dead_lettered",
            "Records sent to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        r.register(
            "tree_path_events",
            "Change events written through a document tree instead of straight from their BSON (a string not UTF-8, a field name twice, a split or skipped large event): the same records, slower",
            m.tree_path.clone(),
        );
        r.register(
            "oversized_records",
            "Records over the Kafka size limit",
            m.oversized.clone(),
        );
        r.register(
            "versions_clamped",
            "Changes whose version was clamped (increment or transaction rank past the version layout)",
            m.versions_clamped.clone(),
        );
        r.register(
            "stream_restarts",
            "Stream restarts after a failure",
            m.restarts.clone(),
        );
        r.register(
            "history_lost",
            "Resume points lost from the oplog",
            m.history_lost.clone(),
        );
        r.register(
            "snapshot_documents",
            "Documents copied by snapshots",
            m.snapshot_documents.clone(),
        );
        r.register("errors", "Stream errors by class", m.errors.clone());
        r.register(
            "stream_state",
            "1 for the current state of each stream",
            m.stream_state.clone(),
        );
        r.register(
            "exactly_once",
            "1 when the stream writes with Kafka transactions",
            m.exactly_once.clone(),
        );
        m
    }

    /// Creates every series of `stream` at zero, so dashboards and alerts
    /// (`increase(...)`) see them before the first event of their kind.
    pub fn init_stream(&self, stream: &str) {
        let label = StreamLabel {
            stream: stream.into(),
        };
        let reason = |r: &str| StreamReason {
            stream: stream.into(),
            reason: r.into(),
        };
        let _ = self
            .dead_lettered
            .get_or_create(&reason("record_too_large"));
        let _ = self.errors.get_or_create(&reason("retryable"));
        let _ = self.errors.get_or_create(&reason("fatal"));
        let _ = self.oversized.get_or_create(&label);
        let _ = self.versions_clamped.get_or_create(&label);
        let _ = self.restarts.get_or_create(&label);
        let _ = self.history_lost.get_or_create(&label);
        let _ = self.snapshot_documents.get_or_create(&label);
        for stage in crate::stream::stages::Stage::ALL {
            let _ = self.stage_seconds.get_or_create(&StreamStage {
                stream: stream.into(),
                stage: stage.as_str().into(),
            });
        }
    }

    /// Adds the time of each stage of `stream`'s task.
    pub fn add_stages(
        &self,
        stream: &str,
        times: &[(crate::stream::stages::Stage, std::time::Duration)],
    ) {
        for (stage, d) in times {
            self.stage_seconds
                .get_or_create(&StreamStage {
                    stream: stream.into(),
                    stage: stage.as_str().into(),
                })
                .inc_by(d.as_secs_f64());
        }
    }

    /// Sets the state gauge of `stream`.
    pub fn set_state(&self, stream: &str, state: StreamState) {
        for s in StreamState::ALL {
            self.stream_state
                .get_or_create(&StreamStateLabel {
                    stream: stream.into(),
                    state: s.as_str().into(),
                })
                .set(i64::from(s == state));
        }
    }
}
