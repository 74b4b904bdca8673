//! Everything `mongo-source` does with Kafka: the transactional record sink
//! ([`sink`]), the resume-position store ([`positions`]) and topic
//! administration ([`topics`]).

pub mod positions;
pub mod record;
pub mod sink;
pub mod topics;

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

/// Base librdkafka settings shared by every client of this binary: the
/// shared connection settings ([`shared::kafka_client`]) plus what
/// mongo-source manages itself.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = cfg.client.client_config("mongo-source");
    // librdkafka's producer (and so the admin client) asks the broker to
    // create any topic it requests metadata for, and brokers allow that by
    // default: reading the partitions of a missing event topic created it
    // with the broker's default settings, whatever `topics.create` said.
    // Topics are created only by `Topics::ensure`, with the configured
    // partitions and settings (so `validate()` refuses this property).
    c.set("allow.auto.create.topics", "false");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_never_auto_created_and_operator_properties_apply() {
        let cfg: KafkaConfig = toml::from_str(
            "bootstrap_servers = \"k:9092\"\n[properties]\n\"sasl.username\" = \"svc\"\n",
        )
        .unwrap();
        let c = client_config(&cfg);
        assert_eq!(c.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(c.get("sasl.username"), Some("svc"));
        assert_eq!(c.get("client.id"), Some("mongo-source"));
    }
}
