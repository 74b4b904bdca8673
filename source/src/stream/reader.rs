//! Reading the change stream on a task of its own, ahead of the stream task
//! that converts and commits (issue 17, mongo-source point 1).
//!
//! The driver asks MongoDB for the next batch (`getMore`) only when its
//! buffer is empty, and only while something waits on the stream. Read on
//! the stream task, every `getMore` round trip (the server's time to find
//! the next events, plus the network) was time in which nothing was
//! converted, and every conversion was time in which nothing was asked. The
//! reader task keeps taking events off the driver into a bounded channel,
//! so the next `getMore` is in flight while the stream task converts the
//! events before it.
//!
//! Delivery: nothing changes. Each event is handed over with the resume
//! token the stream had right after it (the event's `_id`, or the server's
//! post-batch token once the batch is used up), so the position the stream
//! task commits is the one it had when reading in lockstep. Events read
//! ahead and not taken when the stream task stops are dropped with the
//! cursor; the next life reopens from the last committed position and reads
//! them again. Memory: at most `capacity` events wait in the channel (the
//! stream task passes one batch's worth, `batch.max_events`), besides the
//! driver's own batch.

use crate::error::{Result, StreamError};
use mongodb::bson::RawDocumentBuf;
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use std::future::Future;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the reader reads: an open change stream (a trait only so that the
/// task's rules are unit-tested on a scripted stream; the integration tests
/// run it on a real server).
pub trait Events: Send + 'static {
    /// The next event, `None` for an empty answer (one `getMore` at most).
    fn next_if_any(
        &mut self,
    ) -> impl Future<Output = std::result::Result<Option<RawDocumentBuf>, mongodb::error::Error>> + Send;
    /// The resume token after the last read.
    fn resume_token(&self) -> Option<ResumeToken>;
}

impl Events for ChangeStream<RawDocumentBuf> {
    fn next_if_any(
        &mut self,
    ) -> impl Future<Output = std::result::Result<Option<RawDocumentBuf>, mongodb::error::Error>> + Send
    {
        ChangeStream::next_if_any(self)
    }

    fn resume_token(&self) -> Option<ResumeToken> {
        ChangeStream::resume_token(self)
    }
}

/// One read of the stream, as the stream task would have seen it.
pub struct Read {
    /// An event, `None` for an answer without events (`getMore` returned an
    /// empty batch), or the error that ended the cursor (the last item).
    pub item: std::result::Result<Option<RawDocumentBuf>, mongodb::error::Error>,
    /// The stream's resume token right after this read.
    pub token: Option<ResumeToken>,
}

/// The reader task of one open change stream (its only owner). Dropping it
/// stops the task and closes the cursor.
pub struct Reader {
    rx: mpsc::Receiver<Read>,
    task: JoinHandle<()>,
}

impl Reader {
    /// Starts reading `stream`, at most `capacity` reads ahead.
    pub fn spawn(stream: impl Events, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(read_ahead(stream, tx));
        Self { rx, task }
    }

    /// The next read, in stream order. Cancel-safe (nothing is lost if this
    /// future is dropped). An error when the task ended without handing
    /// over its last read; a panic of the task is resumed here, so the
    /// stream's supervisor sees it as the stream task's own.
    pub async fn next(&mut self) -> Result<Read> {
        if let Some(read) = self.rx.recv().await {
            return Ok(read);
        }
        match (&mut self.task).await {
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StreamError::Internal(format!(
                "change stream reader stopped: {e}"
            ))),
            Ok(()) => Err(StreamError::Internal(
                "change stream reader ended without its last read".into(),
            )),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The task: one read after another until an error (handed over as the
/// last read) or until the stream task is gone.
async fn read_ahead(mut stream: impl Events, tx: mpsc::Sender<Read>) {
    loop {
        // Reserve first: a read is only taken off the driver when it can
        // be handed over, and the task stops when nobody listens.
        let Ok(slot) = tx.reserve().await else {
            return;
        };
        let item = stream.next_if_any().await;
        let last = item.is_err();
        slot.send(Read {
            item,
            token: stream.resume_token(),
        });
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A scripted stream: its reads in order, counting the calls; a
    /// `Some(Err)` step fails, a `None` step panics.
    struct Script {
        steps: std::vec::IntoIter<Option<std::result::Result<Option<i32>, ()>>>,
        calls: Arc<AtomicUsize>,
        last: Option<i32>,
        dropped: Arc<AtomicUsize>,
    }

    impl Drop for Script {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn token(n: i32) -> ResumeToken {
        let b = mongodb::bson::to_bson(&mongodb::bson::doc! {"_data": format!("t{n}")}).unwrap();
        mongodb::bson::from_bson(b).unwrap()
    }

    impl Events for Script {
        fn next_if_any(
            &mut self,
        ) -> impl Future<Output = std::result::Result<Option<RawDocumentBuf>, mongodb::error::Error>>
               + Send {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let step = self.steps.next();
            let out = match step {
                None => Ok(None),
                Some(None) => panic!("scripted panic"),
                Some(Some(Err(()))) => Err(mongodb::error::Error::custom("scripted failure")),
                Some(Some(Ok(Some(n)))) => {
                    self.last = Some(n);
                    Ok(Some(rawdoc! {"n": n}))
                }
                Some(Some(Ok(None))) => Ok(None),
            };
            async move { out }
        }

        fn resume_token(&self) -> Option<ResumeToken> {
            self.last.map(token)
        }
    }

    fn script(
        steps: Vec<Option<std::result::Result<Option<i32>, ()>>>,
    ) -> (Script, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let s = Script {
            steps: steps.into_iter(),
            calls: calls.clone(),
            last: None,
            dropped: dropped.clone(),
        };
        (s, calls, dropped)
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    fn n(read: &Read) -> Option<i32> {
        read.item.as_ref().ok()?.as_ref()?.get_i32("n").ok()
    }

    #[tokio::test]
    async fn reads_ahead_up_to_its_capacity_while_the_stream_task_is_busy() {
        let steps = (1..=10).map(|i| Some(Ok(Some(i)))).collect();
        let (s, calls, _) = script(steps);
        let mut r = Reader::spawn(s, 3);
        settle().await;
        // Nothing taken yet: three reads wait in the channel, no fourth.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let first = r.next().await.unwrap();
        assert_eq!(n(&first), Some(1));
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one taken, one more read");
    }

    #[tokio::test]
    async fn each_read_carries_the_token_after_it_in_stream_order() {
        let (s, _, _) = script(vec![Some(Ok(Some(1))), Some(Ok(None)), Some(Ok(Some(2)))]);
        let mut r = Reader::spawn(s, 8);
        let a = r.next().await.unwrap();
        let b = r.next().await.unwrap();
        let c = r.next().await.unwrap();
        assert_eq!((n(&a), n(&b), n(&c)), (Some(1), None, Some(2)));
        assert!(matches!(b.item, Ok(None)), "an empty answer is handed over");
        assert_eq!(a.token, Some(token(1)));
        assert_eq!(b.token, Some(token(1)), "an empty answer keeps the token");
        assert_eq!(c.token, Some(token(2)));
    }

    #[tokio::test]
    async fn an_error_is_the_last_read_and_then_the_reader_says_so() {
        let (s, calls, dropped) = script(vec![Some(Ok(Some(1))), Some(Err(())), Some(Ok(Some(2)))]);
        let mut r = Reader::spawn(s, 8);
        assert_eq!(n(&r.next().await.unwrap()), Some(1));
        let e = r.next().await.unwrap();
        assert!(e.item.is_err());
        assert_eq!(e.token, Some(token(1)), "the token before the failure");
        let after = r.next().await;
        assert!(matches!(after, Err(StreamError::Internal(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no read after the error");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the cursor is closed");
    }

    #[tokio::test]
    async fn dropping_the_reader_stops_the_task_and_closes_the_cursor() {
        let steps = (1..=100).map(|i| Some(Ok(Some(i)))).collect();
        let (s, _, dropped) = script(steps);
        let r = Reader::spawn(s, 2);
        settle().await;
        drop(r);
        settle().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panic_of_the_task_is_resumed_on_the_stream_task() {
        let (s, _, _) = script(vec![Some(Ok(Some(1))), None]);
        let mut r = Reader::spawn(s, 8);
        assert_eq!(n(&r.next().await.unwrap()), Some(1));
        let resumed = tokio::spawn(async move { r.next().await.map(|_| ()) }).await;
        let e = resumed.expect_err("the panic reaches the caller");
        assert!(e.is_panic());
    }
}
