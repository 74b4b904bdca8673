//! `mongo-source`: MongoDB change streams into Kafka.
//!
//! [`run`] starts one [`stream`] per configured collection, each with its own
//! transactional producer, plus the admin HTTP server; it returns when the
//! shutdown token fires and every stream has committed its batch in flight.
//!
//! Delivery guarantee: exactly once into Kafka for read_committed consumers
//! when the broker supports transactions (the resume position is written in
//! the same transaction as the events it covers), at least once otherwise.

pub mod admin;
pub mod change;
pub mod cluster;
pub mod config;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod status;
pub mod stream;

use anyhow::Context as _;
use config::SourceConfig;
use shared::shutdown::{CancellationToken, TaskTracker};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for streams to commit their batch in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs until `shutdown` fires. The config must have passed `validate()`.
pub async fn run(cfg: SourceConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    let mut specs = cfg.streams();
    // Sorted by name: the lease of `specs[p]` is partition `p` everywhere.
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let instance = cfg
        .cluster
        .instance_id
        .clone()
        .unwrap_or_else(default_instance_id);
    let members = Arc::new(cluster::members::Members::new(
        cfg.cluster.session_timeout_ms * 2,
    ));
    let health = Arc::new(shared::supervise::UnitHealth::default());
    let board = Arc::new(status::StatusBoard {
        streams: specs
            .iter()
            .map(|s| {
                Arc::new(status::StreamStatus::new(
                    &s.name,
                    &s.topic,
                    metrics.clone(),
                ))
            })
            .collect(),
        mongo_connected: Default::default(),
        instance: instance.clone(),
        members: members.clone(),
        units: health.clone(),
    });

    let token = cfg.admin.resolve_token()?;
    cfg.kafka.client.read_property_files()?;
    let listener = shared::admin::bind(cfg.admin.listen).await?;
    tracing::info!(listen = %cfg.admin.listen, "admin server listening");
    let worker_id = cfg.admin.listen.to_string();
    let router = shared::admin::router(
        board.clone(),
        Arc::new(registry),
        admin::public_routes(board.clone(), worker_id).merge(shared::admin::protected(
            admin::routes(board.clone()),
            token,
        )),
    );
    let tasks = TaskTracker::new();
    let admin_cancel = CancellationToken::new();
    tasks.spawn(admin_server(
        listener,
        router,
        cfg.clone(),
        health.clone(),
        admin_cancel.clone(),
    ));

    let mongo_opts = mongo_options(&cfg).await?;
    let mongo = mongodb::Client::with_options(mongo_opts).context("mongodb client")?;
    let topics = Arc::new(kafka::topics::Topics::new(&cfg.kafka).context("kafka admin client")?);

    // Topics and MongoDB: retried until they answer (or shutdown), so the
    // binary can start before its dependencies.
    let event_topics: Vec<String> = specs.iter().map(|s| s.topic.clone()).collect();
    let startup = shared::retry::RetryConfig {
        max_elapsed_ms: cfg.startup_timeout_ms,
        ..cfg.retry.clone()
    };
    let mongo_name = shared::config::redact_uri(cfg.mongodb.uri.expose());
    let ready = shared::retry::retry(
        &startup,
        &shutdown,
        |e: &error::StreamError, delay| {
            tracing::warn!(error = %e, ?delay, "waiting for MongoDB and Kafka");
            // Visible on /status too: STARTING with the reason it is stuck.
            for s in &board.streams {
                s.set_error(&format!("start-up: {e}"));
            }
        },
        || async {
            mongo
                .database(&cfg.mongodb.database)
                .run_command(mongodb::bson::doc! {"ping": 1})
                .await
                .map_err(error::StreamError::from_mongo)?;
            board.mongo_connected.store(true, Ordering::Relaxed);
            // A refused login or TLS handshake is fatal here, with a clear
            // message, instead of looking like a broker that never answers.
            let access = kafka::client_config(&cfg.kafka);
            let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
            tokio::task::spawn_blocking(move || shared::kafka_access::check(&access, timeout))
                .await
                .map_err(|e| error::StreamError::Internal(e.to_string()))??;
            topics.ensure(&cfg.topics, &event_topics).await?;
            topics.ensure_cluster(&cfg, event_topics.len()).await
        },
    )
    .await;
    match ready {
        Ok(()) => {}
        Err(shared::retry::RetryError::Cancelled) => {
            admin_cancel.cancel();
            tasks.close();
            tasks.wait().await;
            return Ok(());
        }
        Err(shared::retry::RetryError::Failed(e)) => {
            if let error::StreamError::Mongo(m) = &e {
                if error::is_mongo_auth(m) {
                    return Err(anyhow::anyhow!(e)).context(format!(
                        "cannot start: MongoDB authentication failed at {mongo_name} (check \
                         mongodb.username and mongodb.password / password_file, or the URI's \
                         user and authSource)"
                    ));
                }
            }
            let what = match &e {
                error::StreamError::Mongo(_) => format!("MongoDB at {mongo_name}"),
                _ => format!("Kafka at {}", cfg.kafka.client.bootstrap_servers),
            };
            return Err(anyhow::anyhow!(e)).context(format!(
                "cannot start: {what} did not answer or refused (startup_timeout_ms = {})",
                cfg.startup_timeout_ms
            ));
        }
    }

    let make: Arc<cluster::MakeCtx> = {
        let (cfg, mongo, topics, metrics, board) = (
            cfg.clone(),
            mongo.clone(),
            topics.clone(),
            metrics.clone(),
            board.clone(),
        );
        Arc::new(move |spec, cancel| {
            let status = board.get(&spec.name).cloned().unwrap_or_else(|| {
                Arc::new(status::StreamStatus::new(
                    &spec.name,
                    &spec.topic,
                    metrics.clone(),
                ))
            });
            stream::StreamCtx {
                spec,
                cfg: cfg.clone(),
                mongo: mongo.clone(),
                topics: topics.clone(),
                status,
                metrics: metrics.clone(),
                cancel,
            }
        })
    };
    let members_cancel = CancellationToken::new();
    let reader =
        cluster::members::read(&cfg, members, members_cancel.clone()).context("members reader")?;
    tasks.spawn({
        let (cfg, instance, board, cancel) = (
            cfg.clone(),
            instance.clone(),
            board.clone(),
            members_cancel.clone(),
        );
        shared::supervise::run(
            "members publisher",
            health.clone(),
            &cfg.retry.clone(),
            members_cancel.clone(),
            move || {
                cluster::members::publish(
                    cfg.clone(),
                    instance.clone(),
                    board.clone(),
                    cancel.clone(),
                )
            },
        )
    });
    let coordinator = tokio::spawn({
        let (cfg, board, stop) = (cfg.clone(), board.clone(), shutdown.clone());
        shared::supervise::run(
            "coordinator",
            health.clone(),
            &cfg.retry.clone(),
            shutdown.clone(),
            move || {
                // One life of the coordinator: if it dies (panics), its
                // streams and its lease membership end with it (the guard
                // cancels them), and the next life joins the group anew.
                let life = stop.child_token();
                let guard = life.clone().drop_guard();
                let run = cluster::coordinate(
                    cfg.clone(),
                    instance.clone(),
                    specs.clone(),
                    board.clone(),
                    make.clone(),
                    life,
                );
                async move {
                    let _guard = guard;
                    if let Err(e) = run.await {
                        tracing::error!(error = format!("{e:#}"), "stream coordinator failed");
                    }
                }
            },
        )
    });
    tasks.spawn({
        let (board, cancel) = (board.clone(), shutdown.clone());
        shared::supervise::run(
            "gauges",
            health.clone(),
            &cfg.retry,
            shutdown.clone(),
            move || {
                let (gauges, cancel) = (board.clone(), cancel.clone());
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            _ = tick.tick() => gauges.streams.iter().for_each(|s| s.refresh_gauges()),
                            () = cancel.cancelled() => return,
                        }
                    }
                }
            },
        )
    });

    shutdown.cancelled().await;
    tracing::info!("shutting down: committing batches in flight");
    tasks.close();
    // The streams stop (batch committed) inside the coordinator, which then
    // gives the leases back; the admin server stays up until then.
    if tokio::time::timeout(SHUTDOWN_GRACE, coordinator)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "streams did not stop in time");
    }
    members_cancel.cancel();
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    admin_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The admin server, supervised: if it dies it is started again (bound
/// anew), and `/readyz` answers 503 meanwhile (when it answers at all).
fn admin_server(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cfg: Arc<SourceConfig>,
    health: Arc<shared::supervise::UnitHealth>,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut first = Some(listener);
    let addr = cfg.admin.listen;
    let stop = cancel.clone();
    shared::supervise::run("admin server", health, &cfg.retry, cancel, move || {
        let (listener, router, stop) = (first.take(), router.clone(), stop.clone());
        async move {
            let listener = match listener {
                Some(l) => l,
                None => match shared::admin::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin server");
                        return;
                    }
                },
            };
            if let Err(e) = shared::admin::serve(listener, router, stop).await {
                tracing::error!(error = %e, "admin server");
            }
        }
    })
}

/// `{host}-{pid}`: unique per process on a host, readable on /status.
fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mongo-source".into());
    format!("{host}-{}", std::process::id())
}

async fn mongo_options(cfg: &SourceConfig) -> anyhow::Result<mongodb::options::ClientOptions> {
    let uri = cfg.mongodb.uri.expose();
    let redacted = shared::config::redact_uri(uri);
    let mut opts = mongodb::options::ClientOptions::parse(uri)
        .await
        .map_err(|e| {
            let msg = shared::config::scrub(&e.kind.to_string(), uri);
            anyhow::anyhow!("mongodb.uri {redacted}: {msg}")
        })?;
    opts.app_name.get_or_insert_with(|| "mongo-source".into());
    let password = match (&cfg.mongodb.password, &cfg.mongodb.password_file) {
        (Some(p), _) => Some(p.expose().to_string()),
        (None, Some(path)) => Some(
            shared::config::read_secret_file("mongodb.password_file", path)?
                .expose()
                .to_string(),
        ),
        (None, None) => None,
    };
    if cfg.mongodb.username.is_some() || password.is_some() {
        let cred = opts.credential.get_or_insert_with(Default::default);
        if let Some(u) = &cfg.mongodb.username {
            cred.username = Some(u.clone());
        }
        if password.is_some() {
            cred.password = password;
        }
    }
    if let Some(ca) = &cfg.mongodb.tls_ca_file {
        let tls = mongodb::options::TlsOptions::builder()
            .ca_file_path(ca.clone())
            .build();
        opts.tls = Some(mongodb::options::Tls::Enabled(tls));
    }
    opts.server_selection_timeout = Some(Duration::from_millis(
        cfg.mongodb.server_selection_timeout_ms,
    ));
    tracing::info!(uri = %redacted, "mongodb");
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_mongodb_password_file_is_refused_by_name() {
        let path = std::env::temp_dir().join(format!("mongo-source-pw-{}", std::process::id()));
        std::fs::write(&path, "\n").unwrap();
        let text = format!(
            "[mongodb]\nuri = \"mongodb://127.0.0.1:1\"\ndatabase = \"d\"\nusername = \"u\"\n\
             password_file = {:?}\n[kafka]\nbootstrap_servers = \"k:1\"\n\
             [topics]\nprefix = \"p\"\n[[collections]]\nname = \"c\"\n",
            path.display().to_string()
        );
        let cfg: SourceConfig =
            shared::config::load_str(&text, std::path::Path::new("t.toml"), "NONE", Vec::new())
                .unwrap();
        let err = mongo_options(&cfg).await.unwrap_err().to_string();
        assert!(
            err.contains("mongodb.password_file") && err.contains("is empty"),
            "{err}"
        );
        std::fs::write(&path, "pw\n").unwrap();
        let opts = mongo_options(&cfg).await.unwrap();
        let cred = opts.credential.unwrap();
        assert_eq!(cred.password.as_deref(), Some("pw"));
        let _ = std::fs::remove_file(path);
    }
}
