//! `[freshness]`: how the freshness of the index is measured
//! ([`super`]).

use serde::Deserialize;
use shared::config::ConfigError;

/// `[freshness]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FreshnessConfig {
    /// Measure how long after their MongoDB commit documents become
    /// searchable (`es_sync_freshness_seconds`, `/status`): true. Needs the
    /// `monitor` index privilege (in `manage`) on the aliases' indices.
    pub enabled: bool,
    /// How often, in ms, the refresh statistics of an alias are read while
    /// acknowledged documents of it wait to be searchable (100): the
    /// moment a refresh is noticed is late by up to this, so the metric is
    /// on average about one interval above the true value (see the module
    /// documentation); a quiet alias is not polled at all. 10..=10000.
    pub poll_interval_ms: u64,
    /// The window, in seconds, of the p50/p99 freshness on `/status`
    /// (300). 30..=86400.
    pub window_seconds: u64,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 100,
            window_seconds: 300,
        }
    }
}

impl FreshnessConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=10_000).contains(&self.poll_interval_ms) {
            return Err(ConfigError::invalid(
                "freshness.poll_interval_ms",
                "must be between 10 and 10000",
            ));
        }
        if !(30..=86_400).contains(&self.window_seconds) {
            return Err(ConfigError::invalid(
                "freshness.window_seconds",
                "must be between 30 and 86400",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        FreshnessConfig::default().validate().unwrap();
        let bad = FreshnessConfig {
            poll_interval_ms: 5,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("freshness.poll_interval_ms"), "{e}");
        let bad = FreshnessConfig {
            window_seconds: 0,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("freshness.window_seconds"), "{e}");
    }
}
