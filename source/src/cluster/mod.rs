//! Several instances, one owner per stream. [`lease`] decides which streams
//! this instance owns; this coordinator starts a stream's supervisor when
//! its lease arrives and stops it (batch in flight committed) when the
//! lease goes; [`members`] shares every instance's state for `/status`.
//!
//! Delivery guarantee: unchanged by ownership moves. A new owner resumes
//! from the last committed position, and its `init_transactions` fences the
//! previous owner, so a read_committed consumer still sees each change once.

pub mod lease;
pub mod members;

use crate::config::{SourceConfig, StreamSpec};
use crate::status::StatusBoard;
use crate::stream::{supervise, StreamCtx};
use lease::LeaseEvent;
use shared::shutdown::CancellationToken;
use shared::state::StreamState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Builds the context of a stream (given its spec and cancellation).
pub type MakeCtx = Box<dyn Fn(StreamSpec, CancellationToken) -> StreamCtx + Send + Sync>;

/// Longest wait for a revoked stream to commit and stop.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs the coordinator until `shutdown`; `specs` are sorted by name, the
/// lease of `specs[p]` is partition `p`.
pub async fn coordinate(
    cfg: Arc<SourceConfig>,
    instance: String,
    specs: Vec<StreamSpec>,
    board: Arc<StatusBoard>,
    make: MakeCtx,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    for s in &board.streams {
        s.set_state(StreamState::Standby);
    }
    let lease_cancel = CancellationToken::new();
    let (mut events, thread) = lease::join(&cfg, &instance, STOP_GRACE, lease_cancel.clone())?;
    tracing::info!(instance = %instance, group = %cfg.lease_group(), "joined the stream lease group");
    let mut running: HashMap<i32, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shutdown.cancelled() => None,
        };
        match event {
            Some(LeaseEvent::Assigned(parts)) => {
                for p in parts {
                    let Some(spec) = usize::try_from(p).ok().and_then(|i| specs.get(i)) else {
                        tracing::warn!(partition = p, "lease without a stream (configs differ?)");
                        continue;
                    };
                    if running.contains_key(&p) {
                        continue;
                    }
                    tracing::info!(stream = %spec.name, instance = %instance, "lease acquired: streaming");
                    let token = shutdown.child_token();
                    let ctx = make(spec.clone(), token.clone());
                    running.insert(p, (token, tokio::spawn(supervise(ctx))));
                }
            }
            Some(LeaseEvent::Revoked(parts, ack)) => {
                for p in parts {
                    if let Some((token, handle)) = running.remove(&p) {
                        token.cancel();
                        if tokio::time::timeout(STOP_GRACE, handle).await.is_err() {
                            tracing::warn!(partition = p, "stream did not stop in time");
                        }
                        if let Some(s) = usize::try_from(p).ok().and_then(|i| board.streams.get(i))
                        {
                            tracing::info!(stream = %s.name, "lease lost: standing by");
                            s.set_state(StreamState::Standby);
                        }
                    }
                }
                let _ = ack.send(());
            }
            None => break,
        }
    }
    // Shutdown: the streams (children of `shutdown`) commit and stop; then
    // the leases are given back.
    for (_, (_, handle)) in running.drain() {
        let _ = tokio::time::timeout(STOP_GRACE, handle).await;
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
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    drain.abort();
    Ok(())
}
