//! The consumer: one task owning the Kafka consumer, the per-partition
//! queues and offset trackers; bulk requests, cleanups and dead-letter
//! writes run as tasks that report back to it.
//!
//! Delivery guarantee: an offset is stored (and so committed) only after
//! Elasticsearch accepted the items of that partition up to it (indexed,
//! or refused as an older version) or they were skipped or dead-lettered,
//! in offset order per partition. After a crash or a rebalance the records
//! past the last committed offset are delivered again: at-least-once into
//! Elasticsearch, made effectively exactly-once in its result by external
//! versions (an older event never overwrites a newer state).
//!
//! - **Order**: records of one partition are sent in offset order, and a
//!   partition has at most one bulk request (or cleanup) in flight, so the
//!   changes of one document (one key, one partition) reach Elasticsearch
//!   in order; several partitions run in parallel up to
//!   `bulk.max_in_flight` requests.
//! - **Offsets**: `enable.auto.offset.store=false`; an offset is stored
//!   only when every record before it in the partition is done (indexed,
//!   conflicted, skipped or dead-lettered), and librdkafka commits stored
//!   offsets every `consumer.commit_interval_ms`, on revocation and on
//!   shutdown (synchronously).
//! - **Rebalance**: on revocation the stored offsets are committed at once;
//!   queued records of revoked partitions are dropped and in-flight results
//!   for them ignored (their records are redelivered to the new owner;
//!   versioning makes the repeat harmless).
//! - **Backpressure**: when more than `consumer.max_buffered_records` (or
//!   bytes) are received and not done, every assigned partition is paused;
//!   they resume below half of it. Memory is bounded whatever Elasticsearch
//!   does.
//! - **Shutdown**: no new records; in-flight work gets
//!   `consumer.shutdown_timeout_ms` to finish, then is abandoned; done
//!   offsets are committed synchronously.
//!
//! Where things are: `Loop` (this file) is the state the loop owns;
//! `event_loop` runs it (and the shutdown); `intake` decodes and queues a
//! received record; `partition` holds the per-partition queue and offset
//! tracking; `dispatch` starts bulk requests (and dead-letter writes),
//! `cleanup` snapshot cleanups; `backpressure` pauses and resumes;
//! `rebalance` handles assignment and revocation; `control` the admin
//! requests (pause, resume, leave, rejoin); `status` publishes status,
//! lag and health; `config` builds the librdkafka client configuration.

mod backpressure;
mod cleanup;
mod clock;
mod config;
mod control;
mod dispatch;
mod event_loop;
mod intake;
mod partition;
mod rebalance;
mod status;

pub use config::consumer_config;
pub use control::{Control, ControlReply};
pub use rebalance::{Ctx, SyncConsumer};

use crate::bulk::request::BulkLimits;
use crate::bulk::service::BulkService;
use crate::config::SyncConfig;
use crate::dlq::{self, DlqWriter};
use crate::metrics::Metrics;
use crate::status::SyncStatus;
use elasticsearch::Elasticsearch;
use partition::Partition;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Tp = (String, i32);

/// Reports from tasks to the loop.
enum Report {
    /// A bulk request or cleanup finished: release `busy` of these
    /// partitions and mark the offsets done.
    Finished {
        release: Vec<(Tp, u64)>,
        done: Vec<(Tp, u64, i64)>,
        slot: bool,
    },
    /// Watermarks fetched.
    Watermarks(Vec<(Tp, i64)>),
    /// A bulk item failed permanently: write it to the dead-letter topic
    /// (its own task, [`Loop::spawn_dlq`]); its offset is done once written.
    DeadLetter {
        tp: Tp,
        epoch: u64,
        record: Arc<dlq::RawRecord>,
        why: dlq::DlqReason,
        index: String,
    },
    /// A partition's work waits on a fault (or no longer does: `None`).
    Waiting {
        tp: Tp,
        epoch: u64,
        why: Option<partition::Waiting>,
    },
}

/// Runs the consumer until `shutdown` fires (see the module documentation).
pub async fn run(
    cfg: Arc<SyncConfig>,
    es: Elasticsearch,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    control: mpsc::Receiver<Control>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let (rb_tx, rb_rx) = std::sync::mpsc::channel();
    let consumer: SyncConsumer =
        consumer_config(&cfg, &cfg.kafka.group_id).create_with_context(Ctx { tx: rb_tx })?;
    let consumer = Arc::new(consumer);
    let topics: Vec<&str> = cfg.topics.iter().map(|t| t.topic.as_str()).collect();
    consumer.subscribe(&topics)?;
    let dlq = DlqWriter::new(&cfg, metrics.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let hard_stop = CancellationToken::new();
    let mut lp = Loop {
        bulk: BulkService::new(es.clone(), cfg.retry.clone(), metrics.clone()),
        limits: BulkLimits::from(&cfg.bulk),
        cfg,
        es,
        consumer,
        metrics,
        status,
        dlq,
        tx,
        hard_stop,
        parts: HashMap::new(),
        next_epoch: 1,
        in_flight: 0,
        tasks: 0,
        paused: false,
        held: false,
        rr: 0,
        leaving: None,
        left: false,
    };
    lp.status.set_running(true);
    let out = lp.main(rx, rb_rx, control, shutdown).await;
    lp.status.set_running(false);
    out
}

struct Loop {
    cfg: Arc<SyncConfig>,
    es: Elasticsearch,
    consumer: Arc<SyncConsumer>,
    bulk: BulkService,
    limits: BulkLimits,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    dlq: DlqWriter,
    tx: mpsc::UnboundedSender<Report>,
    hard_stop: CancellationToken,
    parts: HashMap<Tp, Partition>,
    next_epoch: u64,
    /// Bulk requests and cleanups in flight (bounded by max_in_flight).
    in_flight: usize,
    /// All tasks in flight, including DLQ writes of undecodable records.
    tasks: usize,
    paused: bool,
    /// Paused by an operator (`POST /consumer/pause`), whatever the buffer.
    held: bool,
    rr: usize,
    /// A `Leave` request waiting for in-flight work to finish.
    leaving: Option<ControlReply>,
    /// Out of the group after a `Leave`.
    left: bool,
}
