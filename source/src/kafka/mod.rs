//! Everything `mongo-source` does with Kafka: the transactional record sink
//! ([`sink`]), the resume-position store ([`positions`]) and topic
//! administration ([`topics`]).

pub mod positions;
pub mod record;
pub mod sink;
pub mod topics;

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

/// Base librdkafka settings shared by every client of this binary:
/// brokers plus the pass-through `kafka.properties`.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    c.set("client.id", "mongo-source");
    for (k, v) in &cfg.properties {
        c.set(k, v.expose());
    }
    c
}
