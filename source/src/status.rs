//! Live state of every stream, shared by the stream tasks (writers) and the
//! admin server (`/status`, `/readyz`, metrics gauges).

use crate::kafka::sink::Mode;
use crate::metrics::{Metrics, StreamLabel};
use serde_json::{json, Value};
use shared::state::StreamState;
use shared::wire::event::ClusterTime;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// State of one stream.
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// Event topic.
    pub topic: String,
    /// Wakes a failed stream for an immediate restart.
    pub restart: Notify,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Inner {
    state: Option<StreamState>,
    last_error: Option<String>,
    last_error_at: Option<f64>,
    mode: Option<Mode>,
    cluster_time: Option<ClusterTime>,
    committed_at: Option<f64>,
    caught_up: bool,
    events: u64,
    dead_lettered: u64,
    restarts: u64,
    snapshot: Option<(String, u64)>,
    limit: Option<usize>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl StreamStatus {
    /// A new stream in state STARTING.
    pub fn new(name: &str, topic: &str, metrics: Arc<Metrics>) -> Self {
        let s = Self {
            name: name.into(),
            topic: topic.into(),
            restart: Notify::new(),
            inner: Mutex::new(Inner::default()),
            metrics,
        };
        s.metrics.init_stream(name);
        s.set_state(StreamState::Starting);
        s
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn label(&self) -> StreamLabel {
        StreamLabel {
            stream: self.name.clone(),
        }
    }

    /// Current state.
    pub fn state(&self) -> StreamState {
        self.lock().state.unwrap_or(StreamState::Starting)
    }

    /// Sets the state (and the state gauge).
    pub fn set_state(&self, state: StreamState) {
        let mut i = self.lock();
        if i.state != Some(state) {
            tracing::info!(stream = %self.name, state = state.as_str(), "stream state");
        }
        i.state = Some(state);
        if state == StreamState::Running {
            i.snapshot = None;
        }
        drop(i);
        self.metrics.set_state(&self.name, state);
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Records an error (shown until the next success).
    pub fn set_error(&self, error: &str) {
        let mut i = self.lock();
        i.last_error = Some(error.to_string());
        i.last_error_at = Some(now_secs());
    }

    /// Records the delivery mode and the record limit in force.
    pub fn set_mode(&self, mode: Mode, limit: usize) {
        let mut i = self.lock();
        i.mode = Some(mode);
        i.limit = Some(limit);
        self.metrics
            .exactly_once
            .get_or_create(&self.label())
            .set(i64::from(mode == Mode::ExactlyOnce));
    }

    /// Records that the stream's task died (panicked): FAILED, the error,
    /// and `mongo_source_errors_total{reason="task_died"}`.
    pub fn died(&self, error: &str) {
        self.set_error(error);
        self.set_state(StreamState::Failed);
        self.metrics
            .errors
            .get_or_create(&crate::metrics::StreamReason {
                stream: self.name.clone(),
                reason: "task_died".into(),
            })
            .inc();
    }

    /// Counts a restart.
    pub fn restarted(&self) {
        self.lock().restarts += 1;
        self.metrics.restarts.get_or_create(&self.label()).inc();
    }

    /// Records a committed batch.
    pub fn committed(&self, events: u64, dead_lettered: u64, last: Option<ClusterTime>) {
        let mut i = self.lock();
        i.events += events;
        i.dead_lettered += dead_lettered;
        if last.is_some() {
            i.cluster_time = last;
            i.caught_up = false;
        }
        i.committed_at = Some(now_secs());
    }

    /// Records that the last poll found no new change.
    pub fn caught_up(&self) {
        self.lock().caught_up = true;
    }

    /// Records snapshot progress.
    pub fn snapshot_progress(&self, id: &str, copied: u64) {
        self.lock().snapshot = Some((id.to_string(), copied));
    }

    /// Lag in seconds: now minus the last committed event's cluster time;
    /// 0 when the stream is caught up.
    pub fn lag_seconds(&self) -> Option<f64> {
        let i = self.lock();
        if i.caught_up {
            return Some(0.0);
        }
        i.cluster_time
            .map(|ct| (now_secs() - f64::from(ct.t)).max(0.0))
    }

    /// Refreshes the time-based gauges.
    pub fn refresh_gauges(&self) {
        if let Some(lag) = self.lag_seconds() {
            self.metrics
                .lag_seconds
                .get_or_create(&self.label())
                .set(lag);
        }
        if let Some(at) = self.lock().committed_at {
            self.metrics
                .token_age_seconds
                .get_or_create(&self.label())
                .set(now_secs() - at);
        }
    }

    /// The short form shared with the other instances.
    pub fn summary(&self) -> Value {
        let lag = self.lag_seconds();
        let i = self.lock();
        json!({
            "stream": self.name,
            "state": i.state.unwrap_or(StreamState::Starting).as_str(),
            "lag_seconds": lag,
            "events": i.events,
            "last_error": i.last_error,
        })
    }

    /// The JSON shown on `/status`.
    pub fn to_json(&self) -> Value {
        let lag = self.lag_seconds();
        let i = self.lock();
        json!({
            "stream": self.name,
            "topic": self.topic,
            "state": i.state.unwrap_or(StreamState::Starting).as_str(),
            "delivery": i.mode,
            "record_limit_bytes": i.limit,
            "last_error": i.last_error,
            "last_error_at": i.last_error_at,
            "position": {
                "cluster_time": i.cluster_time,
                "committed_at": i.committed_at,
                "token_age_seconds": i.committed_at.map(|at| now_secs() - at),
            },
            "lag_seconds": lag,
            "events": i.events,
            "dead_lettered": i.dead_lettered,
            "restarts": i.restarts,
            "snapshot": i.snapshot.as_ref().map(|(id, n)| json!({"id": id, "copied": n})),
        })
    }
}

/// All streams of this process.
pub struct StatusBoard {
    /// Streams, sorted by name (index = lease partition).
    pub streams: Vec<Arc<StreamStatus>>,
    /// Whether MongoDB answered at start-up.
    pub mongo_connected: std::sync::atomic::AtomicBool,
    /// This instance's name in the cluster.
    pub instance: String,
    /// What every instance of the cluster reports (see [`ClusterView`]).
    pub members: Arc<dyn ClusterView>,
    /// The supervised tasks of the process that are down now.
    pub units: Arc<shared::supervise::UnitHealth>,
}

/// The cluster-wide part of `/status`, rendered by whoever collects the
/// other instances' reports (`cluster::members`). A trait, so that this
/// module (which the cluster code writes to) does not depend on it.
pub trait ClusterView: Send + Sync {
    /// `{"members": [...], "owners": {stream: instance}}`.
    fn to_json(&self) -> Value;
}

impl StatusBoard {
    /// Finds a stream by name.
    pub fn get(&self, name: &str) -> Option<&Arc<StreamStatus>> {
        self.streams.iter().find(|s| s.name == name)
    }
}

impl shared::admin::AdminState for StatusBoard {
    fn readiness(&self) -> (bool, Value) {
        let mongo = self
            .mongo_connected
            .load(std::sync::atomic::Ordering::Relaxed);
        let states: Vec<Value> = self
            .streams
            .iter()
            .map(|s| json!({"stream": s.name, "state": s.state().as_str()}))
            .collect();
        let down = self.units.down_units();
        let ready = mongo && down.is_empty() && self.streams.iter().all(|s| s.state().is_ready());
        (
            ready,
            json!({ "mongodb_connected": mongo, "streams": states, "tasks_down": down }),
        )
    }

    fn status(&self) -> Value {
        json!({
            "service": "mongo-source",
            "version": env!("CARGO_PKG_VERSION"),
            "instance": self.instance,
            "streams": self.streams.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
            "cluster": self.members.to_json(),
        })
    }
}
