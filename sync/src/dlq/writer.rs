//! Writes dead letters: reads the topic's limit ([`super::probe`], cached),
//! sends the copy or the pointer ([`super::outgoing::plan`]) with a
//! producer whose `message.max.bytes` is that limit, and retries a failed
//! write with backoff until it works or es-sync stops.
//!
//! While a write fails the caller's `wait` hook is told why (the consumer
//! shows it on `/status` for the partition, which cannot commit past the
//! record meanwhile), `es_sync_dlq_write_errors_total{fault}` and
//! `es_sync_retries_total{reason="dlq"}` count each failure,
//! `es_sync_dlq_unavailable` is 1, and one error line is logged per
//! episode (the first failure after a success), one info line when it ends.
//! A record refused as too large is sent again at once as a pointer.

use super::fault::Fault;
use super::outgoing::{plan, Form, Outgoing};
use super::probe::{probe, Limit};
use super::DlqReason;
use crate::config::SyncConfig;
use crate::metrics::{FaultLabels, FormLabels, Metrics};
use crate::record::RawRecord;
use backoff::backoff::Backoff as _;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use shared::retry::RetryConfig;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How long a limit read from the broker is used before it is read again
/// (an operator may alter the topic).
const LIMIT_TTL: Duration = Duration::from_secs(60);
/// How long a failed probe answers for everyone before the next one: many
/// partitions waiting on the dead-letter topic make one admin request a
/// second between them, not one each.
const FAULT_TTL: Duration = Duration::from_secs(1);

/// Told why a write waits (`Some`), then that it no longer does (`None`).
pub type WaitHook<'a> = &'a (dyn Fn(Option<&str>) + Send + Sync);

/// Writes dead-letter records (cheap to clone).
#[derive(Clone)]
pub struct DlqWriter {
    inner: Arc<Inner>,
}

struct Inner {
    base: ClientConfig,
    topic: String,
    retry: RetryConfig,
    metrics: Metrics,
    timeout: Duration,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// The last probe: when, and what it said.
    probe: tokio::sync::Mutex<Option<(Instant, Result<Limit, Fault>)>>,
    /// The producer and the `message.max.bytes` it was made with.
    producer: RwLock<Option<(usize, FutureProducer)>>,
    /// Since when writes fail, and how often (one log line per episode).
    episode: Mutex<Option<(Instant, u64)>>,
}

impl DlqWriter {
    /// A writer for the configured dead-letter topic (no I/O yet).
    pub fn new(cfg: &SyncConfig, metrics: Metrics) -> Result<Self, rdkafka::error::KafkaError> {
        let base = cfg.kafka.client_config();
        let admin = base.create()?;
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                topic: cfg.dlq.topic_name(),
                retry: cfg.retry.clone(),
                metrics,
                timeout: Duration::from_millis(cfg.kafka.operation_timeout_ms),
                admin: Arc::new(admin),
                probe: tokio::sync::Mutex::new(None),
                producer: RwLock::new(None),
                episode: Mutex::new(None),
            }),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Writes `record` with `why`, retrying until acknowledged. Returns
    /// `None` only if `stop` fired first (the record is then not done).
    pub async fn send(
        &self,
        record: &RawRecord,
        why: &DlqReason,
        stop: &CancellationToken,
        wait: WaitHook<'_>,
    ) -> Option<Form> {
        let mut schedule = self.inner.retry.backoff();
        schedule.max_elapsed_time = None;
        let mut force_pointer = false;
        let mut waited = false;
        loop {
            let result = tokio::select! {
                r = self.attempt(record, why, force_pointer) => r,
                () = stop.cancelled() => return None,
            };
            let fault = match result {
                Ok(form) => {
                    self.recovered();
                    if waited {
                        wait(None);
                    }
                    self.inner
                        .metrics
                        .dlq_records
                        .get_or_create(&FormLabels {
                            form: form.as_str().into(),
                        })
                        .inc();
                    tracing::warn!(
                        topic = %record.topic, partition = record.partition, offset = record.offset,
                        error_type = %why.error_type, reason = %why.reason, dlq = %self.inner.topic,
                        form = form.as_str(), "record dead-lettered"
                    );
                    return Some(form);
                }
                Err(f) => f,
            };
            self.inner
                .metrics
                .dlq_write_errors
                .get_or_create(&FaultLabels {
                    fault: fault.label().into(),
                })
                .inc();
            if matches!(fault, Fault::TooLarge(_)) && !force_pointer {
                // The broker's limit is lower than read: a pointer, now.
                tracing::info!(dlq = %self.inner.topic, error = %fault, offset = record.offset, "dead-letter copy refused as too large; sending a pointer");
                force_pointer = true;
                self.forget_limit().await;
                continue;
            }
            self.inner.metrics.retry("dlq", 1);
            self.failed(&fault, record);
            waited = true;
            wait(Some(&format!(
                "waiting for the dead-letter topic {} ({}): {fault}",
                self.inner.topic,
                fault.label()
            )));
            let delay = schedule
                .next_backoff()
                .unwrap_or(Duration::from_millis(self.inner.retry.max_ms));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// One write: limit, copy or pointer, produce, acknowledgement.
    async fn attempt(
        &self,
        record: &RawRecord,
        why: &DlqReason,
        force_pointer: bool,
    ) -> Result<Form, Fault> {
        let limit = self.limit().await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let out = plan(
            record,
            why,
            now_ms,
            limit.bytes,
            &limit.source,
            force_pointer,
        );
        let size = out.wire_size();
        if size > limit.bytes {
            // Only a pathological limit (or key) gets here: the operator
            // raises the topic's max.message.bytes.
            return Err(Fault::TooLarge(format!(
                "even a pointer of {size} bytes is over the limit of {} bytes ({}); raise it",
                limit.bytes, limit.source
            )));
        }
        let producer = self.producer(limit.bytes)?;
        let mut fr: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.inner.topic).headers(owned_headers(&out));
        if let Some(k) = &out.key {
            fr = fr.key(k.as_slice());
        }
        if let Some(v) = &out.value {
            fr = fr.payload(v.as_slice());
        }
        match producer.send(fr, self.inner.timeout).await {
            Ok(_) => Ok(out.form),
            Err((e, _)) => {
                let fault = Fault::of_produce(&e, &self.inner.topic);
                if matches!(fault, Fault::MissingTopic(_)) {
                    self.forget_limit().await;
                }
                if producer.client().fatal_error().is_some() {
                    // A fatal idempotence error: a new producer next time.
                    if let Ok(mut p) = self.inner.producer.write() {
                        *p = None;
                    }
                }
                Err(fault)
            }
        }
    }

    /// The topic's limit, read from the broker at most once per
    /// [`LIMIT_TTL`] (or [`FAULT_TTL`] after a failure).
    async fn limit(&self) -> Result<Limit, Fault> {
        let mut last = self.inner.probe.lock().await;
        if let Some((at, r)) = last.as_ref() {
            let ttl = if r.is_ok() { LIMIT_TTL } else { FAULT_TTL };
            if at.elapsed() < ttl {
                return r.clone();
            }
        }
        let r = probe(&self.inner.admin, &self.inner.topic, self.inner.timeout).await;
        match &r {
            Ok(l) => {
                tracing::debug!(dlq = %self.inner.topic, limit = l.bytes, source = %l.source, "dead-letter topic limit")
            }
            Err(f) => {
                tracing::debug!(dlq = %self.inner.topic, error = %f, "dead-letter topic not writable")
            }
        }
        *last = Some((Instant::now(), r.clone()));
        r
    }

    async fn forget_limit(&self) {
        *self.inner.probe.lock().await = None;
    }

    /// A producer with `message.max.bytes` = `limit` (made anew when the
    /// limit changed).
    fn producer(&self, limit: usize) -> Result<FutureProducer, Fault> {
        if let Ok(p) = self.inner.producer.read() {
            if let Some((l, prod)) = p.as_ref() {
                if *l == limit {
                    return Ok(prod.clone());
                }
            }
        }
        let mut cc = self.inner.base.clone();
        // After the configured properties: librdkafka's default (1,000,000)
        // refused copies the topic accepts, and a higher value than the
        // topic's makes batches the broker refuses.
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .set("message.timeout.ms", "30000")
            .set(
                "message.max.bytes",
                limit.clamp(1000, 1_000_000_000).to_string(),
            );
        let prod: FutureProducer = cc
            .create()
            .map_err(|e| Fault::Other(format!("cannot create the dead-letter producer: {e}")))?;
        if let Ok(mut p) = self.inner.producer.write() {
            *p = Some((limit, prod.clone()));
        }
        Ok(prod)
    }

    /// A write failed: opens an episode (one error line) or counts it.
    fn failed(&self, fault: &Fault, record: &RawRecord) {
        let Ok(mut ep) = self.inner.episode.lock() else {
            return;
        };
        match ep.as_mut() {
            None => {
                *ep = Some((Instant::now(), 1));
                self.inner.metrics.dlq_unavailable.set(1);
                tracing::error!(
                    dlq = %self.inner.topic, fault = fault.label(), error = %fault,
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    "cannot write to the dead-letter topic: partitions with a record to dead-letter wait (not committed past it) and retry until it works"
                );
            }
            Some((_, n)) => {
                *n += 1;
                tracing::debug!(dlq = %self.inner.topic, fault = fault.label(), error = %fault, failures = *n, "dead-letter topic still not writable");
            }
        }
    }

    /// A write succeeded: closes an open episode.
    fn recovered(&self) {
        let Ok(mut ep) = self.inner.episode.lock() else {
            return;
        };
        if let Some((since, failures)) = ep.take() {
            self.inner.metrics.dlq_unavailable.set(0);
            tracing::info!(
                dlq = %self.inner.topic, failures, seconds = since.elapsed().as_secs(),
                "dead-letter topic writable again"
            );
        }
    }
}

fn owned_headers(out: &Outgoing) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(out.headers.len());
    for (k, v) in &out.headers {
        h = h.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    h
}
