//! Retry policy: every failure is classified [`ErrorClass::Retryable`] or
//! [`ErrorClass::Fatal`]; retryable ones are retried with exponential
//! backoff and jitter (the `backoff` crate), fatal ones are returned at once.

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether trying again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: network, leader change, overload. Try again later.
    Retryable,
    /// Will fail the same way again: auth, invalid config, missing topic.
    Fatal,
}

/// An error that knows its class.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}

/// Backoff settings (`[retry]` in both configs).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay in milliseconds.
    pub initial_ms: u64,
    /// Longest delay in milliseconds.
    pub max_ms: u64,
    /// Factor between consecutive delays.
    pub multiplier: f64,
    /// Jitter: each delay is drawn from `delay * (1 ± randomization)`.
    pub randomization: f64,
    /// Give up after this long in milliseconds; 0 retries forever.
    pub max_elapsed_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        // 100 ms doubles to 30 s: quick on a blip, gentle on a long outage.
        Self {
            initial_ms: 100,
            max_ms: 30_000,
            multiplier: 2.0,
            randomization: 0.3,
            max_elapsed_ms: 0,
        }
    }
}

impl RetryConfig {
    /// Checks the values; `prefix` names the section in errors.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if self.initial_ms == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.initial_ms"),
                "must be > 0",
            ));
        }
        if self.max_ms < self.initial_ms {
            return Err(ConfigError::invalid(
                format!("{prefix}.max_ms"),
                "must be >= initial_ms",
            ));
        }
        if self.multiplier.is_nan() || self.multiplier < 1.0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.multiplier"),
                "must be >= 1.0",
            ));
        }
        if !(0.0..1.0).contains(&self.randomization) {
            return Err(ConfigError::invalid(
                format!("{prefix}.randomization"),
                "must be in [0, 1)",
            ));
        }
        Ok(())
    }

    /// A fresh backoff schedule.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            current_interval: Duration::from_millis(self.initial_ms),
            initial_interval: Duration::from_millis(self.initial_ms),
            randomization_factor: self.randomization,
            multiplier: self.multiplier,
            max_interval: Duration::from_millis(self.max_ms),
            max_elapsed_time: (self.max_elapsed_ms > 0)
                .then(|| Duration::from_millis(self.max_elapsed_ms)),
            ..ExponentialBackoff::default()
        }
    }
}

/// Why [`retry`] stopped without success.
#[derive(Debug)]
pub enum RetryError<E> {
    /// The error was fatal, or retries ran out (`max_elapsed_ms`).
    Failed(E),
    /// Shutdown was requested while waiting to retry.
    Cancelled,
}

/// Runs `op` until it succeeds, fails fatally, the policy gives up, or
/// `cancel` fires. `on_retry` is told about every retryable failure and the
/// delay before the next try (for logs and metrics).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryConfig,
    cancel: &CancellationToken,
    mut on_retry: impl FnMut(&E, Duration),
    mut op: F,
) -> Result<T, RetryError<E>>
where
    E: Classify,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut schedule = policy.backoff();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.class() == ErrorClass::Fatal => return Err(RetryError::Failed(e)),
            Err(e) => {
                let Some(delay) = schedule.next_backoff() else {
                    return Err(RetryError::Failed(e));
                };
                on_retry(&e, delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Err(RetryError::Cancelled),
                }
            }
        }
    }
}

/// Shutdown came before success ([`retry_forever`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Cancelled;

/// Runs `op` until it succeeds or `cancel` fires, whatever the error's
/// class and however long it takes (`max_elapsed_ms` does not apply): for
/// work that must not be given up, where every failure is a fault an
/// operator fixes (a closed index, a missing permission) and giving up
/// would lose data. `on_retry` sees each failure and the delay before the
/// next try, and says so on status and in metrics. `cancel` ends it at
/// once, also during an attempt (the attempt is dropped: work given up on
/// shutdown is redone by whoever takes it over).
pub async fn retry_forever<T, E, F, Fut>(
    policy: &RetryConfig,
    cancel: &CancellationToken,
    mut on_retry: impl FnMut(&E, Duration),
    mut op: F,
) -> Result<T, Cancelled>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let policy = RetryConfig {
        max_elapsed_ms: 0,
        ..policy.clone()
    };
    let mut schedule = policy.backoff();
    loop {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        // An attempt that hangs (a server frozen: the connection stays
        // open, nothing answers) is dropped when `cancel` fires, so it
        // never holds a shutdown past its grace.
        let attempt = tokio::select! {
            r = op() => r,
            () = cancel.cancelled() => return Err(Cancelled),
        };
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) => {
                let delay = schedule
                    .next_backoff()
                    .unwrap_or(Duration::from_millis(policy.max_ms));
                on_retry(&e, delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Err(Cancelled),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct E(ErrorClass);
    impl Classify for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
    }

    fn fast() -> RetryConfig {
        RetryConfig {
            initial_ms: 1,
            max_ms: 2,
            ..RetryConfig::default()
        }
    }

    #[tokio::test]
    async fn retries_retryable_until_success() {
        let calls = AtomicU32::new(0);
        let mut seen = 0;
        let out = retry(
            &fast(),
            &CancellationToken::new(),
            |_, _| seen += 1,
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(E(ErrorClass::Retryable))
                } else {
                    Ok(7)
                }
            },
        )
        .await;
        assert!(matches!(out, Ok(7)));
        assert_eq!(seen, 3);
    }

    #[tokio::test]
    async fn fatal_is_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = retry(
            &fast(),
            &CancellationToken::new(),
            |_, _| {},
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(ErrorClass::Fatal))
            },
        )
        .await;
        assert!(matches!(out, Err(RetryError::Failed(E(ErrorClass::Fatal)))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cancellation_stops_waiting() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let slow = RetryConfig {
            initial_ms: 60_000,
            max_ms: 60_000,
            ..RetryConfig::default()
        };
        let out: Result<(), _> = retry(
            &slow,
            &cancel,
            |_, _| {},
            || async { Err(E(ErrorClass::Retryable)) },
        )
        .await;
        assert!(matches!(out, Err(RetryError::Cancelled)));
    }

    #[test]
    fn validation_names_the_key() {
        let bad = RetryConfig {
            max_ms: 1,
            initial_ms: 5,
            ..RetryConfig::default()
        };
        assert!(bad
            .validate("retry")
            .unwrap_err()
            .to_string()
            .contains("retry.max_ms"));
    }

    #[tokio::test]
    async fn retry_forever_retries_fatal_errors_past_max_elapsed() {
        let calls = AtomicU32::new(0);
        let policy = RetryConfig {
            max_elapsed_ms: 1,
            ..fast()
        };
        let out = retry_forever(
            &policy,
            &CancellationToken::new(),
            |_: &E, _| {},
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                if n < 5 {
                    Err(E(ErrorClass::Fatal))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(out, Ok(5));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let out: Result<(), Cancelled> = retry_forever(
            &policy,
            &cancel,
            |_: &E, _| {},
            || async { Err(E(ErrorClass::Retryable)) },
        )
        .await;
        assert_eq!(out, Err(Cancelled));
    }

    /// Found by the chaos suite (FrozenEsSigterm): with Elasticsearch
    /// frozen, a roll-up read hung until its HTTP timeout and held es-sync's
    /// shutdown 23 s past its grace.
    #[tokio::test]
    async fn retry_forever_drops_an_attempt_that_hangs_when_cancelled() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let out: Result<(), Cancelled> = tokio::time::timeout(
            Duration::from_secs(5),
            retry_forever(
                &fast(),
                &cancel,
                |_: &E, _| {},
                std::future::pending::<Result<(), E>>,
            ),
        )
        .await
        .expect("returned when cancelled, without waiting for the attempt");
        assert_eq!(out, Err(Cancelled));
    }
}
