//! Several instances, one owner per stream. [`lease`] decides which streams
//! this instance owns; this coordinator starts a stream's supervisor when
//! its lease arrives and stops it (batch in flight committed) when the
//! lease goes; [`members`] shares every instance's state for `/status`.
//!
//! The coordinator also supervises the stream tasks: a stream task that
//! panics (or ends while its lease is held) is logged as an error, shown
//! FAILED (so `/readyz` answers 503) and started again after a backoff; a
//! stream is never left dead while this instance holds its lease. A stream
//! fenced repeatedly by a producer outside the lease group makes this
//! instance give its leases up: it leaves the group for
//! `cluster.fencing_cooldown_ms` (the other instances take the streams
//! over), then joins again. If the lease thread dies, the streams are
//! stopped and the group is joined again.
//!
//! Delivery guarantee: unchanged by ownership moves. A new owner resumes
//! from the last committed position, and its `init_transactions` fences the
//! previous owner, so a read_committed consumer still sees each change once.

pub mod lease;
pub mod members;

use crate::config::{SourceConfig, StreamSpec};
use crate::status::StatusBoard;
use crate::stream::{supervise, Exit, StreamCtx};
use backoff::backoff::Backoff as _;
use lease::LeaseEvent;
use shared::shutdown::CancellationToken;
use shared::state::StreamState;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinHandle};

/// Builds the context of a stream (given its spec and cancellation).
pub type MakeCtx = dyn Fn(StreamSpec, CancellationToken) -> StreamCtx + Send + Sync;

/// Longest wait for a revoked stream to commit and stop.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// A stream task that ran this long counts as healthy: its restart
/// backoff starts afresh.
const HEALTHY_LIFE: Duration = Duration::from_secs(60);

/// Runs the coordinator until `shutdown`; `specs` are sorted by name, the
/// lease of `specs[p]` is partition `p`.
pub async fn coordinate(
    cfg: Arc<SourceConfig>,
    instance: String,
    specs: Vec<StreamSpec>,
    board: Arc<StatusBoard>,
    make: Arc<MakeCtx>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let coordinator = Coordinator {
        cfg,
        instance,
        specs,
        board,
        make,
        shutdown,
    };
    let mut rejoin = coordinator.cfg.retry.backoff();
    loop {
        for s in &coordinator.board.streams {
            s.set_state(StreamState::Standby);
        }
        let delay = match coordinator.membership().await? {
            Leave::Shutdown => return Ok(()),
            Leave::GiveUp => {
                let cooldown = Duration::from_millis(coordinator.cfg.cluster.fencing_cooldown_ms);
                tracing::error!(instance = %coordinator.instance, ?cooldown, "left the lease group after repeated fencing; joining again after the cool-down");
                cooldown
            }
            Leave::LeaseThreadEnded => {
                let delay = rejoin.next_backoff().unwrap_or(Duration::from_secs(30));
                tracing::error!(instance = %coordinator.instance, ?delay, "the lease thread ended: streams stopped, joining the group again");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = coordinator.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Why this instance left the lease group.
enum Leave {
    Shutdown,
    /// A stream was fenced repeatedly: give every lease up for a while.
    GiveUp,
    /// The lease thread ended (it panicked): join again.
    LeaseThreadEnded,
}

struct Coordinator {
    cfg: Arc<SourceConfig>,
    instance: String,
    specs: Vec<StreamSpec>,
    board: Arc<StatusBoard>,
    make: Arc<MakeCtx>,
    shutdown: CancellationToken,
}

/// A running stream task.
struct Running {
    token: CancellationToken,
    handle: JoinHandle<Exit>,
    started: Instant,
}

impl Coordinator {
    /// One membership of the lease group: streams start and stop with
    /// their leases until shutdown, a give-up, or the lease thread's end;
    /// then every stream is stopped and the group left.
    async fn membership(&self) -> anyhow::Result<Leave> {
        // Not a child of `shutdown`: on shutdown the leases are given back
        // only after the streams stopped. The guard leaves the group if this
        // future is dropped half-way (the coordinator panicked).
        let lease_cancel = CancellationToken::new();
        let _leave_if_dropped = lease_cancel.clone().drop_guard();
        let (mut events, thread) =
            lease::join(&self.cfg, &self.instance, STOP_GRACE, lease_cancel.clone())?;
        tracing::info!(instance = %self.instance, group = %self.cfg.lease_group(), "joined the stream lease group");
        let mut running: HashMap<i32, Running> = HashMap::new();
        let mut backoffs: HashMap<i32, backoff::ExponentialBackoff> = HashMap::new();
        let leave = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(LeaseEvent::Assigned(parts)) => {
                        for p in parts {
                            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(p) {
                                if let Some(r) = self.start(p, Duration::ZERO) {
                                    slot.insert(r);
                                }
                            }
                        }
                    }
                    Some(LeaseEvent::Revoked(parts, ack)) => {
                        for p in parts {
                            if let Some(r) = running.remove(&p) {
                                self.stop(p, r, StreamState::Standby).await;
                            }
                        }
                        let _ = ack.send(());
                    }
                    None => break Leave::LeaseThreadEnded,
                },
                (p, outcome) = next_exit(&mut running), if !running.is_empty() => {
                    let Some(r) = running.remove(&p) else { continue };
                    match ended(p, &r, outcome) {
                        Ended::Stopped => {}
                        Ended::GiveUp => {
                            if let Some(s) = self.status(p) {
                                tracing::warn!(stream = %s.name, "lease given up: standing by");
                                s.set_state(StreamState::Standby);
                            }
                            break Leave::GiveUp;
                        }
                        Ended::Died(error) => {
                            let backoff = backoffs
                                .entry(p)
                                .or_insert_with(|| self.cfg.retry.backoff());
                            if r.started.elapsed() > HEALTHY_LIFE {
                                *backoff = self.cfg.retry.backoff();
                            }
                            let delay = backoff
                                .next_backoff()
                                .unwrap_or(Duration::from_millis(self.cfg.retry.max_ms));
                            if let Some(s) = self.status(p) {
                                tracing::error!(stream = %s.name, error = %error, ?delay, "stream task died; restarting it");
                                s.died(&error);
                            }
                            if let Some(r) = self.start(p, delay) {
                                running.insert(p, r);
                            }
                        }
                    }
                }
                () = self.shutdown.cancelled() => break Leave::Shutdown,
            }
        };
        // The streams stop (batch in flight committed), then the leases are
        // given back.
        let after = match leave {
            Leave::Shutdown => StreamState::Stopped,
            _ => StreamState::Standby,
        };
        for (p, r) in running.drain() {
            self.stop(p, r, after).await;
        }
        lease_cancel.cancel();
        // Answer revocations issued while leaving, then let the thread end.
        let drain = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let LeaseEvent::Revoked(_, ack) = e {
                    let _ = ack.send(());
                }
            }
        });
        if let Ok(Err(panic)) = tokio::task::spawn_blocking(move || thread.join()).await {
            tracing::error!(
                error = shared::supervise::panic_message(panic.as_ref()),
                "the lease thread panicked"
            );
        }
        drain.abort();
        Ok(leave)
    }

    /// Starts the stream of lease `p` after `delay` (0: at once).
    fn start(&self, p: i32, delay: Duration) -> Option<Running> {
        let Some(spec) = usize::try_from(p).ok().and_then(|i| self.specs.get(i)) else {
            tracing::warn!(partition = p, "lease without a stream (configs differ?)");
            return None;
        };
        if delay.is_zero() {
            tracing::info!(stream = %spec.name, instance = %self.instance, "lease acquired: streaming");
        }
        let token = self.shutdown.child_token();
        let ctx = (self.make)(spec.clone(), token.clone());
        let handle = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.cancel.cancelled() => {
                        ctx.status.set_state(StreamState::Stopped);
                        return Exit::Stopped;
                    }
                }
                ctx.status.restarted();
            }
            supervise(ctx).await
        });
        Some(Running {
            token,
            handle,
            started: Instant::now(),
        })
    }

    /// Stops the stream of lease `p` (its batch in flight committed) and
    /// shows it in state `after`.
    async fn stop(&self, p: i32, r: Running, after: StreamState) {
        r.token.cancel();
        match tokio::time::timeout(STOP_GRACE, r.handle).await {
            Err(_) => tracing::warn!(partition = p, "stream did not stop in time"),
            Ok(Err(e)) if e.is_panic() => tracing::error!(
                partition = p,
                error = shared::supervise::panic_message(e.into_panic().as_ref()),
                "stream task panicked while stopping"
            ),
            Ok(_) => {}
        }
        if let Some(s) = self.status(p) {
            if after == StreamState::Standby {
                tracing::info!(stream = %s.name, "lease lost: standing by");
            }
            s.set_state(after);
        }
    }

    fn status(&self, p: i32) -> Option<&Arc<crate::status::StreamStatus>> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.board.streams.get(i))
    }
}

/// What the end of a stream task means.
enum Ended {
    /// Stopped on request (its token fired).
    Stopped,
    /// Fenced repeatedly: give the leases up.
    GiveUp,
    /// It died (panicked, or ended on its own): restart it.
    Died(String),
}

fn ended(p: i32, r: &Running, outcome: Result<Exit, JoinError>) -> Ended {
    match outcome {
        Ok(Exit::Fenced) => Ended::GiveUp,
        Ok(Exit::Stopped) if r.token.is_cancelled() => Ended::Stopped,
        Ok(Exit::Stopped) => Ended::Died("stream task ended while its lease is held".into()),
        Err(e) if e.is_panic() => Ended::Died(format!(
            "stream task panicked: {}",
            shared::supervise::panic_message(e.into_panic().as_ref())
        )),
        Err(e) => Ended::Died(format!("stream task of lease {p} cancelled: {e}")),
    }
}

/// The next stream task to end (the caller removes it from `running`
/// before polling again).
fn next_exit(
    running: &mut HashMap<i32, Running>,
) -> impl Future<Output = (i32, Result<Exit, JoinError>)> + '_ {
    std::future::poll_fn(move |cx| {
        for (p, r) in running.iter_mut() {
            if let Poll::Ready(outcome) = Pin::new(&mut r.handle).poll(cx) {
                return Poll::Ready((*p, outcome));
            }
        }
        Poll::Pending
    })
}
