//! Start-up check of the Kafka connection settings of both binaries: one
//! metadata request with the configured librdkafka properties, telling a
//! broker that is not there yet (retryable: the binaries may start before
//! Kafka) from settings that can never work (fatal): a refused SASL
//! login and a failed TLS handshake (unknown CA, wrong host name, TLS on a
//! plain listener).
//!
//! librdkafka reports both only to the client's error callback, and keeps
//! reconnecting; without this check a wrong password looks like a broker
//! that never answers. Its messages name the mechanism and the TLS failure
//! but never the password.

use crate::retry::{Classify, ErrorClass};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why Kafka could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaAccessError {
    /// The broker refused the SASL login.
    #[error(
        "Kafka authentication failed at {servers}: {reason} \
         (check sasl.mechanism, sasl.username and sasl.password)"
    )]
    Authentication {
        /// `bootstrap.servers`.
        servers: String,
        /// librdkafka's message.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error(
        "Kafka TLS handshake failed at {servers}: {reason} \
         (check security.protocol, ssl.ca.location and the broker certificate)"
    )]
    Tls {
        /// `bootstrap.servers`.
        servers: String,
        /// librdkafka's message.
        reason: String,
    },
    /// The client could not be created (a bad property).
    #[error("Kafka client settings refused: {0}")]
    Config(String),
    /// No answer in time (broker down or unreachable).
    #[error("Kafka at {servers} did not answer: {reason}")]
    Unreachable {
        /// `bootstrap.servers`.
        servers: String,
        /// The last error.
        reason: String,
    },
}

impl Classify for KafkaAccessError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unreachable { .. } => ErrorClass::Retryable,
            _ => ErrorClass::Fatal,
        }
    }
}

/// Records the first authentication or TLS error librdkafka reports.
#[derive(Default)]
struct Watch {
    seen: Mutex<Option<(bool, String)>>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let auth = matches!(
            code,
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
        );
        let tls = matches!(code, Some(RDKafkaErrorCode::SSL));
        tracing::debug!(%error, reason, "kafka client error");
        if auth || tls {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.get_or_insert_with(|| (auth, reason.to_string()));
        }
    }
}

impl ConsumerContext for Watch {}

/// Connects with `config` (a consumer's or a producer's settings; no group
/// is joined) and fetches the cluster metadata, for at most `timeout`.
/// Blocking: call it from `spawn_blocking`.
pub fn check(config: &ClientConfig, timeout: Duration) -> Result<(), KafkaAccessError> {
    let servers = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let mut config = config.clone();
    // A metadata-only client: no group membership, no offsets.
    config.remove("group.id");
    let consumer: BaseConsumer<Watch> = config
        .create_with_context(Watch::default())
        .map_err(|e| KafkaAccessError::Config(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match consumer.fetch_metadata(None, left.min(Duration::from_secs(1))) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        // Error events reach the context only when the client is polled.
        let _ = consumer.poll(Duration::from_millis(100));
        let seen = consumer
            .context()
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match seen {
            Some((true, reason)) => {
                return Err(KafkaAccessError::Authentication { servers, reason })
            }
            Some((false, reason)) => return Err(KafkaAccessError::Tls { servers, reason }),
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(KafkaAccessError::Unreachable {
                servers,
                reason: last,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_broker_is_retryable() {
        let s = || "b:9092".to_string();
        let r = || "x".to_string();
        let auth = KafkaAccessError::Authentication {
            servers: s(),
            reason: r(),
        };
        assert_eq!(auth.class(), ErrorClass::Fatal);
        assert!(auth
            .to_string()
            .contains("Kafka authentication failed at b:9092"));
        let tls = KafkaAccessError::Tls {
            servers: s(),
            reason: r(),
        };
        assert_eq!(tls.class(), ErrorClass::Fatal);
        let down = KafkaAccessError::Unreachable {
            servers: s(),
            reason: r(),
        };
        assert_eq!(down.class(), ErrorClass::Retryable);
    }

    #[test]
    fn a_closed_port_is_unreachable_not_fatal() {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1");
        let err = check(&c, Duration::from_millis(1500)).unwrap_err();
        assert!(matches!(err, KafkaAccessError::Unreachable { .. }), "{err}");
    }
}
