//! Supervision of long-running tasks ("units"): a unit that panics, or
//! ends while it should still run, becomes one logged error, a non-ready
//! mark in [`UnitHealth`] (so `/readyz` answers 503 while it is down) and a
//! restart with backoff. Nothing is left running unwatched, and a dead unit
//! is never mistaken for a healthy one.
//!
//! Delivery guarantee: none of its own; a restarted unit starts from what
//! its owner committed (each binary's units are written so).

use crate::retry::RetryConfig;
use backoff::backoff::Backoff as _;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A life longer than this counts as healthy: the backoff starts afresh.
pub const HEALTHY_LIFE: Duration = Duration::from_secs(60);

/// The units of a process that are down now, with their last error.
#[derive(Default)]
pub struct UnitHealth {
    down: Mutex<BTreeMap<String, String>>,
}

impl UnitHealth {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `unit` down with `error`.
    pub fn down(&self, unit: &str, error: &str) {
        self.lock().insert(unit.to_string(), error.to_string());
    }

    /// Marks `unit` up again.
    pub fn up(&self, unit: &str) {
        self.lock().remove(unit);
    }

    /// The units down now and why.
    pub fn down_units(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }

    /// Whether every unit runs.
    pub fn all_up(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// Runs the unit `make()` (each life a task of its own) until `cancel`,
/// restarting it (after a backoff from `retry`, cancellable) whenever it
/// panics or ends before `cancel`. The unit should end soon after `cancel`
/// fires; this future ends when it has.
pub fn run<F, Fut>(
    unit: &str,
    health: Arc<UnitHealth>,
    retry: &RetryConfig,
    cancel: CancellationToken,
    mut make: F,
) -> impl Future<Output = ()> + Send + 'static
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let unit = unit.to_string();
    // Never give up: a unit of a long-running process is always restarted.
    let retry = RetryConfig {
        max_elapsed_ms: 0,
        ..retry.clone()
    };
    async move {
        let mut backoff = retry.backoff();
        loop {
            let began = Instant::now();
            let outcome = tokio::spawn(make()).await;
            if cancel.is_cancelled() {
                return;
            }
            let error = match outcome {
                Ok(()) => "ended while it should still run".to_string(),
                Err(e) if e.is_panic() => {
                    format!("panicked: {}", panic_message(e.into_panic().as_ref()))
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            };
            if began.elapsed() > HEALTHY_LIFE {
                backoff = retry.backoff();
            }
            let delay = backoff
                .next_backoff()
                .unwrap_or(Duration::from_millis(retry.max_ms));
            tracing::error!(unit = %unit, error = %error, ?delay, "task failed; restarting it");
            health.down(&unit, &error);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return,
            }
            tracing::info!(unit = %unit, "task restarted");
            health.up(&unit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryConfig {
        RetryConfig {
            initial_ms: 200,
            max_ms: 200,
            randomization: 0.0,
            ..RetryConfig::default()
        }
    }

    #[tokio::test]
    async fn a_panicking_unit_is_marked_down_and_restarted() {
        let health = Arc::new(UnitHealth::default());
        let cancel = CancellationToken::new();
        let lives = Arc::new(AtomicU32::new(0));
        let (l, c) = (lives.clone(), cancel.clone());
        let task = tokio::spawn(run(
            "worker",
            health.clone(),
            &fast(),
            cancel.clone(),
            move || {
                let (l, c) = (l.clone(), c.clone());
                async move {
                    if l.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("boom in the first life");
                    }
                    c.cancelled().await;
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let down = health.down_units();
        assert!(
            down["worker"].contains("panicked: boom in the first life"),
            "{down:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lives.load(Ordering::SeqCst), 2, "restarted once");
        assert!(health.all_up(), "up again after the restart");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the supervisor ends on cancel")
            .unwrap();
    }

    #[tokio::test]
    async fn a_unit_that_ends_early_is_restarted_and_cancel_stops_it() {
        let health = Arc::new(UnitHealth::default());
        let cancel = CancellationToken::new();
        let lives = Arc::new(AtomicU32::new(0));
        let l = lives.clone();
        let c = cancel.clone();
        let task = tokio::spawn(run(
            "ends",
            health.clone(),
            &fast(),
            cancel.clone(),
            move || {
                let (l, c) = (l.clone(), c.clone());
                async move {
                    if l.fetch_add(1, Ordering::SeqCst) == 0 {
                        return;
                    }
                    c.cancelled().await;
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(health.down_units()["ends"].contains("ended while it should still run"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lives.load(Ordering::SeqCst), 2);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(
            lives.load(Ordering::SeqCst),
            2,
            "not restarted after cancel"
        );
    }

    #[test]
    fn panic_messages() {
        let s: Box<dyn std::any::Any + Send> = Box::new("literal");
        assert_eq!(panic_message(s.as_ref()), "literal");
        let s: Box<dyn std::any::Any + Send> = Box::new(format!("n = {}", 3));
        assert_eq!(panic_message(s.as_ref()), "n = 3");
        let s: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert!(panic_message(s.as_ref()).contains("non-string"));
    }
}
