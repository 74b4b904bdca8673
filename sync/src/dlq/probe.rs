//! What the dead-letter topic accepts, read from the broker with the admin
//! API: its `max.message.bytes` (the effective value: the topic's own or
//! the broker's `message.max.bytes`). A topic that does not exist
//! (`UNKNOWN_TOPIC_OR_PARTITION`, or no configs at all, as Kafka 4 answers)
//! is a
//! [`Fault::MissingTopic`] unless the broker creates topics on first write
//! (`auto.create.topics.enable`), then its limit is the broker's.
//!
//! When the configs cannot be read (no `DESCRIBE_CONFIGS` permission),
//! Kafka's default limit is assumed and said in the limit's source; a
//! record the broker then refuses as too large is sent as a pointer.

use super::fault::Fault;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use shared::wire::record_size::KAFKA_DEFAULT_MAX_MESSAGE_BYTES;
use std::sync::Arc;
use std::time::Duration;

/// The largest record the dead-letter topic accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Bytes, as [`shared::wire::record_size::batch_size`] counts them.
    pub bytes: usize,
    /// Where it was read, for the pointer and the log.
    pub source: String,
}

/// Reads the limit of `topic`.
pub async fn probe(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<Limit, Fault> {
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(|e| unreachable(topic, &e))?;
    let Some(first) = res.into_iter().next() else {
        return Ok(assumed(topic, "the broker returned nothing"));
    };
    match first {
        // Kafka 4 answers a missing topic with no configs rather than
        // UNKNOWN_TOPIC_OR_PARTITION; a topic always has some.
        Ok(resource) if resource.entries.is_empty() => missing(admin, topic, timeout).await,
        Ok(resource) => Ok(resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok())
            .map_or_else(
                || assumed(topic, "the broker did not return max.message.bytes"),
                |bytes| Limit {
                    bytes,
                    source: format!("topic {topic} max.message.bytes"),
                },
            )),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition) => missing(admin, topic, timeout).await,
        Err(
            code @ (RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed),
        ) => Ok(assumed(
            topic,
            &format!("not allowed to describe its configs ({code:?})"),
        )),
        Err(code) => Err(Fault::of_code(
            code,
            topic,
            &format!("describing its configs: {code:?}"),
        )),
    }
}

/// The topic does not exist: fine if the broker creates it on first write.
async fn missing(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<Limit, Fault> {
    let a = admin.clone();
    let broker = tokio::task::spawn_blocking(move || {
        a.inner().fetch_metadata(None, timeout).ok().and_then(|md| {
            md.brokers()
                .first()
                .map(rdkafka::metadata::MetadataBroker::id)
        })
    })
    .await
    .ok()
    .flatten();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let config = match broker {
        Some(id) => admin
            .describe_configs([&ResourceSpecifier::Broker(id)], &opts)
            .await
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(Result::ok),
        None => None,
    };
    let get = |name: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(|e| e.value.clone())
    };
    match get("auto.create.topics.enable").as_deref() {
        Some("true") => Ok(get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .map_or_else(
                || assumed(topic, "to be created by the broker"),
                |bytes| Limit {
                    bytes,
                    source: format!(
                        "broker message.max.bytes (topic {topic} to be created by the broker)"
                    ),
                },
            )),
        Some(_) => Err(Fault::MissingTopic(format!(
            "dead-letter topic {topic} does not exist and the broker does not create topics \
             (auto.create.topics.enable=false); create it (docs/sync.md, \"Dead-letter topic\")"
        ))),
        // Cannot tell: write, and let the broker's answer decide.
        None => Ok(assumed(
            topic,
            "does not exist yet; the broker's settings cannot be read",
        )),
    }
}

fn assumed(topic: &str, why: &str) -> Limit {
    Limit {
        bytes: KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
        source: format!("Kafka's default (topic {topic}: {why})"),
    }
}

fn unreachable(topic: &str, e: &KafkaError) -> Fault {
    match e.rdkafka_error_code() {
        Some(code) => Fault::of_code(code, topic, &format!("describing its configs: {e}")),
        None => Fault::Unreachable(format!("cannot describe dead-letter topic {topic}: {e}")),
    }
}
