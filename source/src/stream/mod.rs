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
pub mod snapshot;
mod writer;

use crate::config::{HistoryLostPolicy, SourceConfig, StartMode, StreamSpec};
use crate::error::{Result, StreamError};
use crate::kafka::positions::{self, Position};
use crate::kafka::topics::Topics;
use crate::metrics::{Metrics, StreamLabel, StreamReason};
use crate::status::StreamStatus;
use mongodb::bson::{Bson, Timestamp};
use shared::event::ClusterTime;
use shared::retry::{Classify, ErrorClass};
use shared::shutdown::CancellationToken;
use shared::state::StreamState;
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

/// Runs the stream until shutdown, restarting it after failures: at once
/// after a retryable one (with backoff), and after a fatal one too (with
/// backoff, or sooner on an operator's restart request) since the cause
/// (credentials, a topic) may be fixed meanwhile. A fenced stream waits
/// for a restart request: another instance owns it.
pub async fn supervise(ctx: StreamCtx) {
    let mut backoff = ctx.cfg.retry.backoff();
    loop {
        let began = std::time::Instant::now();
        let outcome = run_once(&ctx).await;
        // A life that lasted resets the backoff: the next failure is new.
        if began.elapsed() > HEALTHY_LIFE {
            backoff = ctx.cfg.retry.backoff();
        }
        if ctx.cancel.is_cancelled() {
            ctx.status.set_state(StreamState::Stopped);
            return;
        }
        let Err(e) = outcome else {
            ctx.status.set_state(StreamState::Stopped);
            return;
        };
        let class = e.class();
        let class_name = if class == ErrorClass::Fatal {
            "fatal"
        } else {
            "retryable"
        };
        ctx.metrics
            .errors
            .get_or_create(&StreamReason {
                stream: ctx.spec.name.clone(),
                reason: class_name.into(),
            })
            .inc();
        ctx.status.set_error(&e.to_string());
        let delay = backoff::backoff::Backoff::next_backoff(&mut backoff)
            .unwrap_or(Duration::from_millis(ctx.cfg.retry.max_ms));
        let fenced = matches!(e, StreamError::Fenced(_));
        if class == ErrorClass::Fatal {
            ctx.status.set_state(StreamState::Failed);
            tracing::error!(stream = %ctx.spec.name, error = %e, class = class_name, ?delay, "stream failed");
        } else {
            ctx.status.set_state(StreamState::Retrying);
            tracing::warn!(stream = %ctx.spec.name, error = %e, class = class_name, ?delay, "stream error; retrying");
        }
        tokio::select! {
            () = ctx.cancel.cancelled() => {
                ctx.status.set_state(StreamState::Stopped);
                return;
            }
            () = ctx.status.restart.notified() => {
                tracing::info!(stream = %ctx.spec.name, "restart requested");
                backoff = ctx.cfg.retry.backoff();
            }
            () = tokio::time::sleep(delay), if !fenced => {}
        }
        ctx.status.restarted();
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
