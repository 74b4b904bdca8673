//! Elasticsearch calls (plain JSON over the `elasticsearch` crate's
//! transport) and a minimal HTTP GET for the binaries' admin ports.

use anyhow::{bail, Context as _, Result};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A client of one node.
#[derive(Clone)]
pub struct Es {
    client: elasticsearch::Elasticsearch,
}

impl Es {
    /// A client for `url`.
    pub fn new(url: &str) -> Result<Self> {
        let pool = SingleNodeConnectionPool::new(url.parse()?);
        let t = TransportBuilder::new(pool)
            .enable_meta_header(false)
            .build()?;
        Ok(Self {
            client: elasticsearch::Elasticsearch::new(t),
        })
    }

    /// One request: status and JSON answer (`Null` if not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value)> {
        let r = self
            .client
            .send(
                method,
                path,
                elasticsearch::http::headers::HeaderMap::new(),
                None::<&()>,
                body,
                Some(Duration::from_secs(120)),
            )
            .await
            .with_context(|| path.to_string())?;
        let status = r.status_code().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A JSON request that must succeed.
    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (s, v) = self
            .call(method, path, body.map(|b| b.to_string().into_bytes()))
            .await?;
        if s >= 300 {
            bail!("{path}: HTTP {s}: {v}");
        }
        Ok(v)
    }
}

/// `GET http://{addr}{path}` with HTTP/1.0: status and body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sum of the samples of a metric family in OpenMetrics text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
