//! The Elasticsearch client and the few non-bulk calls es-sync makes:
//! alias and index look-ups, index creation, refresh, delete-by-query and
//! atomic alias swaps. Errors are [`EsError`], classified retryable or
//! fatal for [`shared::retry`].
//!
//! Delivery guarantee: none by itself (one request, one answer); callers
//! retry retryable errors.

use crate::config::ElasticsearchConfig;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{headers::HeaderMap, Method};
use elasticsearch::Elasticsearch;
use serde_json::Value;
use shared::config::{read_secret_file, Secret};
use shared::retry::{Classify, ErrorClass};
use std::time::Duration;

/// A failed Elasticsearch call.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// No answer (connection refused, timeout).
    #[error("elasticsearch unreachable: {0}")]
    Transport(String),
    /// The TLS handshake failed: a certificate that does not verify
    /// against `ca_file` (or the system roots), or TLS to a plain port.
    #[error(
        "Elasticsearch TLS handshake failed (check elasticsearch.ca_file and the url's host): {0}"
    )]
    Tls(String),
    /// An HTTP error answer.
    #[error("elasticsearch answered {status}{hint} to {what}: {body}", hint = status_hint(*status))]
    Status {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// A state es-sync refuses to change (e.g. an existing mapping).
    #[error("{0}")]
    Refused(String),
}

/// What a 401/403 answer means, for the error message.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (Elasticsearch authentication failed: check elasticsearch.username and \
             password/password_file, or api_key)"
        }
        403 => " (the Elasticsearch user lacks a permission)",
        _ => "",
    }
}

/// A client error with its whole cause chain (reqwest's message alone
/// hides the TLS reason), as [`EsError::Tls`] when it is a TLS failure.
fn transport_error(e: &elasticsearch::Error) -> EsError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    let lower = text.to_ascii_lowercase();
    // rustls' wording: "invalid peer certificate: UnknownIssuer", "received
    // corrupt message" (TLS to a plain port), "received fatal alert".
    if ["certificate", "handshake", "corrupt message", "fatal alert"]
        .iter()
        .any(|w| lower.contains(w))
    {
        EsError::Tls(text)
    } else {
        EsError::Transport(text)
    }
}

impl Classify for EsError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport(_) => ErrorClass::Retryable,
            Self::Status { status, .. } if *status == 429 || *status >= 500 => {
                ErrorClass::Retryable
            }
            _ => ErrorClass::Fatal,
        }
    }
}

/// Builds the client. No network I/O; reads `password_file`,
/// `api_key_file` and `ca_file` (the error names the key, never a secret).
pub fn client(cfg: &ElasticsearchConfig) -> Result<Elasticsearch, EsError> {
    let url = url::Url::parse(&cfg.url).map_err(|e| EsError::Refused(e.to_string()))?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .enable_meta_header(false);
    let secret = |value: &Option<Secret>, file: &Option<std::path::PathBuf>, key: &str| match (
        value, file,
    ) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(path)) => read_secret_file(key, path)
            .map(Some)
            .map_err(|e| EsError::Refused(e.to_string())),
        (None, None) => Ok(None),
    };
    let password = secret(
        &cfg.password,
        &cfg.password_file,
        "elasticsearch.password_file",
    )?;
    let api_key = secret(
        &cfg.api_key,
        &cfg.api_key_file,
        "elasticsearch.api_key_file",
    )?;
    if let (Some(u), Some(p)) = (&cfg.username, password) {
        builder = builder.auth(Credentials::Basic(u.clone(), p.expose().to_string()));
    } else if let Some(k) = api_key {
        builder = builder.auth(Credentials::EncodedApiKey(k.expose().to_string()));
    }
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            EsError::Refused(format!("elasticsearch.ca_file {}: {e}", path.display()))
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            EsError::Refused(format!(
                "elasticsearch.ca_file {}: not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder
        .build()
        .map_err(|e| EsError::Refused(e.to_string()))?;
    Ok(Elasticsearch::new(transport))
}

/// Sends one request; returns status and parsed body (`Null` if empty).
pub async fn call(
    es: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), EsError> {
    let body = body.map(|b| b.to_string().into_bytes());
    let resp = es
        .send(method, path, HeaderMap::new(), None::<&()>, body, None)
        .await
        .map_err(|e| transport_error(&e))?;
    let status = resp.status_code().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| EsError::Transport(e.to_string()))?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// Like [`call`], but a non-2xx answer is an error.
pub async fn call_ok(
    es: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, EsError> {
    let what = format!("{} {path}", method_name(&method));
    let (status, value) = call(es, method, path, body).await?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(EsError::Status {
            what,
            status,
            body: shorten(value.to_string(), 2000),
        })
    }
}

/// [`call_ok`] retried while the answer is transient (no answer, 429 such
/// as a `circuit_breaking_exception` of a node short of heap, 5xx), with
/// `policy`'s backoff for at most its `max_elapsed_ms` (two minutes when it
/// says forever): for the operator commands, which must neither judge the
/// index by a node's passing pressure nor wait on it without end.
pub async fn call_ok_retrying(
    es: &Elasticsearch,
    policy: &shared::retry::RetryConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, EsError> {
    let policy = shared::retry::RetryConfig {
        max_elapsed_ms: match policy.max_elapsed_ms {
            0 => 120_000,
            ms => ms,
        },
        ..policy.clone()
    };
    let never = tokio_util::sync::CancellationToken::new();
    shared::retry::retry(
        &policy,
        &never,
        |e: &EsError, delay| tracing::warn!(error = %e, ?delay, path, "Elasticsearch is busy; retrying"),
        || call_ok(es, method, path, body),
    )
    .await
    .map_err(|e| match e {
        shared::retry::RetryError::Failed(e) => e,
        shared::retry::RetryError::Cancelled => EsError::Transport("cancelled".into()),
    })
}

/// `text` cut to at most `max` bytes on a character boundary (error
/// bodies are often Korean: a byte cut inside a character would panic).
pub fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// One document as `_mget` returned it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The index holds it, at this (external) version.
    Found {
        /// Its version.
        version: u64,
        /// Its `_source`.
        source: serde_json::Map<String, Value>,
    },
    /// The index does not hold it.
    Missing,
}

/// Reads `docs` (index or alias, id) with one realtime `_mget`: a write
/// acknowledged before is always seen, refreshed or not. A per-document
/// error (a missing index, a closed one) fails the whole call, with its
/// type in the message, since the caller cannot decide on a partial answer.
pub async fn mget(es: &Elasticsearch, docs: &[(String, String)]) -> Result<Vec<Fetched>, EsError> {
    let body = serde_json::json!({
        "docs": docs.iter().map(|(index, id)| serde_json::json!({"_index": index, "_id": id})).collect::<Vec<_>>()
    });
    let out = call_ok(es, Method::Post, "/_mget?realtime=true", Some(&body)).await?;
    let answers = out
        .get("docs")
        .and_then(Value::as_array)
        .filter(|a| a.len() == docs.len())
        .ok_or_else(|| EsError::Status {
            what: "POST /_mget".into(),
            status: 200,
            body: shorten(format!("unexpected answer: {out}"), 2000),
        })?;
    answers
        .iter()
        .map(|d| {
            if let Some(e) = d.get("error") {
                return Err(EsError::Status {
                    what: "POST /_mget".into(),
                    status: 200,
                    body: shorten(format!("document error: {e}"), 2000),
                });
            }
            match (d.get("found").and_then(Value::as_bool), d.get("_source")) {
                (Some(true), Some(Value::Object(source))) => Ok(Fetched::Found {
                    version: d.get("_version").and_then(Value::as_u64).unwrap_or(0),
                    source: source.clone(),
                }),
                (Some(true), _) => Err(EsError::Refused(format!(
                    "document {} has no _source: patches need _source enabled",
                    d.get("_id").unwrap_or(&Value::Null)
                ))),
                _ => Ok(Fetched::Missing),
            }
        })
        .collect()
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// Whether the cluster answers `GET /`.
pub async fn ping(es: &Elasticsearch) -> bool {
    matches!(call(es, Method::Get, "/", None).await, Ok((200, _)))
}

/// The concrete indices behind `alias` (empty when the alias is missing).
pub async fn alias_indices(es: &Elasticsearch, alias: &str) -> Result<Vec<String>, EsError> {
    let (status, body) = call(es, Method::Get, &format!("/_alias/{alias}"), None).await?;
    match status {
        404 => Ok(Vec::new()),
        200 => Ok(body
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()),
        s => Err(EsError::Status {
            what: format!("GET /_alias/{alias}"),
            status: s,
            body: body.to_string(),
        }),
    }
}

/// Whether a concrete index (or alias) named `name` exists.
pub async fn index_exists(es: &Elasticsearch, name: &str) -> Result<bool, EsError> {
    let (status, body) = call(es, Method::Head, &format!("/{name}"), None).await?;
    match status {
        200 => Ok(true),
        404 => Ok(false),
        s => Err(EsError::Status {
            what: format!("HEAD /{name}"),
            status: s,
            body: body.to_string(),
        }),
    }
}

/// Refreshes `index` so a following query sees every acknowledged write.
pub async fn refresh(es: &Elasticsearch, index: &str) -> Result<(), EsError> {
    call_ok(es, Method::Post, &format!("/{index}/_refresh"), None)
        .await
        .map(|_| ())
}

/// Deletes what `query` matches in `index` (conflicts proceed: a document
/// changed meanwhile is newer and must stay). Returns the number deleted.
pub async fn delete_by_query(
    es: &Elasticsearch,
    index: &str,
    query: &Value,
) -> Result<u64, EsError> {
    let body = serde_json::json!({ "query": query });
    let out = call_ok(
        es,
        Method::Post,
        &format!("/{index}/_delete_by_query?conflicts=proceed&refresh=true"),
        Some(&body),
    )
    .await?;
    Ok(out.get("deleted").and_then(Value::as_u64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_of_errors() {
        assert_eq!(
            EsError::Transport("x".into()).class(),
            ErrorClass::Retryable
        );
        let s = |status| EsError::Status {
            what: "x".into(),
            status,
            body: String::new(),
        };
        assert_eq!(s(503).class(), ErrorClass::Retryable);
        assert_eq!(s(429).class(), ErrorClass::Retryable);
        assert_eq!(s(400).class(), ErrorClass::Fatal);
        assert_eq!(EsError::Refused("no".into()).class(), ErrorClass::Fatal);
        assert_eq!(EsError::Tls("x".into()).class(), ErrorClass::Fatal);
        let unauthorized = s(401).to_string();
        assert!(
            unauthorized.contains("401 (Elasticsearch authentication failed"),
            "{unauthorized}"
        );
        assert!(!s(404).to_string().contains("authentication"));
    }

    #[test]
    fn shorten_cuts_on_a_character_boundary() {
        // 2000 bytes fall inside a three-byte Hangul syllable.
        let korean = "가".repeat(1000);
        let cut = shorten(korean.clone(), 2000);
        assert_eq!(cut.len(), 1998);
        assert!(korean.starts_with(&cut));
        assert_eq!(shorten("short".into(), 2000), "short");
    }

    #[test]
    fn client_builds_without_io() {
        let cfg = ElasticsearchConfig {
            url: "http://127.0.0.1:1".into(),
            username: Some("u".into()),
            password: Some(shared::config::Secret::new("p")),
            password_file: None,
            api_key: None,
            api_key_file: None,
            ca_file: None,
            request_timeout_ms: 10,
        };
        assert!(client(&cfg).is_ok());
    }

    fn refusal(cfg: &ElasticsearchConfig) -> String {
        match client(cfg) {
            Ok(_) => panic!("client built from {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unreadable_credential_and_ca_files_are_named() {
        let base = ElasticsearchConfig {
            url: "https://127.0.0.1:1".into(),
            username: Some("u".into()),
            password: None,
            password_file: Some("/nonexistent/es_pw".into()),
            api_key: None,
            api_key_file: None,
            ca_file: None,
            request_timeout_ms: 10,
        };
        let err = refusal(&base);
        assert!(err.contains("elasticsearch.password_file"), "{err}");
        let not_pem = std::env::temp_dir().join(format!("es-ca-{}", std::process::id()));
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let cfg = ElasticsearchConfig {
            password: Some(Secret::new("p")),
            password_file: None,
            ca_file: Some(not_pem.clone()),
            ..base
        };
        let err = refusal(&cfg);
        assert!(err.contains("elasticsearch.ca_file"), "{err}");
        let _ = std::fs::remove_file(&not_pem);
    }
}
