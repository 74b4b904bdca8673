//! Configuration loading shared by both binaries: a TOML file, then
//! environment overrides, then typed deserialisation that names the key at
//! fault. No I/O other than reading the file happens here; each binary's
//! `validate()` checks values before anything connects.
//!
//! # Environment overrides
//!
//! Every key can be overridden by an environment variable named
//! `{PREFIX}__{PATH}` where `PATH` is the key's path with `__` between
//! segments, in upper case; array elements are addressed by index. With the
//! prefix `MONGO_SOURCE`:
//!
//! - `MONGO_SOURCE__MONGODB__URI` sets `mongodb.uri`;
//! - `MONGO_SOURCE__COLLECTIONS__0__TOPIC` sets `collections[0].topic`.
//!
//! The value keeps the type of the key it replaces when that key is a
//! string in the file (so a numeric password stays a string); otherwise it
//! is read as a TOML value (`42`, `true`, `["a", "b"]`) and, failing that,
//! taken as a string.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use toml::Value;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override does not fit the file's structure.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has a wrong type, is unknown, or a required key is missing.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// An invalid-value error for `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads `path`, applies the overrides from the process environment and
/// deserialises the result.
pub fn load<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, env_prefix, std::env::vars())
}

/// Like [`load`], from text and an explicit environment (for tests).
pub fn load_str<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut root: Value = toml::from_str::<toml::Table>(text)
        .map(Value::Table)
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let marker = format!("{env_prefix}__");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&marker))
        .collect();
    // Sorted so that `..__0__..` is applied before `..__1__..`.
    overrides.sort();
    for (var, value) in overrides {
        let path: Vec<String> = var[marker.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        apply_override(&mut root, &path, &value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(root, &mut track);
    T::deserialize(de).map_err(|e| {
        let key = track.path().to_string();
        ConfigError::Invalid {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: e.to_string(),
        }
    })
}

fn apply_override(root: &mut Value, path: &[String], raw: &str) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key path".into());
    };
    if path.iter().any(String::is_empty) {
        return Err("empty segment in key path (use `__` between keys)".into());
    }
    let mut node = root;
    for seg in parents {
        node = match node {
            Value::Table(t) => t
                .entry(seg.clone())
                .or_insert_with(|| Value::Table(Default::default())),
            Value::Array(a) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| format!("`{seg}` is not an array index"))?;
                let len = a.len();
                a.get_mut(idx)
                    .ok_or_else(|| format!("index {idx} out of range (array has {len})"))?
            }
            _ => return Err(format!("`{seg}` is inside a value that is not a table")),
        };
    }
    let slot: &mut Value = match node {
        Value::Table(t) => {
            let existing_is_string = matches!(t.get(last), Some(Value::String(_)));
            t.insert(last.clone(), parse_value(raw, existing_is_string));
            return Ok(());
        }
        Value::Array(a) => {
            let idx: usize = last
                .parse()
                .map_err(|_| format!("`{last}` is not an array index"))?;
            let len = a.len();
            a.get_mut(idx)
                .ok_or_else(|| format!("index {idx} out of range (array has {len})"))?
        }
        _ => return Err(format!("`{last}` is inside a value that is not a table")),
    };
    let existing_is_string = matches!(slot, Value::String(_));
    *slot = parse_value(raw, existing_is_string);
    Ok(())
}

fn parse_value(raw: &str, keep_string: bool) -> Value {
    if keep_string {
        return Value::String(raw.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Replaces the password of a connection string (`scheme://user:pass@host`)
/// with `***`, for logs, errors and status pages.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &uri[rest_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    format!("{}{}:***{}", &uri[..rest_start], user, &rest[at..])
}

/// Checks a name (database, collection, topic, prefix): not empty, no
/// whitespace, no NUL, none of `also_forbidden`. The error names `key`.
pub fn require_name(key: &str, value: &str, also_forbidden: &[char]) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || *c == '\0' || also_forbidden.contains(c))
    {
        return Err(ConfigError::invalid(
            key,
            format!("`{value}` contains {c:?}, which a name cannot hold"),
        ));
    }
    Ok(())
}

/// Removes the password of connection string `uri` (and the whole `uri`)
/// from `text`, for error messages that may quote it.
pub fn scrub(text: &str, uri: &str) -> String {
    let mut out = text.replace(uri, &redact_uri(uri));
    if let Some(pw) = uri_password(uri) {
        if !pw.is_empty() {
            out = out.replace(pw, "***");
        }
    }
    out
}

fn uri_password(uri: &str) -> Option<&str> {
    let rest = &uri[uri.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p)
}

/// Reads a secret from `path` (a `*_file` key such as `password_file`),
/// without its trailing newline. The error names `key` and the file, never
/// the content.
pub fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(value))
}

/// A secret string from config: printed as `***` by `Debug` and `Display`.
#[derive(Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret from its value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, to hand to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        #[serde(default)]
        port: u16,
        password: String,
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        topic: String,
        #[serde(default)]
        partitions: u32,
    }

    const TEXT: &str = r#"
name = "a"
password = "x"
[[items]]
topic = "t0"
[[items]]
topic = "t1"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_keys_and_array_items() {
        let cfg: Cfg = load_str(
            TEXT,
            Path::new("t.toml"),
            "APP",
            env(&[
                ("APP__PORT", "8080"),
                ("APP__PASSWORD", "1234"),
                ("APP__ITEMS__1__TOPIC", "other"),
                ("APP__ITEMS__1__PARTITIONS", "3"),
                ("UNRELATED__PORT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.name, "a");
        assert_eq!(cfg.port, 8080);
        assert_eq!(cfg.password, "1234", "a string key stays a string");
        assert_eq!(cfg.items[1].topic, "other");
        assert_eq!(cfg.items[1].partitions, 3);
    }

    #[test]
    fn errors_name_the_key() {
        let err = load_str::<Cfg>(
            TEXT,
            Path::new("t.toml"),
            "APP",
            env(&[("APP__PORT", "\"high\"")]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("config key `port`"), "{err}");

        let bad = format!("{TEXT}\n[[items]]\ntopic = \"t2\"\npartitons = 3\n");
        let err = load_str::<Cfg>(&bad, Path::new("t.toml"), "APP", env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("items[2]") && msg.contains("partitons"),
            "{msg}"
        );

        let err = load_str::<Cfg>("name = \"a\"", Path::new("t.toml"), "APP", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");
    }

    #[test]
    fn syntax_and_env_errors_are_clear() {
        let err = load_str::<Cfg>("name = ", Path::new("x.toml"), "APP", env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("x.toml is not valid TOML"),
            "{err}"
        );
        let err = load_str::<Cfg>(
            TEXT,
            Path::new("t.toml"),
            "APP",
            env(&[("APP__ITEMS__9__TOPIC", "z")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("APP__ITEMS__9__TOPIC"), "{err}");
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(require_name("k", "live", &['$']).is_ok());
        assert!(require_name("k", "", &[])
            .unwrap_err()
            .to_string()
            .contains("must not be empty"));
        assert!(require_name("k", "a b", &[]).is_err());
        assert!(require_name("k", "a$b", &[]).is_ok());
        let err = require_name("db", "a$b", &['$']).unwrap_err().to_string();
        assert!(
            err.contains("config key `db`") && err.contains("'$'"),
            "{err}"
        );
    }

    #[test]
    fn secret_files_are_read_without_the_newline() {
        let dir = std::env::temp_dir().join(format!("shared-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cr3t\r\n").unwrap();
        assert_eq!(read_secret_file("k", &f).unwrap().expose(), "s3cr3t");
        std::fs::write(&f, "\n").unwrap();
        let err = read_secret_file("a.password_file", &f)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.password_file") && err.contains("empty"),
            "{err}"
        );
        let err = read_secret_file("a.password_file", &dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.password_file") && err.contains("missing"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_uri("mongodb://app:s3cr3t@h1:27017,h2:27017/?replicaSet=rs0"),
            "mongodb://app:***@h1:27017,h2:27017/?replicaSet=rs0"
        );
        assert_eq!(redact_uri("mongodb://h1:27017/"), "mongodb://h1:27017/");
        assert_eq!(redact_uri("http://u:p@es:9200"), "http://u:***@es:9200");
        assert_eq!(format!("{:?}", Secret::new("pw")), "***");
        let uri = "mongodb://app:s3cr3t@h1/";
        assert_eq!(
            scrub("bad uri mongodb://app:s3cr3t@h1/ (s3cr3t)", uri),
            "bad uri mongodb://app:***@h1/ (***)"
        );
    }
}
