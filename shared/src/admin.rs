//! The admin HTTP server of both binaries: `/healthz` (the process runs),
//! `/readyz` (it can do its work), `/status` (JSON state of every stream),
//! `/metrics` (Prometheus / OpenMetrics text), plus routes a binary adds.
//!
//! It binds to 127.0.0.1 by default. Mutating routes are wrapped by
//! [`protected`]: they need `Authorization: Bearer <admin.token>` and are
//! switched off (403) when no token is configured; an empty token (or token
//! file) or a `change-me...` placeholder is refused at start-up. Request
//! bodies are bounded, a client must send a request's header within
//! [`ServeLimits::header_read_timeout`], and at most
//! [`ServeLimits::max_connections`] connections are served at once (more
//! wait in the listen backlog), so slow clients (slowloris) cannot take
//! the server, or the process's file descriptors, away.

use crate::config::{ConfigError, Secret};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The start of a placeholder secret (`change-me-admin-token`), as
/// deployment templates write them (this project's `deploy/env.example`
/// did, before the compose secrets of `deploy/make-secrets.sh`).
pub const PLACEHOLDER_PREFIX: &str = "change-me";

/// `[admin]` section of both configs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP server (`127.0.0.1:PORT`; `0.0.0.0:PORT`
    /// only behind a network you trust).
    pub listen: SocketAddr,
    /// Bearer token for mutating endpoints; none set turns them off.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token (instead of `token`), e.g. a docker secret.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

impl AdminConfig {
    /// Default for a binary listening on `port`.
    pub fn on_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            token: None,
            token_file: None,
        }
    }

    /// Checks the section (no I/O).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.is_some() && self.token_file.is_some() {
            return Err(ConfigError::invalid(
                "admin.token_file",
                "set either token or token_file",
            ));
        }
        if let Some(t) = &self.token {
            check_token("admin.token", t.expose())?;
        }
        Ok(())
    }

    /// The token, reading `token_file` if that is how it was given. An
    /// empty file, or one holding the placeholder, is an error naming the
    /// key and the file.
    pub fn resolve_token(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.token_file {
            let text = crate::config::read_secret_file("admin.token_file", path)?;
            let token = text.expose().trim();
            check_token("admin.token_file", token).map_err(|e| match e {
                ConfigError::Invalid { key, message } => ConfigError::Invalid {
                    key,
                    message: format!("{}: {message}", path.display()),
                },
                other => other,
            })?;
            return Ok(Some(Secret::new(token)));
        }
        Ok(self.token.clone())
    }
}

/// A usable token: not empty, not a `change-me...` placeholder.
fn check_token(key: &str, token: &str) -> Result<(), ConfigError> {
    if token.trim().is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if token
        .trim()
        .to_ascii_lowercase()
        .starts_with(PLACEHOLDER_PREFIX)
    {
        return Err(ConfigError::invalid(
            key,
            "is still a change-me... placeholder: set a random token (e.g. `openssl rand \
             -hex 24`, or deploy/make-secrets.sh), or no token to turn the mutating \
             endpoints off",
        ));
    }
    Ok(())
}

/// What the admin server asks the running binary.
pub trait AdminState: Send + Sync + 'static {
    /// Whether the binary can do its work now, and a JSON explanation.
    fn readiness(&self) -> (bool, serde_json::Value);
    /// The JSON status document.
    fn status(&self) -> serde_json::Value;
}

#[derive(Clone)]
struct Shared {
    state: Arc<dyn AdminState>,
    registry: Arc<Registry>,
}

/// The base router; `extra` routes (already [`protected`] where they
/// mutate) are merged in.
pub fn router(state: Arc<dyn AdminState>, registry: Arc<Registry>, extra: Router) -> Router {
    let shared = Shared { state, registry };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(extra)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn readyz(State(s): State<Shared>) -> Response {
    let (ready, detail) = s.state.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({ "ready": ready, "detail": detail })),
    )
        .into_response()
}

async fn status(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(s.state.status())
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Wraps mutating routes: bearer token required, off without a token.
pub fn protected(routes: Router, token: Option<Secret>) -> Router {
    let token = Arc::new(token);
    routes.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let Some(expected) = token.as_ref() else {
                    return (
                        StatusCode::FORBIDDEN,
                        "mutating admin endpoints are off: set admin.token to enable them\n",
                    )
                        .into_response();
                };
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if given
                    .is_some_and(|g| constant_time_eq(g.as_bytes(), expected.expose().as_bytes()))
                {
                    next.run(req).await
                } else {
                    (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response()
                }
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds `addr` (an error names the address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot bind admin server to {addr}: {e}"))
    })
}

/// Limits of the admin HTTP server against slow or too many clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A client must send a request's whole header within this, or its
    /// connection is closed (also applies to an idle keep-alive connection
    /// waiting for its next request).
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        // A scrape or an operator's curl sends its header in milliseconds;
        // Prometheus and a few operators need a handful of connections.
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Serves `router` on `listener` until `cancel` fires, with the default
/// [`ServeLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, cancel, ServeLimits::default()).await
}

/// Serves `router` on `listener` until `cancel` fires: HTTP/1.1, one task
/// per connection, within `limits`. On `cancel`, requests under way get
/// up to 5 s to finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, a connection reset before
                    // accept: the server goes on.
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "admin connection closed");
                    }
                }
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(6), connections.wait()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn token_file(content: &str) -> (AdminConfig, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "admin-token-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&path, content).unwrap();
        let mut cfg = AdminConfig::on_port(1);
        cfg.token_file = Some(path.clone());
        (cfg, path)
    }

    #[test]
    fn an_empty_token_file_is_refused_by_name() {
        for content in ["", "\n", "   \n"] {
            let (cfg, path) = token_file(content);
            let err = cfg.resolve_token().unwrap_err().to_string();
            assert!(
                err.contains("admin.token_file") && err.contains(&path.display().to_string()),
                "{content:?}: {err}"
            );
            assert!(err.contains("empty"), "{content:?}: {err}");
            let _ = std::fs::remove_file(path);
        }
        let (cfg, path) = token_file("  tok3n-from-file \n");
        assert_eq!(
            cfg.resolve_token().unwrap().unwrap().expose(),
            "tok3n-from-file"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_placeholder_token_is_refused() {
        let mut cfg = AdminConfig::on_port(1);
        cfg.token = Some(Secret::new("change-me-admin-token"));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("admin.token") && err.contains("placeholder"),
            "{err}"
        );
        // The old deploy/env.example's value, read from a file.
        let (cfg, path) = token_file("Change-Me-admin-token\n");
        let err = cfg.resolve_token().unwrap_err().to_string();
        assert!(
            err.contains("admin.token_file") && err.contains("placeholder"),
            "{err}"
        );
        let _ = std::fs::remove_file(path);
        cfg_ok_with("a3f0c9d2e1b4");
    }

    fn cfg_ok_with(token: &str) {
        let mut cfg = AdminConfig::on_port(1);
        cfg.token = Some(Secret::new(token));
        cfg.validate().unwrap();
    }

    #[test]
    fn token_and_file_are_exclusive() {
        let mut cfg = AdminConfig::on_port(1);
        cfg.token = Some(Secret::new("t"));
        cfg.token_file = Some("/x".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admin.token_file"));
    }
}
