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
/// brokers plus the pass-through `kafka.properties` and the values of
/// `kafka.property_files` (a file that cannot be read is reported at
/// start-up by [`read_property_files`]).
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    c.set("client.id", "mongo-source");
    // librdkafka's producer (and so the admin client) asks the broker to
    // create any topic it requests metadata for, and brokers allow that by
    // default: reading the partitions of a missing event topic created it
    // with the broker's default settings, whatever `topics.create` said.
    // Topics are created only by `Topics::ensure`, with the configured
    // partitions and settings.
    c.set("allow.auto.create.topics", "false");
    for (k, v) in &cfg.properties {
        c.set(k, v.expose());
    }
    if let Ok(files) = read_property_files(cfg) {
        for (k, v) in files {
            c.set(k, v);
        }
    }
    c
}

/// Reads `kafka.property_files`; the error names the key and the file.
pub fn read_property_files(
    cfg: &KafkaConfig,
) -> Result<Vec<(String, String)>, shared::config::ConfigError> {
    cfg.property_files
        .iter()
        .map(|(k, path)| {
            std::fs::read_to_string(path)
                .map(|v| (k.clone(), v.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    shared::config::ConfigError::invalid(
                        format!("kafka.property_files.{k}"),
                        format!("{}: {e}", path.display()),
                    )
                })
        })
        .collect()
}
