//! The record sink of one stream: a Kafka producer with its own
//! `transactional.id`.
//!
//! Delivery guarantee: in transactional mode every batch (its events, any
//! dead-letter pointers and the stream's new resume position) is one Kafka
//! transaction, so a `read_committed` consumer sees all of it or none of it,
//! and a crash at any point leaves the stored position consistent with the
//! events. A second producer with the same `transactional.id` fences this
//! one ([`StreamError::Fenced`]); a transaction left open longer than
//! `transaction.timeout.ms` (the process was paused) is aborted by the
//! broker ([`StreamError::TransactionTimedOut`]): none of it is visible and
//! the stream reopens its producer. In at-least-once mode (broker without
//! transactions, or `delivery = "at_least_once"`) the position is produced
//! only after every event of the batch was acknowledged: a crash can repeat
//! a batch, never lose one.

use super::record::Record;
use crate::config::{Delivery, KafkaConfig};
use crate::error::{Result, StreamError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// How the sink delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Kafka transactions: exactly once for read_committed consumers.
    ExactlyOnce,
    /// No transactions: at least once.
    AtLeastOnce,
}

/// A stream's producer.
pub struct Sink {
    producer: FutureProducer,
    mode: Mode,
    transactional_id: String,
    timeout: Duration,
    /// `transaction.timeout.ms`: a transaction open longer than this was
    /// aborted by the broker.
    transaction_timeout: Duration,
}

/// The outcome of enqueueing one record.
#[derive(Debug)]
pub enum SendError {
    /// librdkafka refused the record as too large.
    TooLarge,
    /// Any other failure.
    Other(StreamError),
}

impl Sink {
    /// Creates the producer and, unless at-least-once was asked for,
    /// registers its `transactional.id` (fencing any older holder).
    pub async fn connect(cfg: &KafkaConfig, transactional_id: &str) -> Result<Self> {
        let timeout = Duration::from_millis(cfg.operation_timeout_ms);
        let transaction_timeout = Duration::from_millis(cfg.transaction_timeout_ms);
        let tid = transactional_id.to_string();
        if cfg.delivery != Delivery::AtLeastOnce {
            let producer = build(cfg, Some(transactional_id))?;
            let p = producer.clone();
            let init = tokio::task::spawn_blocking(move || p.init_transactions(timeout))
                .await
                .map_err(|e| StreamError::Internal(e.to_string()))?;
            match init {
                Ok(()) => {
                    return Ok(Self {
                        producer,
                        mode: Mode::ExactlyOnce,
                        transactional_id: tid,
                        timeout,
                        transaction_timeout,
                    })
                }
                Err(e) if unsupported(&e) => {
                    if cfg.delivery == Delivery::ExactlyOnce {
                        return Err(StreamError::NoTransactions(e.to_string()));
                    }
                    tracing::warn!(
                        transactional_id,
                        error = %e,
                        "broker does not support transactions: falling back to at-least-once"
                    );
                }
                Err(e) => return Err(StreamError::from_kafka(e, transactional_id)),
            }
        }
        Ok(Self {
            producer: build(cfg, None)?,
            mode: Mode::AtLeastOnce,
            transactional_id: tid,
            timeout,
            transaction_timeout,
        })
    }

    /// The delivery mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Writes `records` then `position` atomically (see the module docs).
    /// `on_too_large` is asked for replacements when librdkafka refuses a
    /// record as too large despite the size check (the records to send
    /// instead: the cut event and its pointer, or the pointer alone; or an
    /// error when the policy is to fail).
    /// A transaction open for longer than `transaction.timeout.ms` fails
    /// as [`StreamError::TransactionTimedOut`], whatever librdkafka called
    /// it (it reports the broker's epoch bump as fencing).
    pub async fn write(
        &self,
        records: &[Record],
        position: Record,
        on_too_large: impl FnMut(&Record) -> Result<Vec<Record>>,
    ) -> Result<()> {
        let began = std::time::Instant::now();
        let result = self.transaction(records, position, on_too_large).await;
        result.map_err(|e| self.timed_out(e, began.elapsed()))
    }

    /// `e` as [`StreamError::TransactionTimedOut`] when the transaction
    /// that failed had been open for `open` ≥ `transaction.timeout.ms`:
    /// the broker aborted it and bumped the producer epoch, which
    /// librdkafka reports as fencing (or as local message time-outs).
    fn timed_out(&self, e: StreamError, open: Duration) -> StreamError {
        let transactional = self.mode == Mode::ExactlyOnce;
        if transactional
            && open >= self.transaction_timeout
            && matches!(e, StreamError::Fenced(_) | StreamError::Kafka(_))
        {
            tracing::warn!(
                transactional_id = %self.transactional_id,
                open_ms = open.as_millis() as u64,
                error = %e,
                "transaction timed out"
            );
            return StreamError::TransactionTimedOut {
                transactional_id: self.transactional_id.clone(),
                open_ms: open.as_millis() as u64,
                timeout_ms: self.transaction_timeout.as_millis() as u64,
            };
        }
        e
    }

    async fn transaction(
        &self,
        records: &[Record],
        position: Record,
        mut on_too_large: impl FnMut(&Record) -> Result<Vec<Record>>,
    ) -> Result<()> {
        if self.mode == Mode::ExactlyOnce {
            self.producer
                .begin_transaction()
                .map_err(|e| self.kafka(e))?;
        }
        let outcome = async {
            let mut pending = Vec::with_capacity(records.len() + 1);
            for r in records {
                match self.enqueue(r).await {
                    Ok(f) => pending.push(f),
                    Err(SendError::TooLarge) => {
                        for replacement in on_too_large(r)? {
                            pending.push(self.enqueue(&replacement).await.map_err(
                                |e| {
                                    match e {
                                        SendError::TooLarge => StreamError::Internal(
                                            "replacement of a record too large is still too large"
                                                .into(),
                                        ),
                                        SendError::Other(e) => e,
                                    }
                                },
                            )?);
                        }
                    }
                    Err(SendError::Other(e)) => return Err(e),
                }
            }
            if self.mode == Mode::AtLeastOnce {
                self.await_all(pending).await?;
                pending = Vec::with_capacity(1);
            }
            pending.push(self.enqueue(&position).await.map_err(|e| match e {
                SendError::TooLarge => StreamError::Internal("position record too large".into()),
                SendError::Other(e) => e,
            })?);
            self.await_all(pending).await
        }
        .await;
        if self.mode == Mode::ExactlyOnce && outcome.is_ok() {
            // Test builds only: the process paused with this transaction
            // open, its records written.
            shared::faults::stop_point(|| format!("source.txn.stop:{}", self.transactional_id));
        }
        match outcome {
            Ok(()) if self.mode == Mode::ExactlyOnce => self.commit().await,
            Ok(()) => Ok(()),
            Err(e) => {
                if self.mode == Mode::ExactlyOnce && !matches!(e, StreamError::Fenced(_)) {
                    return Err(self.abort_after(e).await);
                }
                Err(e)
            }
        }
    }

    async fn enqueue(
        &self,
        r: &Record,
    ) -> std::result::Result<rdkafka::producer::DeliveryFuture, SendError> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec = FutureRecord::to(&r.topic)
            .payload(&r.value)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_bytes());
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Local queue full: librdkafka is still sending; wait,
                    // and send the same record again.
                    rec = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(SendError::TooLarge)
                }
                Err((e, _)) => return Err(SendError::Other(self.kafka(e))),
            }
        }
    }

    async fn await_all(&self, pending: Vec<rdkafka::producer::DeliveryFuture>) -> Result<()> {
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.kafka(e)),
                Err(_) => return Err(StreamError::Internal("delivery cancelled".into())),
            }
        }
        Ok(())
    }

    async fn commit(&self) -> Result<()> {
        let p = self.producer.clone();
        let timeout = self.timeout;
        let res = tokio::task::spawn_blocking(move || p.commit_transaction(timeout))
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?;
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.kafka(e);
                if matches!(err, StreamError::Fenced(_)) {
                    return Err(err);
                }
                Err(self.abort_after(err).await)
            }
        }
    }

    async fn abort(&self) {
        let p = self.producer.clone();
        let timeout = self.timeout;
        let res = tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(transactional_id = %self.transactional_id, error = %e, "abort failed");
        }
    }

    /// Classifies `e`, looking at the producer's fatal error: once fenced,
    /// librdkafka fails every later call with a generic "fatal" code.
    fn kafka(&self, e: KafkaError) -> StreamError {
        self.fenced()
            .unwrap_or_else(|| StreamError::from_kafka(e, &self.transactional_id))
    }

    /// Aborts the transaction that failed with `err`, and returns `err`,
    /// or [`StreamError::Fenced`] if the abort learnt of a fencing the
    /// failed call did not report: a broker answered the commit of a
    /// fenced producer with UNKNOWN, and only the abort after it set
    /// librdkafka's fatal `_FENCED` (seen on Kafka 4.1). Reported as
    /// retryable, that fencing was not counted, so a second one never gave
    /// the lease up.
    async fn abort_after(&self, err: StreamError) -> StreamError {
        self.abort().await;
        self.fenced().unwrap_or(err)
    }

    /// [`StreamError::Fenced`] when the producer's fatal error says so.
    fn fenced(&self) -> Option<StreamError> {
        let (code, reason) = self.producer.client().fatal_error()?;
        is_fencing(code).then(|| {
            tracing::warn!(transactional_id = %self.transactional_id, %reason, "producer fenced");
            StreamError::Fenced(self.transactional_id.clone())
        })
    }
}

/// Whether a producer's fatal error is a fencing (another producer with
/// the same `transactional.id`, or the broker's epoch bump).
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced
    )
}

fn build(cfg: &KafkaConfig, transactional_id: Option<&str>) -> Result<FutureProducer> {
    let mut c = super::client_config(cfg);
    c.set("message.max.bytes", cfg.message_max_bytes.to_string())
        .set("compression.type", &cfg.compression)
        // Same partitioner as the Java client, so a key lands where Kafka
        // Connect would have put it.
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Bounds the memory of in-flight records (64 MiB).
        .set("queue.buffering.max.kbytes", "65536")
        .set(
            "transaction.timeout.ms",
            cfg.transaction_timeout_ms.to_string(),
        );
    if let Some(tid) = transactional_id {
        c.set("transactional.id", tid);
    }
    c.create().map_err(StreamError::Kafka)
}

/// Whether `init_transactions` failed because the broker cannot do them.
fn unsupported(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::Transaction(t) => Some(t.code()),
        other => other.rdkafka_error_code(),
    };
    // A broker that is merely starting answers CoordinatorNotAvailable:
    // that is retried, not taken as "no transactions".
    matches!(
        code,
        Some(RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature)
    )
}
