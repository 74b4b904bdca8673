//! One stream per configured collection: a supervisor ([`supervise`]) that
//! runs the stream, classifies its failures and restarts it with backoff,
//! around one life of the stream ([`run_once`]): load the stored position,
//! snapshot if needed, then follow the change stream.
//!
//! Delivery guarantee (transactional mode): every change is in Kafka exactly
//! once for a read_committed consumer. Each life starts from the position of
//! the last committed transaction, and anything after it (an aborted or
//! unfinished batch) is read again from MongoDB, so a crash at any point
//! loses nothing and the aborted copy is never visible.

mod changes;
pub mod large_event;
mod pipeline;
pub mod poison;
mod reader;
pub mod snapshot;
pub mod stages;
pub mod truncate;
mod writer;

use crate::config::{HistoryLostPolicy, SourceConfig, StartMode, StreamSpec};
use crate::error::{Result, StreamError};
use crate::kafka::positions::{self, Position};
use crate::kafka::topics::Topics;
use crate::metrics::{Metrics, StreamLabel, StreamReason};
use crate::status::StreamStatus;
use mongodb::bson::{Bson, Timestamp};
use shared::retry::{Classify, ErrorClass};
use shared::shutdown::CancellationToken;
use shared::state::StreamState;
use shared::wire::event::ClusterTime;
use std::sync::Arc;
use std::time::Duration;

pub use writer::Writer;

/// A stream life longer than this counts as healthy (backoff resets).
const HEALTHY_LIFE: Duration = Duration::from_secs(60);

/// What a stream needs.
pub struct StreamCtx {
    /// The stream.
    pub spec: StreamSpec,
    /// The whole configuration.
    pub cfg: Arc<SourceConfig>,
    /// MongoDB client.
    pub mongo: mongodb::Client,
    /// Kafka admin client (limits, partitions).
    pub topics: Arc<Topics>,
    /// Status of this stream.
    pub status: Arc<StreamStatus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Shutdown.
    pub cancel: CancellationToken,
}

impl StreamCtx {
    fn label(&self) -> StreamLabel {
        StreamLabel {
            stream: self.spec.name.clone(),
        }
    }

    fn collection(&self) -> mongodb::Collection<mongodb::bson::Document> {
        self.mongo
            .database(&self.spec.ns.db)
            .collection(&self.spec.ns.coll)
    }
}

/// How a stream's supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Its cancellation token fired (shutdown, or its lease went).
    Stopped,
    /// It was fenced twice within `cluster.fencing_cooldown_ms` by a
    /// producer outside the lease group while still holding its lease:
    /// the coordinator gives the lease up so another instance takes over.
    Fenced,
}

/// Runs the stream until its token fires, restarting it after failures:
/// at once after a retryable one (with backoff), and after a fatal one too
/// (with backoff, or sooner on an operator's restart request) since the
/// cause (credentials, a topic) may be fixed meanwhile.
///
/// Two failures mean the process was paused or another producer took the
/// stream's `transactional.id`; both first wait [`ClusterConfig::lease_check`]
/// (time the process ran), in which a lease that moved to another instance
/// is revoked, which stops this stream before it could fence the new owner:
///
/// - a timed-out transaction ([`StreamError::TransactionTimedOut`]) reopens
///   the producer at once and resumes from the last committed position;
/// - a fencing: the first reopens too (the fencer was a zombie that has
///   since stood down); a second within `cluster.fencing_cooldown_ms` ends
///   the supervisor with [`Exit::Fenced`], and the coordinator gives the
///   lease up.
///
/// [`ClusterConfig::lease_check`]: crate::config::ClusterConfig::lease_check
pub async fn supervise(ctx: StreamCtx) -> Exit {
    let mut backoff = ctx.cfg.retry.backoff();
    let cooldown = Duration::from_millis(ctx.cfg.cluster.fencing_cooldown_ms);
    let mut last_fenced: Option<std::time::Instant> = None;
    loop {
        let began = std::time::Instant::now();
        let outcome = run_once(&ctx).await;
        // A life that lasted resets the backoff: the next failure is new.
        if began.elapsed() > HEALTHY_LIFE {
            backoff = ctx.cfg.retry.backoff();
        }
        if ctx.cancel.is_cancelled() {
            ctx.status.set_state(StreamState::Stopped);
            return Exit::Stopped;
        }
        let Err(e) = outcome else {
            ctx.status.set_state(StreamState::Stopped);
            return Exit::Stopped;
        };
        let class = e.class();
        let class_name = match (&e, class) {
            (StreamError::TransactionTimedOut { .. }, _) => "transaction_timeout",
            (StreamError::Fenced(_), _) => "fenced",
            (_, ErrorClass::Fatal) => "fatal",
            (_, ErrorClass::Retryable) => "retryable",
        };
        ctx.metrics
            .errors
            .get_or_create(&StreamReason {
                stream: ctx.spec.name.clone(),
                reason: class_name.into(),
            })
            .inc();
        ctx.status.set_error(&e.to_string());
        let delay = match &e {
            StreamError::TransactionTimedOut { .. } | StreamError::Fenced(_) => {
                let fenced = matches!(e, StreamError::Fenced(_));
                let repeated = fenced && last_fenced.is_some_and(|t| t.elapsed() < cooldown);
                if fenced {
                    last_fenced = Some(std::time::Instant::now());
                }
                ctx.status.set_state(StreamState::Retrying);
                let wait = ctx.cfg.cluster.lease_check();
                tracing::warn!(stream = %ctx.spec.name, error = %e, class = class_name, ?wait, "transaction failed; checking the lease before reopening the producer");
                tokio::select! {
                    () = sleep_awake(wait) => {}
                    () = ctx.cancel.cancelled() => {
                        tracing::info!(stream = %ctx.spec.name, "the lease moved meanwhile: stopping");
                        ctx.status.set_state(StreamState::Stopped);
                        return Exit::Stopped;
                    }
                }
                if repeated {
                    tracing::error!(
                        stream = %ctx.spec.name, error = %e, ?cooldown,
                        "fenced again by a producer outside the lease group: giving the lease up"
                    );
                    ctx.status.set_error(&format!(
                        "{e}; fenced twice within cluster.fencing_cooldown_ms by a producer \
                         outside the lease group (same transactional.id): lease given up"
                    ));
                    return Exit::Fenced;
                }
                backoff = ctx.cfg.retry.backoff();
                Duration::ZERO
            }
            _ => {
                let delay = backoff::backoff::Backoff::next_backoff(&mut backoff)
                    .unwrap_or(Duration::from_millis(ctx.cfg.retry.max_ms));
                if class == ErrorClass::Fatal {
                    ctx.status.set_state(StreamState::Failed);
                    tracing::error!(stream = %ctx.spec.name, error = %e, class = class_name, ?delay, "stream failed");
                } else {
                    ctx.status.set_state(StreamState::Retrying);
                    tracing::warn!(stream = %ctx.spec.name, error = %e, class = class_name, ?delay, "stream error; retrying");
                }
                delay
            }
        };
        tokio::select! {
            () = ctx.cancel.cancelled() => {
                ctx.status.set_state(StreamState::Stopped);
                return Exit::Stopped;
            }
            () = ctx.status.restart.notified() => {
                tracing::info!(stream = %ctx.spec.name, "restart requested");
                backoff = ctx.cfg.retry.backoff();
            }
            () = tokio::time::sleep(delay) => {}
        }
        ctx.status.restarted();
    }
}

/// Sleeps until `d` of time passed in which this process ran: a step that
/// took far longer than asked (the process was stopped, e.g. SIGSTOP, or
/// starved) starts the count again. A timer alone would fire at once after
/// a long pause, before the lease heartbeats could report that the lease
/// moved.
pub async fn sleep_awake(d: Duration) {
    const STEP: Duration = Duration::from_millis(100);
    let mut awake = Duration::ZERO;
    while awake < d {
        let t = std::time::Instant::now();
        tokio::time::sleep(STEP).await;
        let took = t.elapsed();
        if took > STEP * 10 {
            awake = Duration::ZERO;
        } else {
            awake += took;
        }
    }
}

/// Where the change stream starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// From a stored resume token.
    Token {
        /// The token (Extended JSON).
        token: serde_json::Value,
        /// Use `startAfter` (the token is an invalidate event's).
        after_invalidate: bool,
    },
    /// From a cluster time (inclusive).
    At(ClusterTime),
    /// From now.
    Now,
}

/// One life of the stream.
pub async fn run_once(ctx: &StreamCtx) -> Result<()> {
    ctx.status.set_state(StreamState::Starting);
    let writer = Writer::connect(ctx).await?;
    let mut position = positions::load(
        &ctx.cfg.kafka,
        &ctx.cfg.topics.offsets_topic(),
        &ctx.spec.name,
    )
    .await?;
    loop {
        let start = match &position {
            None => match ctx.cfg.start.mode {
                StartMode::Snapshot => {
                    position = Some(snapshot::run(ctx, &writer, None).await?);
                    continue;
                }
                StartMode::Now => Start::Now,
                StartMode::Timestamp => Start::At(ClusterTime {
                    t: ctx.cfg.start.timestamp.unwrap_or(0),
                    i: 0,
                }),
            },
            Some(p) if p.snapshot.is_some() => {
                position = Some(snapshot::run(ctx, &writer, Some(p.clone())).await?);
                continue;
            }
            Some(p) => match (&p.token, p.start_at) {
                (Some(t), _) => Start::Token {
                    token: t.clone(),
                    after_invalidate: p.after_invalidate,
                },
                (None, Some(at)) => Start::At(at),
                (None, None) => Start::Now,
            },
        };
        match changes::follow(ctx, &writer, start, position.clone()).await {
            Ok(()) => return Ok(()),
            Err(StreamError::HistoryLost(msg)) => {
                ctx.metrics.history_lost.get_or_create(&ctx.label()).inc();
                tracing::error!(
                    stream = %ctx.spec.name, error = %msg,
                    policy = ?ctx.cfg.start.on_history_lost,
                    "resume point is no longer in the oplog"
                );
                ctx.status.set_error(&format!("history lost: {msg}"));
                if ctx.cfg.start.on_history_lost == HistoryLostPolicy::Fail {
                    return Err(StreamError::HistoryLost(msg));
                }
                let events = position.as_ref().map_or(0, |p| p.events);
                let mut fresh = snapshot::run(ctx, &writer, None).await?;
                fresh.events += events;
                position = Some(fresh);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The current cluster time, read through a causally consistent session.
pub(crate) async fn current_cluster_time(ctx: &StreamCtx) -> Result<Timestamp> {
    let mut session = ctx.mongo.start_session().await?;
    ctx.collection()
        .find_one(mongodb::bson::doc! {})
        .session(&mut session)
        .await?;
    if let Some(t) = session.operation_time() {
        return Ok(t);
    }
    let reply = ctx
        .mongo
        .database(&ctx.spec.ns.db)
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await?;
    if let Ok(t) = reply.get_timestamp("operationTime") {
        return Ok(t);
    }
    if let Some(Bson::Document(ct)) = reply.get("$clusterTime") {
        if let Ok(t) = ct.get_timestamp("clusterTime") {
            return Ok(t);
        }
    }
    Err(StreamError::Internal(
        "the server reports no cluster time (is it a replica set?)".into(),
    ))
}

/// A position as of now.
pub(crate) fn now_iso() -> String {
    mongodb::bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

/// Keeps `Position` importable from the stream modules.
pub(crate) type Pos = Position;
