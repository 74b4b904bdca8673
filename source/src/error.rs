//! Errors of a stream, each classified retryable or fatal.

use mongodb::error::ErrorKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use shared::retry::{Classify, ErrorClass};

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A MongoDB operation failed.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A Kafka operation failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The start-up check of the Kafka settings failed (refused login,
    /// failed TLS handshake, or no answer).
    #[error("{0}")]
    KafkaAccess(#[from] shared::kafka_access::KafkaAccessError),
    /// Another producer with the same `transactional.id` took over.
    #[error("fenced: another instance with transactional.id {0} took over this stream")]
    Fenced(String),
    /// The transaction stayed open longer than `transaction.timeout.ms`
    /// (the process was paused or starved), so the broker aborted it and
    /// the producer can no longer use it. Nothing of it is visible; the
    /// stream reopens its producer and resumes from its last committed
    /// position.
    #[error(
        "transaction of {transactional_id} timed out: open for {open_ms} ms, over \
         kafka.transaction_timeout_ms = {timeout_ms} (process paused?); the broker aborted it"
    )]
    TransactionTimedOut {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// How long the transaction had been open when it failed.
        open_ms: u64,
        /// `kafka.transaction_timeout_ms`.
        timeout_ms: u64,
    },
    /// The stored resume point is no longer in the oplog.
    #[error("change stream history lost: {0}")]
    HistoryLost(String),
    /// A record exceeded the size limit and the policy is `fail`.
    #[error("{0} (oversized.policy = \"fail\")")]
    Oversized(String),
    /// The broker does not support transactions and delivery = exactly_once.
    #[error("kafka transactions unavailable and kafka.delivery = \"exactly_once\": {0}")]
    NoTransactions(String),
    /// A change event could not be understood.
    #[error("bad change event: {0}")]
    BadEvent(String),
    /// The stored position could not be read.
    #[error("bad stored position for stream {stream}: {message}")]
    BadPosition {
        /// Stream name.
        stream: String,
        /// What is wrong.
        message: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("internal: {0}")]
    Internal(String),
}

/// MongoDB error codes that mean the resume point is gone.
const HISTORY_LOST_CODES: [i32; 2] = [286, 280];
/// MongoDB error codes that no retry can fix (auth, bad options, permissions).
const FATAL_MONGO_CODES: [i32; 5] = [2, 13, 18, 40415, 9];

impl StreamError {
    /// Turns a MongoDB error into [`StreamError::HistoryLost`] when it is one.
    pub fn from_mongo(e: mongodb::error::Error) -> Self {
        if let ErrorKind::Command(c) = e.kind.as_ref() {
            if HISTORY_LOST_CODES.contains(&c.code)
                || c.code_name == "ChangeStreamHistoryLost"
                || c.message.contains("no longer be in the oplog")
            {
                return Self::HistoryLost(format!("{} ({}): {}", c.code_name, c.code, c.message));
            }
        }
        Self::Mongo(e)
    }

    /// Turns a Kafka error into [`StreamError::Fenced`] when it is one.
    pub fn from_kafka(e: KafkaError, transactional_id: &str) -> Self {
        let fenced = match &e {
            KafkaError::Transaction(t) => matches!(
                t.code(),
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fenced
            ),
            other => matches!(
                other.rdkafka_error_code(),
                Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
            ),
        };
        if fenced {
            Self::Fenced(transactional_id.to_string())
        } else {
            Self::Kafka(e)
        }
    }
}

/// Whether a MongoDB error is a refused login (SCRAM failure, code 18).
pub fn is_mongo_auth(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(c) => c.code == 18,
        _ => false,
    }
}

impl Classify for StreamError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Mongo(e) => match e.kind.as_ref() {
                ErrorKind::Authentication { .. }
                | ErrorKind::InvalidArgument { .. }
                | ErrorKind::InvalidTlsConfig { .. } => ErrorClass::Fatal,
                ErrorKind::Command(c) if FATAL_MONGO_CODES.contains(&c.code) => ErrorClass::Fatal,
                _ => ErrorClass::Retryable,
            },
            Self::Kafka(e) => match e.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::UnknownTopicOrPartition,
                ) => ErrorClass::Fatal,
                _ => ErrorClass::Retryable,
            },
            Self::KafkaAccess(e) => e.class(),
            Self::TransactionTimedOut { .. } => ErrorClass::Retryable,
            Self::Fenced(_) | Self::Oversized(_) | Self::NoTransactions(_) => ErrorClass::Fatal,
            Self::HistoryLost(_) => ErrorClass::Fatal,
            Self::BadEvent(_) | Self::BadPosition { .. } => ErrorClass::Fatal,
            Self::Internal(_) => ErrorClass::Retryable,
        }
    }
}

/// Result of stream operations.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(StreamError::Fenced("x".into()).class(), ErrorClass::Fatal);
        let timed_out = StreamError::TransactionTimedOut {
            transactional_id: "t".into(),
            open_ms: 9_000,
            timeout_ms: 3_000,
        };
        assert_eq!(timed_out.class(), ErrorClass::Retryable);
        assert!(timed_out.to_string().contains("9000 ms"), "{timed_out}");
        assert_eq!(
            StreamError::Internal("x".into()).class(),
            ErrorClass::Retryable
        );
        let queue_full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(
            StreamError::Kafka(queue_full).class(),
            ErrorClass::Retryable
        );
        let auth = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(StreamError::Kafka(auth).class(), ErrorClass::Fatal);
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(
            StreamError::from_kafka(down, "t").class(),
            ErrorClass::Retryable
        );
    }
}
