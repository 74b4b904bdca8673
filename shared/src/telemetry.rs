//! Logging set-up: structured `tracing` events as text or JSON lines on
//! stderr, filtered by level (an `EnvFilter` directive; `RUST_LOG` wins
//! when set).

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// `[log]` section of both configs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// Filter directive, e.g. `info` or `info,mongo_source=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    /// Checks the filter directive.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| crate::config::ConfigError::invalid("log.level", e.to_string()))
    }
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
