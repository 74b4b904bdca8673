//! Why a dead-letter write failed, in classes an operator acts on. Every
//! class but [`Fault::TooLarge`] makes the partition wait and retry (the
//! operator creates the topic, grants the ACL, brings the broker back);
//! `TooLarge` makes the writer send a pointer instead of the copy.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// A failed dead-letter write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The topic does not exist (and the broker does not create it).
    #[error("{0}")]
    MissingTopic(String),
    /// The principal may not describe or write the topic.
    #[error("{0}")]
    NotAuthorized(String),
    /// No broker answers, or the partition has no leader.
    #[error("{0}")]
    Unreachable(String),
    /// The record is over a limit (the broker's or librdkafka's).
    #[error("{0}")]
    TooLarge(String),
    /// Anything else (retried the same way).
    #[error("{0}")]
    Other(String),
}

impl Fault {
    /// Label of `es_sync_dlq_write_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingTopic(_) => "missing_topic",
            Self::NotAuthorized(_) => "not_authorized",
            Self::Unreachable(_) => "unreachable",
            Self::TooLarge(_) => "too_large",
            Self::Other(_) => "other",
        }
    }

    /// The class of a produce error for `topic`.
    pub fn of_produce(e: &KafkaError, topic: &str) -> Self {
        match e.rdkafka_error_code() {
            Some(code) => Self::of_code(code, topic, &e.to_string()),
            None => Self::Other(format!("writing to {topic}: {e}")),
        }
    }

    /// The class of error `code` (message `text`) about `topic`.
    pub fn of_code(code: RDKafkaErrorCode, topic: &str, text: &str) -> Self {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageSizeTooLarge | C::MessageBatchTooLarge => {
                Self::TooLarge(format!("{topic} refused the record as too large: {text}"))
            }
            C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => {
                Self::MissingTopic(format!(
                    "dead-letter topic {topic} does not exist: {text}; create it (docs/sync.md, \"Dead-letter topic\")"
                ))
            }
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication => Self::NotAuthorized(format!(
                "not authorized to write to dead-letter topic {topic}: {text}; grant WRITE and DESCRIBE on it"
            )),
            C::MessageTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::NetworkException
            | C::Resolve
            | C::BrokerNotAvailable => {
                Self::Unreachable(format!("no broker accepts writes to {topic}: {text}"))
            }
            _ => Self::Other(format!("writing to {topic}: {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_fall_into_the_classes_an_operator_acts_on() {
        let t = "live.dlq.sync";
        let f = |code| Fault::of_produce(&KafkaError::MessageProduction(code), t);
        assert_eq!(
            f(RDKafkaErrorCode::MessageSizeTooLarge).label(),
            "too_large"
        );
        assert_eq!(
            f(RDKafkaErrorCode::UnknownTopicOrPartition).label(),
            "missing_topic"
        );
        assert_eq!(f(RDKafkaErrorCode::UnknownTopic).label(), "missing_topic");
        assert_eq!(
            f(RDKafkaErrorCode::TopicAuthorizationFailed).label(),
            "not_authorized"
        );
        assert_eq!(f(RDKafkaErrorCode::MessageTimedOut).label(), "unreachable");
        assert_eq!(f(RDKafkaErrorCode::AllBrokersDown).label(), "unreachable");
        assert_eq!(f(RDKafkaErrorCode::InvalidMessage).label(), "other");
        let missing = f(RDKafkaErrorCode::UnknownTopicOrPartition).to_string();
        assert!(
            missing.contains("live.dlq.sync") && missing.contains("does not exist"),
            "{missing}"
        );
        assert_eq!(Fault::of_produce(&KafkaError::Canceled, t).label(), "other");
    }
}
