//! Elasticsearch calls (plain JSON over the `elasticsearch` crate's
//! transport), and the index housekeeping between trials: fresh indices
//! from `config/indices/`, deletion, waiting for merges to finish.

use anyhow::{bail, Context as _, Result};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

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

/// Index files of the two collections in `config/indices/`: `(name, file)`.
pub const INDEX_FILES: [(&str, &str); 2] = [("cards", "cards.json"), ("replies", "replies.json")];

impl Es {
    /// Creates `{prefix}-cards` and `{prefix}-replies` from the index files
    /// in `repo/config/indices/` and waits for them to be green.
    pub async fn create_indices(&self, repo: &Path, prefix: &str) -> Result<()> {
        for (name, file) in INDEX_FILES {
            let body = std::fs::read(repo.join("config/indices").join(file))
                .with_context(|| format!("read config/indices/{file}"))?;
            let (s, v) = self
                .call(Method::Put, &format!("/{prefix}-{name}"), Some(body))
                .await?;
            if s >= 300 {
                bail!("create index {prefix}-{name}: HTTP {s}: {v}");
            }
        }
        self.json(
            Method::Get,
            &format!("/_cluster/health/{prefix}-*?wait_for_status=green&timeout=30s"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Deletes the indices matching `{prefix}-*` (best effort).
    pub async fn delete_indices(&self, prefix: &str) {
        let _ = self
            .call(Method::Delete, &format!("/{prefix}-*"), None)
            .await;
    }

    /// Merges running on the node(s) now.
    pub async fn merges_running(&self) -> Result<u64> {
        let v = self
            .json(Method::Get, "/_nodes/stats/indices/merge", None)
            .await?;
        Ok(v["nodes"]
            .as_object()
            .map(|nodes| {
                nodes
                    .values()
                    .filter_map(|n| n["indices"]["merges"]["current"].as_u64())
                    .sum()
            })
            .unwrap_or(0))
    }

    /// Waits (up to `timeout`) until no merge runs, so that a trial does not
    /// share the node with the merging of the one before; returns the
    /// seconds waited.
    pub async fn wait_merges(&self, timeout: Duration) -> Result<f64> {
        let t0 = Instant::now();
        while self.merges_running().await? > 0 && t0.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}
