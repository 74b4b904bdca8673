//! Reading from MongoDB while the previous batch commits to Kafka.
//!
//! A stream hands each batch's transaction to a [`Pending`] slot and goes on
//! reading; at most one commit is in flight, so at most two batches are in
//! memory, and transactions still commit one after another, in order.
//! Before handing over the next batch (and before the stream ends) the
//! previous commit is awaited, so a failed commit is always reported and
//! ends this life of the stream, whose next life starts again from the
//! position of the last committed transaction. Reading never waits on
//! Kafka's commit round trips, which took about a quarter of the time when
//! done in turn (issue 6).

use crate::error::Result;
use shared::shutdown::CancellationToken;
use std::future::Future;
use std::pin::Pin;

/// The commit of the previous batch, running while the next one is read.
pub type Pending<'a> = Option<Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>>;

/// Waits for the pending commit, if any, and empties the slot.
pub async fn settle(pending: &mut Pending<'_>) -> Result<()> {
    match pending.take() {
        Some(commit) => commit.await,
        None => Ok(()),
    }
}

/// Waits for the pending commit, then hands `commit` over: at most one in
/// flight.
pub async fn hand_over<'a>(
    pending: &mut Pending<'a>,
    commit: impl Future<Output = Result<()>> + Send + 'a,
) -> Result<()> {
    settle(pending).await?;
    *pending = Some(Box::pin(commit));
    Ok(())
}

/// Polls the pending commit in place: dropping this future (another branch
/// of a `select!` won) leaves the commit pending, not cancelled.
async fn poll_pending(pending: &mut Pending<'_>) -> Result<()> {
    match pending.as_mut() {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

/// Awaits `read` while driving the pending commit; `None` on shutdown.
/// `read` is never dropped half-way except on shutdown (a cursor's
/// `getMore` cut in the middle could lose its batch). A commit that fails
/// while reading is returned as the error.
pub async fn read<T>(
    read: impl Future<Output = T>,
    pending: &mut Pending<'_>,
    cancel: &CancellationToken,
) -> Result<Option<T>> {
    tokio::pin!(read);
    loop {
        let committed = tokio::select! {
            r = &mut read => return Ok(Some(r)),
            r = poll_pending(pending), if pending.is_some() => r,
            () = cancel.cancelled() => return Ok(None),
        };
        *pending = None;
        committed?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamError;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn reads_go_on_while_a_commit_is_in_flight() {
        let done = AtomicBool::new(false);
        let mut pending: Pending<'_> = None;
        let cancel = CancellationToken::new();
        hand_over(&mut pending, async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            done.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap();
        // A read that finishes first does not wait for, nor cancel, the commit.
        let r = read(async { 7 }, &mut pending, &cancel).await.unwrap();
        assert_eq!(r, Some(7));
        assert!(pending.is_some() && !done.load(Ordering::SeqCst));
        // A slow read drives the commit to completion meanwhile.
        let r = read(
            tokio::time::sleep(Duration::from_millis(400)),
            &mut pending,
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!(r, Some(()));
        assert!(pending.is_none() && done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_by_the_next_read() {
        let mut pending: Pending<'_> = None;
        let cancel = CancellationToken::new();
        hand_over(&mut pending, async {
            Err(StreamError::Internal("commit failed".into()))
        })
        .await
        .unwrap();
        let r = read(std::future::pending::<()>(), &mut pending, &cancel).await;
        assert!(matches!(r, Err(StreamError::Internal(m)) if m == "commit failed"));
    }

    #[tokio::test]
    async fn at_most_one_commit_in_flight() {
        let first_done = AtomicBool::new(false);
        let mut pending: Pending<'_> = None;
        hand_over(&mut pending, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            first_done.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap();
        hand_over(&mut pending, async { Ok(()) }).await.unwrap();
        assert!(
            first_done.load(Ordering::SeqCst),
            "the first finished before the second was handed over"
        );
        settle(&mut pending).await.unwrap();
        assert!(pending.is_none());
    }

    #[tokio::test]
    async fn shutdown_ends_the_read_and_keeps_the_commit() {
        let mut pending: Pending<'_> = None;
        let cancel = CancellationToken::new();
        hand_over(&mut pending, std::future::pending())
            .await
            .unwrap();
        cancel.cancel();
        let r = read(std::future::pending::<()>(), &mut pending, &cancel)
            .await
            .unwrap();
        assert_eq!(r, None);
        assert!(pending.is_some());
    }
}
