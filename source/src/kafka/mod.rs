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

/// Reads `kafka.property_files` (each one secret, without its trailing
/// newline; an empty file is refused); the error names the key and the
/// file, never the content.
pub fn read_property_files(
    cfg: &KafkaConfig,
) -> Result<Vec<(String, String)>, shared::config::ConfigError> {
    cfg.property_files
        .iter()
        .map(|(k, path)| {
            shared::config::read_secret_file(&format!("kafka.property_files.{k}"), path)
                .map(|v| (k.clone(), v.expose().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_with_file(content: &str) -> (KafkaConfig, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "mongo-source-prop-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&path, content).unwrap();
        let text = format!(
            "bootstrap_servers = \"k:9092\"\n[property_files]\n\"sasl.password\" = {:?}\n",
            path.display().to_string()
        );
        (toml::from_str(&text).unwrap(), path)
    }

    #[test]
    fn property_files_are_read_without_the_newline() {
        let (cfg, path) = kafka_with_file("s3cret\n");
        let props = read_property_files(&cfg).unwrap();
        assert_eq!(props, vec![("sasl.password".into(), "s3cret".into())]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_empty_property_file_is_refused_by_name() {
        let (cfg, path) = kafka_with_file("\n");
        let err = read_property_files(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("kafka.property_files.sasl.password") && err.contains("is empty"),
            "{err}"
        );
        let _ = std::fs::remove_file(path);
    }
}
