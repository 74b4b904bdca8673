//! The background task of [`super`]: every `freshness.poll_interval_ms`
//! it takes the acknowledged documents in, reads the refresh statistics of
//! each alias with documents waiting (concurrently, one request per alias,
//! plus its refresh interval every [`SETTINGS_EVERY_MS`]), observes the
//! documents now searchable in `es_sync_freshness_seconds` and the
//! `/status` window, and publishes the window on `/status`.
//!
//! Supervised ([`supervise`]): a panic is logged, counted in
//! `es_sync_task_panics_total` and the task restarts (what it waited for
//! is lost: those documents are not measured). A statistics read that
//! fails is logged once per failure streak and shown on `/status`; the
//! documents keep waiting (bounded) until a read succeeds.

use super::pending::Pending;
use super::refresh::{self, Copies, Interval, QUIET_SLACK_MS};
use super::window::Window;
use super::{now_ms, Freshness, FreshnessConfig};
use crate::elastic;
use crate::metrics::{IndexLabels, Metrics};
use crate::status::{FreshnessStatus, SyncStatus};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the refresh interval of an alias's indices is read again.
const SETTINGS_EVERY_MS: i64 = 30_000;
/// Longest wait for one read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Refresh interval assumed while it could not be read (Elasticsearch's
/// default).
const DEFAULT_INTERVAL_MS: i64 = 1_000;
/// How often `/status` is updated, at most.
const PUBLISH_EVERY_MS: i64 = 500;

/// Runs the task until `stop` fires, restarting it after a panic (see the
/// module documentation). Returns at once when `freshness.enabled` is
/// false.
pub async fn supervise(
    es: Elasticsearch,
    cfg: FreshnessConfig,
    aliases: Vec<String>,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    stop: CancellationToken,
) {
    if !cfg.enabled {
        return;
    }
    metrics.freshness.switch_on();
    loop {
        let task = Task::new(es.clone(), cfg.clone(), &aliases, &metrics, status.clone());
        match tokio::spawn(task.run(stop.clone())).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                metrics.task_panics.inc();
                tracing::error!(error = %e, "the freshness task panicked; restarting it");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(_) => return,
        }
    }
}

/// What the task knows of one alias.
struct Alias {
    copies: Copies,
    pending: Pending,
    window: Window,
    /// Refresh interval per concrete index.
    intervals: HashMap<String, Interval>,
    intervals_read: Option<i64>,
    /// Why the last read failed, while it does.
    error: Option<String>,
}

/// One read of an alias: settings (when asked), statistics, and when the
/// statistics answered (ms).
struct Read {
    intervals: Option<Result<HashMap<String, Interval>, String>>,
    stats: Result<(refresh::Snapshot, i64), String>,
}

struct Task {
    es: Elasticsearch,
    cfg: FreshnessConfig,
    handle: Freshness,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    aliases: BTreeMap<String, Alias>,
    published: i64,
}

impl Task {
    fn new(
        es: Elasticsearch,
        cfg: FreshnessConfig,
        aliases: &[String],
        metrics: &Metrics,
        status: Arc<SyncStatus>,
    ) -> Self {
        let mut t = Self {
            es,
            handle: metrics.freshness.clone(),
            metrics: metrics.clone(),
            status,
            aliases: BTreeMap::new(),
            published: 0,
            cfg,
        };
        for a in aliases {
            t.alias(a);
        }
        t
    }

    fn alias(&mut self, name: &str) -> &mut Alias {
        let window_ms = self.cfg.window_seconds as i64 * 1000;
        self.aliases
            .entry(name.to_string())
            .or_insert_with(|| Alias {
                copies: Copies::default(),
                pending: Pending::default(),
                window: Window::new(window_ms),
                intervals: HashMap::new(),
                intervals_read: None,
                error: None,
            })
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A read that hangs (Elasticsearch frozen) must not hold up
            // the shutdown: both waits end when `stop` fires.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.tick() => {}
            }
        }
    }

    async fn tick(&mut self) {
        for (index, commits) in self.handle.take() {
            self.alias(&index).pending.take_in(&commits);
        }
        let now = now_ms();
        let due: Vec<(String, bool)> = self
            .aliases
            .iter()
            .filter(|(_, a)| !a.pending.is_empty())
            .map(|(name, a)| {
                let settings = a
                    .intervals_read
                    .is_none_or(|t| now - t >= SETTINGS_EVERY_MS);
                (name.clone(), settings)
            })
            .collect();
        for (name, settings) in &due {
            self.metrics
                .freshness_requests
                .get_or_create(&IndexLabels {
                    index: name.clone(),
                })
                .inc_by(1 + u64::from(*settings));
        }
        let reads =
            futures::future::join_all(due.iter().map(|(name, s)| read(&self.es, name, *s))).await;
        for ((name, _), r) in due.into_iter().zip(reads) {
            self.apply(&name, r, now);
        }
        let now = now_ms();
        if now - self.published >= PUBLISH_EVERY_MS {
            self.publish(now);
        }
    }

    fn apply(&mut self, name: &str, r: Read, asked: i64) {
        let poll = self.cfg.poll_interval_ms as i64;
        let histogram = self.metrics.freshness_seconds.clone();
        let a = self.alias(name);
        match r.intervals {
            Some(Ok(i)) => {
                a.intervals = i;
                a.intervals_read = Some(asked);
            }
            Some(Err(e)) => {
                // The default interval stays assumed; tried again later.
                tracing::debug!(alias = name, error = %e, "cannot read the refresh interval");
                a.intervals_read = Some(asked);
            }
            None => {}
        }
        let (snap, at) = match r.stats {
            Ok(s) => s,
            Err(e) => {
                if a.error.is_none() {
                    tracing::warn!(alias = name, error = %e, "cannot read the refresh statistics: freshness waits until they can be read");
                }
                a.error = Some(e);
                return;
            }
        };
        if a.error.take().is_some() {
            tracing::info!(alias = name, "refresh statistics readable again");
        }
        if snap.keys().any(|k| !a.intervals.contains_key(&k.index)) {
            a.intervals_read = None; // a new index behind the alias
        }
        let intervals = &a.intervals;
        a.copies.observe(&snap, at, |index| {
            let interval = intervals
                .get(index)
                .copied()
                .unwrap_or(Some(DEFAULT_INTERVAL_MS));
            interval.map(|ms| ms + poll + QUIET_SLACK_MS)
        });
        let done = a.pending.settle(&a.copies, at);
        if done.is_empty() {
            return;
        }
        let h = histogram.get_or_create(&IndexLabels {
            index: name.to_string(),
        });
        for bucket in done {
            for (commit, n) in bucket.commits.iter() {
                let ms = (at - commit).max(0) as u64;
                for _ in 0..n {
                    h.observe(ms as f64 / 1000.0);
                }
                a.window.add(at, ms, n);
            }
        }
    }

    fn publish(&mut self, now: i64) {
        self.published = now;
        let window_seconds = self.cfg.window_seconds;
        let view = self
            .aliases
            .iter_mut()
            .map(|(name, a)| {
                let s = a.window.summary(now);
                let status = FreshnessStatus {
                    window_seconds,
                    documents: s.map_or(0, |s| s.count),
                    p50_seconds: s.map(|s| s.p50_ms as f64 / 1000.0),
                    p99_seconds: s.map(|s| s.p99_ms as f64 / 1000.0),
                    pending_documents: a.pending.documents(),
                    error: a.error.clone(),
                };
                (name.clone(), status)
            })
            .collect();
        self.status.set_freshness(view);
    }
}

/// Reads the statistics (and, when `settings`, the refresh intervals) of
/// `alias`.
async fn read(es: &Elasticsearch, alias: &str, settings: bool) -> Read {
    let get = |path: String| async move {
        match tokio::time::timeout(READ_TIMEOUT, elastic::call_ok(es, Method::Get, &path, None))
            .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {READ_TIMEOUT:?} to GET {path}")),
        }
    };
    let intervals = if settings {
        Some(
            get(refresh::settings_path(alias))
                .await
                .and_then(|v| refresh::parse_intervals(&v)),
        )
    } else {
        None
    };
    let stats = get(refresh::stats_path(alias))
        .await
        .and_then(|v| Ok((refresh::parse_stats(&v)?, now_ms())));
    Read { intervals, stats }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::refresh::{one_copy as snap, Snapshot};

    fn task() -> (Task, Arc<SyncStatus>, Metrics) {
        let es = Elasticsearch::new(
            elasticsearch::http::transport::Transport::single_node("http://127.0.0.1:9")
                .expect("transport"),
        );
        let status = Arc::new(SyncStatus::new("g"));
        let metrics = Metrics::default();
        let t = Task::new(
            es,
            FreshnessConfig::default(),
            &["cards".to_string()],
            &metrics,
            status.clone(),
        );
        (t, status, metrics)
    }

    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("a value");
        assert!((got - want).abs() <= want / 64.0, "{got} vs {want}");
    }

    fn read(stats: Result<Snapshot, &str>, at: i64) -> Read {
        Read {
            intervals: Some(Ok([("cards-000001".to_string(), Some(1000))].into())),
            stats: stats.map(|s| (s, at)).map_err(String::from),
        }
    }

    #[test]
    fn documents_count_from_commit_to_the_read_that_saw_them_refreshed() {
        let (mut t, status, metrics) = task();
        metrics.freshness.switch_on();
        let now = now_ms();
        metrics.freshness.accepted("cards", Some(now - 300));
        metrics.freshness.accepted("cards", Some(now - 200));
        for (index, commits) in metrics.freshness.take() {
            t.alias(&index).pending.take_in(&commits);
        }
        t.apply("cards", read(Ok(snap(3, 7)), now + 50), now);
        t.publish(now + 50);
        let f = status.freshness("cards").expect("published");
        assert_eq!((f.documents, f.pending_documents), (0, 2));
        // The refresh shows at the next read, 500 ms later.
        t.apply("cards", read(Ok(snap(4, 7)), now + 550), now + 500);
        t.publish(now + 550);
        let f = status.freshness("cards").expect("published");
        assert_eq!((f.documents, f.pending_documents), (2, 0));
        // 550 - (-200) and 550 - (-300) ms, within the window's 1/64.
        close(f.p50_seconds, 0.75);
        close(f.p99_seconds, 0.85);
        let h = metrics.freshness_seconds.get_or_create(&IndexLabels {
            index: "cards".into(),
        });
        let mut out = String::new();
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("f", "f", h.clone());
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        assert!(out.contains("f_count 2"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("f_sum "))
            .and_then(|v| v.parse().ok())
            .expect("f_sum");
        close(Some(sum), 1.6);
    }

    #[test]
    fn unreadable_statistics_show_on_status_and_documents_wait() {
        let (mut t, status, metrics) = task();
        metrics.freshness.switch_on();
        let now = now_ms();
        metrics.freshness.accepted("cards", Some(now - 100));
        for (index, commits) in metrics.freshness.take() {
            t.alias(&index).pending.take_in(&commits);
        }
        let denied = "elasticsearch answered 403 (the Elasticsearch user lacks a permission)";
        t.apply("cards", read(Err(denied), now), now);
        t.publish(now);
        let f = status.freshness("cards").expect("published");
        assert_eq!(f.error.as_deref(), Some(denied));
        assert_eq!(f.pending_documents, 1);
        // Readable again: the error goes, the document is measured.
        t.apply("cards", read(Ok(snap(3, 7)), now + 100), now + 100);
        t.apply("cards", read(Ok(snap(4, 7)), now + 200), now + 200);
        t.publish(now + 200);
        let f = status.freshness("cards").expect("published");
        assert_eq!(f.error, None);
        assert_eq!((f.documents, f.pending_documents), (1, 0));
        close(f.p50_seconds, 0.3);
    }
}
