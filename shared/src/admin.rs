//! The admin HTTP server of both binaries: `/healthz` (the process runs),
//! `/readyz` (it can do its work), `/status` (JSON state of every stream),
//! `/metrics` (Prometheus / OpenMetrics text), plus routes a binary adds.
//!
//! It binds to 127.0.0.1 by default. Mutating routes are wrapped by
//! [`protected`]: they need `Authorization: Bearer <admin.token>` and are
//! switched off when no token is configured. Request bodies are bounded.

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
use tokio_util::sync::CancellationToken;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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
        if matches!(&self.token, Some(t) if t.is_empty()) {
            return Err(ConfigError::invalid("admin.token", "must not be empty"));
        }
        Ok(())
    }

    /// The token, reading `token_file` if that is how it was given.
    pub fn resolve_token(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid("admin.token_file", format!("{}: {e}", path.display()))
            })?;
            return Ok(Some(Secret::new(text.trim())));
        }
        Ok(self.token.clone())
    }
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

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
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
