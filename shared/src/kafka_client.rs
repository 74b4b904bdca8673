//! The Kafka connection settings both binaries read from their `[kafka]`
//! table: the brokers, pass-through librdkafka properties and properties
//! read from secret files. One type, so a new connection or security
//! setting is added, validated and documented once.
//!
//! Each binary's `[kafka]` struct flattens [`KafkaClientSettings`] beside
//! its own settings. serde cannot combine `flatten` with
//! `deny_unknown_fields`, so those structs collect the keys no field took
//! in a catch-all map, and their `validate()` refuses them with
//! [`refuse_unknown`]: a misspelt key is still an error naming it.

use crate::config::{read_secret_file, ConfigError, Secret};
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Brokers and librdkafka properties, shared by every Kafka client of a
/// binary (consumer, producers, admin, operator commands).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KafkaClientSettings {
    /// `host:port,...` of the brokers.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`), passed through unchanged to
    /// every client; printed as `***`.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
    /// librdkafka properties read from files (one secret each, trailing
    /// newline ignored, an empty file refused), e.g.
    /// `{ "sasl.password" = "/run/secrets/kafka_password" }`.
    #[serde(default)]
    pub property_files: BTreeMap<String, PathBuf>,
}

impl KafkaClientSettings {
    /// The base librdkafka configuration: brokers, `client.id`, the
    /// properties and the values of the property files. A file that cannot
    /// be read is left out here; start-up reports it first through
    /// [`KafkaClientSettings::read_property_files`].
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", client_id);
        self.apply_properties(&mut c);
        c
    }

    /// Sets the properties and the values of the property files on `c`,
    /// over what is there: a client that sets its own defaults calls this
    /// last, so the operator's properties win (es-sync's managed ones are
    /// refused by [`KafkaClientSettings::validate`]).
    pub fn apply_properties(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v.expose());
        }
        for (k, v) in self.read_property_files().unwrap_or_default() {
            c.set(k, v);
        }
    }

    /// Reads `property_files`; the error names the key and the file, never
    /// the content.
    pub fn read_property_files(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.property_files
            .iter()
            .map(|(k, path)| {
                read_secret_file(&format!("kafka.property_files.{k}"), path)
                    .map(|v| (k.clone(), v.expose().to_string()))
            })
            .collect()
    }

    /// Checks without I/O: brokers given, and no property (plain or from a
    /// file) that the binary sets itself; `why` says what overriding one of
    /// `managed` would break.
    pub fn validate(&self, managed: &[&str], why: &str) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        let keys = self
            .properties
            .keys()
            .map(|k| ("properties", k))
            .chain(self.property_files.keys().map(|k| ("property_files", k)));
        for (table, key) in keys {
            if key == "bootstrap.servers" {
                return Err(ConfigError::invalid(
                    format!("kafka.{table}.{key}"),
                    "use kafka.bootstrap_servers",
                ));
            }
            if managed.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    format!("kafka.{table}.{key}"),
                    format!("is set by the binary itself ({why})"),
                ));
            }
        }
        Ok(())
    }
}

/// The catch-all of a table that flattens [`KafkaClientSettings`]: the keys
/// no field took, refused by [`refuse_unknown`].
pub type UnknownKeys = BTreeMap<String, toml::Value>;

/// Refuses the keys of `[table]` that no field took (see the module docs).
pub fn refuse_unknown(table: &str, unknown: &UnknownKeys) -> Result<(), ConfigError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(key) => Err(ConfigError::invalid(
            format!("{table}.{key}"),
            "unknown key (misspelt, or in the wrong table?)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[kafka]` table as a binary declares it: the shared settings
    /// flattened, its own key, and the catch-all.
    #[derive(Debug, Deserialize)]
    struct Table {
        #[serde(flatten)]
        client: KafkaClientSettings,
        #[serde(default)]
        own_timeout_ms: u64,
        #[serde(flatten)]
        unknown: UnknownKeys,
    }

    fn parse(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn shared_and_own_keys_parse_and_nothing_is_left_over() {
        let t = parse(
            "bootstrap_servers = \"k:9092\"\nown_timeout_ms = 7\n\
             [properties]\n\"sasl.username\" = \"svc\"\n",
        );
        assert_eq!(t.client.bootstrap_servers, "k:9092");
        assert_eq!(t.own_timeout_ms, 7);
        assert_eq!(t.client.properties["sasl.username"].expose(), "svc");
        assert!(t.unknown.is_empty());
        refuse_unknown("kafka", &t.unknown).unwrap();
    }

    #[test]
    fn a_misspelt_key_is_named() {
        let t = parse("bootstrap_servers = \"k:9092\"\nbootstrap_server = \"x\"\n");
        let err = refuse_unknown("kafka", &t.unknown).unwrap_err().to_string();
        assert!(err.contains("kafka.bootstrap_server"), "{err}");
    }

    #[test]
    fn property_files_are_read_into_the_client_config_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("kafka-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("pw");
        std::fs::write(&good, "s3cr3t\n").unwrap();
        let mut s = KafkaClientSettings {
            bootstrap_servers: "k:9092".into(),
            ..Default::default()
        };
        s.property_files.insert("sasl.password".into(), good);
        let c = s.client_config("me");
        assert_eq!(c.get("sasl.password"), Some("s3cr3t"));
        assert_eq!(c.get("client.id"), Some("me"));
        assert_eq!(c.get("bootstrap.servers"), Some("k:9092"));

        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        s.property_files.insert("ssl.key.password".into(), empty);
        let err = s.read_property_files().unwrap_err().to_string();
        assert!(
            err.contains("kafka.property_files.ssl.key.password"),
            "{err}"
        );
        assert!(err.contains("is empty") && !err.contains("s3cr3t"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn managed_properties_and_empty_brokers_are_refused() {
        let mut s = KafkaClientSettings::default();
        let err = s.validate(&[], "x").unwrap_err().to_string();
        assert!(err.contains("kafka.bootstrap_servers"), "{err}");
        s.bootstrap_servers = "k:9092".into();
        s.validate(&["group.id"], "x").unwrap();
        s.properties.insert("group.id".into(), Secret::new("g"));
        let err = s
            .validate(&["group.id"], "offsets")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.properties.group.id") && err.contains("offsets"));
        s.properties.clear();
        s.property_files
            .insert("bootstrap.servers".into(), PathBuf::from("/x"));
        let err = s.validate(&[], "x").unwrap_err().to_string();
        assert!(
            err.contains("kafka.property_files.bootstrap.servers"),
            "{err}"
        );
    }
}
