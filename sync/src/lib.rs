//! `es-sync`: consumes the change-event topics of `mongo-source` (or of the
//! MongoDB Kafka Source Connector) in a consumer group and bulk-indexes
//! them into Elasticsearch, so that every document ends in its latest
//! MongoDB state whatever was redelivered, replayed, reordered or retried.
//!
//! Stages, each module stating its delivery guarantee:
//! [`event`] (decode) -> [`action`] (external-versioned index/delete) ->
//! [`bulk`] (batch, write with [`encode`], send, classify, retry) -> [`consumer`] (order, offsets,
//! backpressure, rebalance) with [`dlq`] for what cannot be indexed, and
//! [`freshness`] measuring MongoDB commit -> searchable. The
//! end-to-end guarantee is at-least-once delivery made idempotent by
//! Elasticsearch external versions: an older event can never overwrite a
//! newer state.

pub mod action;
pub mod analysis;
pub mod bulk;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod elastic;
pub mod encode;
pub mod event;
pub mod freshness;
pub mod index_bootstrap;
pub mod metrics;
pub mod offsets;
pub mod ops;
pub mod patch;
pub mod record;
pub mod rollup;
pub mod status;
#[doc(hidden)]
pub mod test_faults;

pub use config::SyncConfig;

use anyhow::Context as _;
use shared::admin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs es-sync until `shutdown` fires: bootstraps the aliases, serves the
/// admin endpoints and consumes.
pub async fn run(config: SyncConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let status = Arc::new(status::SyncStatus::new(&config.kafka.group_id));
    run_with_status(config, shutdown, status).await
}

/// Like [`run`], with a caller-held status (used by `reindex` to see when
/// the new index caught up).
pub async fn run_with_status(
    config: SyncConfig,
    shutdown: CancellationToken,
    status: Arc<status::SyncStatus>,
) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let es = elastic::client(&config.elasticsearch)?;

    let rollup = rollup::Plan::of(&config);
    for t in &config.topics {
        let file = index_bootstrap::read_index_file(&t.index_file)?;
        let result = shared::retry::retry(
            &config.retry,
            &shutdown,
            |e, d| tracing::warn!(alias = %t.alias, error = %e, delay_ms = d.as_millis() as u64, "index bootstrap failed; retrying"),
            || async {
                if !matches!(
                    index_bootstrap::ensure(&es, &t.alias, &file).await?,
                    index_bootstrap::Bootstrap::Created(_)
                ) {
                    if let Err(e) = index_bootstrap::add_new_fields(&es, &t.alias, &file).await {
                        // Children of a roll-up need `_sync.parent` (the
                        // mapping of `_sync` is strict): without it every
                        // write would be refused.
                        if rollup.as_ref().is_some_and(|p| p.child_index == t.alias) {
                            return Err(elastic::EsError::Refused(format!(
                                "the mapping of {} cannot take the fields of {} ({e}); the \
                                 roll-up needs _sync.parent: rebuild the index (es-sync reindex)",
                                t.alias,
                                t.index_file.display()
                            )));
                        }
                        tracing::warn!(alias = %t.alias, error = %e, "the live mapping keeps differing fields from the index file (a reindex takes them)");
                    }
                }
                analysis::inspect(&es, &t.alias, &file).await
            },
        )
        .await;
        match result {
            Ok(a) => {
                analysis::log(&a);
                status.set_index_analysis(a);
            }
            Err(shared::retry::RetryError::Cancelled) => return Ok(()),
            Err(shared::retry::RetryError::Failed(e)) => {
                return Err(e).with_context(|| format!("bootstrap of alias {}", t.alias))
            }
        }
    }
    status.set_elasticsearch_ok(true);
    if !kafka_access(&config, &shutdown).await? {
        return Ok(());
    }

    let admin_stop = CancellationToken::new();
    let token = config.admin.resolve_token()?;
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(4);
    let wait = std::time::Duration::from_millis(config.consumer.shutdown_timeout_ms + 10_000);
    let extra = admin::protected(control_routes(control_tx, wait), token);
    let listener = admin::bind(config.admin.listen).await?;
    let local = listener.local_addr().ok();
    tracing::info!(admin = ?local, "admin server listening");
    let router = admin::router(status.clone(), Arc::new(registry), extra);
    let admin_task = tokio::spawn(admin::serve(listener, router, admin_stop.clone()));

    let fresh_stop = CancellationToken::new();
    let fresh_task = tokio::spawn(freshness::supervise(
        es.clone(),
        config.freshness.clone(),
        config.topics.iter().map(|t| t.alias.clone()).collect(),
        metrics.clone(),
        status.clone(),
        fresh_stop.clone(),
    ));

    let out = consumer::run(config.clone(), es, metrics, status, control_rx, shutdown).await;
    fresh_stop.cancel();
    let _ = fresh_task.await;
    admin_stop.cancel();
    let _ = admin_task.await;
    out.context("kafka consumer")
}

/// Checks the Kafka settings before consuming: property files readable,
/// then one metadata request, retried while the broker does not answer;
/// a refused login or TLS handshake is fatal at once (see
/// [`shared::kafka_access`]). `false` when shutdown came first.
async fn kafka_access(config: &SyncConfig, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    config.kafka.client.read_property_files()?;
    let cc = consumer::consumer_config(config, &config.kafka.group_id);
    let timeout = std::time::Duration::from_millis(config.kafka.operation_timeout_ms);
    let result = shared::retry::retry(
        &config.retry,
        shutdown,
        |e, d| tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "waiting for Kafka"),
        || {
            let cc = cc.clone();
            async move {
                tokio::task::spawn_blocking(move || shared::kafka_access::check(&cc, timeout))
                    .await
                    .unwrap_or_else(|e| {
                        Err(shared::kafka_access::KafkaAccessError::Config(
                            e.to_string(),
                        ))
                    })
            }
        },
    )
    .await;
    match result {
        Ok(()) => Ok(true),
        Err(shared::retry::RetryError::Cancelled) => Ok(false),
        Err(shared::retry::RetryError::Failed(e)) => {
            tracing::error!(error = %e, "cannot use Kafka");
            Err(e).context("kafka")
        }
    }
}

/// `POST /group/leave` and `POST /group/rejoin` (token-protected): used by
/// `es-sync replay --coordinate` to move a running group's offsets.
fn control_routes(
    tx: tokio::sync::mpsc::Sender<consumer::Control>,
    wait: std::time::Duration,
) -> axum::Router {
    use axum::http::StatusCode;
    async fn ask(
        tx: tokio::sync::mpsc::Sender<consumer::Control>,
        wait: std::time::Duration,
        make: fn(consumer::ControlReply) -> consumer::Control,
    ) -> (StatusCode, String) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(make(reply)).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "consumer not running\n".into(),
            );
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(Ok(()))) => (StatusCode::OK, "ok\n".into()),
            Ok(Ok(Err(e))) => (StatusCode::CONFLICT, format!("{e}\n")),
            Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "consumer stopped\n".into()),
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "in-flight work did not finish in time\n".into(),
            ),
        }
    }
    let (tx2, wait2) = (tx.clone(), wait);
    let (tx3, tx4) = (tx.clone(), tx.clone());
    axum::Router::new()
        .route(
            "/consumer/pause",
            axum::routing::post(move || ask(tx3.clone(), wait, consumer::Control::Pause)),
        )
        .route(
            "/consumer/resume",
            axum::routing::post(move || ask(tx4.clone(), wait, consumer::Control::Resume)),
        )
        .route(
            "/group/leave",
            axum::routing::post(move || ask(tx.clone(), wait, consumer::Control::Leave)),
        )
        .route(
            "/group/rejoin",
            axum::routing::post(move || ask(tx2.clone(), wait2, consumer::Control::Rejoin)),
        )
}
