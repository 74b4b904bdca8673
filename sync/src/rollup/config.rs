//! `[rollup]`: replies rolled up into their card (see [`crate::rollup`]).

use serde::Deserialize;
use shared::config::ConfigError;

/// `[rollup]` (optional): the children of one topic (replies) rolled up
/// into their parent's document of another topic (cards). See
/// [`crate::rollup`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// The topic of the parents (cards); one of `topics`.
    pub parent_topic: String,
    /// The topic of the children (replies); one of `topics`.
    pub child_topic: String,
    /// The field of a child holding its parent's `_id`.
    #[serde(default = "default_parent_field")]
    pub parent_field: String,
    /// The parent field that receives the number of children.
    #[serde(default = "default_count_field")]
    pub count_field: String,
    /// The child field that orders children in time (a date).
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// The parent field that receives the latest child time.
    #[serde(default = "default_last_field")]
    pub last_field: String,
    /// The child field whose text the latest children give.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// The parent field that receives the text of the latest children
    /// (searchable with the card).
    #[serde(default = "default_latest_field")]
    pub latest_field: String,
    /// How many latest children's text to keep (0: none).
    #[serde(default = "default_latest")]
    pub latest: usize,
    /// The parent index or alias, when not the parent topic's alias (set by
    /// `reindex`, which narrows `topics`).
    #[serde(skip)]
    pub parent_index: Option<String>,
    /// The child index or alias, when not the child topic's alias.
    #[serde(skip)]
    pub child_index: Option<String>,
}

fn default_parent_field() -> String {
    "card_id".into()
}
fn default_count_field() -> String {
    "reply_count".into()
}
fn default_time_field() -> String {
    "created_at".into()
}
fn default_last_field() -> String {
    "last_reply_at".into()
}
fn default_text_field() -> String {
    "body".into()
}
fn default_latest_field() -> String {
    "latest_replies".into()
}
fn default_latest() -> usize {
    3
}

impl RollupConfig {
    /// Checks the values against the topics (no I/O).
    pub fn validate(&self, topics: &[&str]) -> Result<(), ConfigError> {
        for (key, topic) in [
            ("rollup.parent_topic", &self.parent_topic),
            ("rollup.child_topic", &self.child_topic),
        ] {
            if !topics.contains(&topic.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{topic}` is not one of the configured topics"),
                ));
            }
        }
        if self.parent_topic == self.child_topic {
            return Err(ConfigError::invalid(
                "rollup.child_topic",
                "must differ from rollup.parent_topic",
            ));
        }
        for (key, f) in [
            ("rollup.parent_field", &self.parent_field),
            ("rollup.count_field", &self.count_field),
            ("rollup.time_field", &self.time_field),
            ("rollup.last_field", &self.last_field),
            ("rollup.text_field", &self.text_field),
            ("rollup.latest_field", &self.latest_field),
        ] {
            if f.is_empty() || f.contains('.') || f.starts_with('_') {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{f}` must be a top-level field name (no dots, not starting with _)"),
                ));
            }
        }
        if self.latest > 50 {
            return Err(ConfigError::invalid("rollup.latest", "must be at most 50"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollup() -> RollupConfig {
        toml::from_str(
            r#"
            parent_topic = "live.mountain.card"
            child_topic = "live.mountain.reply"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_fit_cards_and_replies() {
        let r = rollup();
        assert_eq!(
            (r.parent_field.as_str(), r.count_field.as_str(), r.latest),
            ("card_id", "reply_count", 3)
        );
        assert!(r
            .validate(&["live.mountain.card", "live.mountain.reply"])
            .is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = rollup().validate(&["live.mountain.card"]).unwrap_err();
        assert!(err.to_string().contains("rollup.child_topic"), "{err}");
        let mut r = rollup();
        r.count_field = "a.b".into();
        let err = r
            .validate(&["live.mountain.card", "live.mountain.reply"])
            .unwrap_err();
        assert!(err.to_string().contains("rollup.count_field"), "{err}");
        assert!(toml::from_str::<RollupConfig>(
            "parent_topic = \"a\"\nchild_topic = \"b\"\nextra = 1"
        )
        .is_err());
    }
}
