//! The consumer: a poller thread that owns Kafka's poll loop ([`poller`]),
//! and one async loop that owns every partition's state ([`queue`]) and
//! starts the work (bulk requests, snapshot cleanups, dead-letter writes)
//! as supervised tasks ([`jobs`]).
//!
//! Delivery guarantee: an offset is stored (and so committed) only after
//! Elasticsearch accepted the items of that partition up to it (indexed,
//! or refused as an older version) or they were skipped or dead-lettered,
//! in offset order per partition. After a crash, a rebalance or a restart
//! of a partition the records past the last committed offset are delivered
//! again: at-least-once into Elasticsearch, made effectively exactly-once
//! in its result by external versions (an older event never overwrites a
//! newer state).
//!
//! - **Order**: a partition's records are sent in offset order; several
//!   bulk requests of one partition may be in flight (up to
//!   `bulk.max_in_flight` in all), but never two changes of one document:
//!   a record whose document is in flight waits ([`queue`]).
//! - **Offsets**: `enable.auto.offset.store=false`; an offset is stored
//!   only when every record before it in the partition is done, and
//!   librdkafka commits stored offsets every `consumer.commit_interval_ms`,
//!   on revocation and on shutdown (synchronously, on the poller thread).
//! - **Rebalance**: on revocation the stored offsets are committed, the
//!   partition's queued records dropped and its in-flight work cancelled
//!   (the new owner applies them; a bulk still retrying here could write
//!   an old state after the new owner's delete was collected).
//! - **Backpressure**: while more than `consumer.max_buffered_records` (or
//!   bytes) are received and not done, the loop takes no more records, the
//!   poller stops polling and librdkafka's bounded prefetch stops fetching;
//!   only a long stall pauses the partitions ([`poller`]).
//! - **Supervision**: every task is in one `JoinSet`; a task that panics
//!   is logged, counted, its partition restarted from its first record not
//!   done (a seek), and `/readyz` is not ready until that partition makes
//!   progress again.
//! - **Shutdown**: no new records; in-flight work gets
//!   `consumer.shutdown_timeout_ms` to finish, then is abandoned; done
//!   offsets are committed synchronously. A second signal exits at once
//!   (`shared::shutdown`).
//!
//! Where things are: `Loop` (this file) is the state the loop owns;
//! `event_loop` runs it (and the shutdown); `intake` decodes and queues a
//! received record; `queue` holds a partition's queue, offsets and the
//! rules of taking records; `jobs` starts and supervises the tasks
//! (`bulk_job`, `cleanup`, dead-letter writes); `clock` holds records
//! ahead of the clocks; `control` the admin requests (pause, resume,
//! leave, rejoin); `status` publishes status, lag and health; `config`
//! builds the librdkafka client configuration.

mod bulk_job;
mod cleanup;
mod clock;
mod config;
mod control;
mod event_loop;
mod intake;
mod jobs;
mod partition;
mod poller;
mod queue;
mod status;

pub use config::consumer_config;
pub use control::{Control, ControlReply};
pub use poller::{Ctx, SyncConsumer};

use crate::bulk::request::BulkLimits;
use crate::bulk::service::BulkService;
use crate::config::SyncConfig;
use crate::dlq::DlqWriter;
use crate::metrics::Metrics;
use crate::status::SyncStatus;
use elasticsearch::Elasticsearch;
use poller::Tp;
use queue::PartitionQueue;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Records the poller may hand over ahead of the loop.
const RECORD_CHANNEL: usize = 256;

/// Messages of running tasks to the loop (besides their result).
enum Report {
    /// A partition's work waits on a fault.
    Waiting {
        tp: Tp,
        epoch: u64,
        why: partition::Waiting,
    },
    /// A partition's wait of this kind is over.
    WaitOver {
        tp: Tp,
        epoch: u64,
        kind: partition::WaitKind,
    },
    /// A bulk item failed permanently: write it to the dead-letter topic
    /// in a task of its own ([`Loop::spawn_dlq`]); its offset is done once
    /// written. The bulk's slot and the other documents go on meanwhile.
    DeadLetter {
        tp: Tp,
        epoch: u64,
        record: Arc<crate::record::RawRecord>,
        why: crate::dlq::DlqReason,
        index: String,
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
    let (events_tx, events) = mpsc::unbounded_channel();
    let consumer: SyncConsumer = consumer_config(&cfg, &cfg.kafka.group_id)
        .set("statistics.interval.ms", "1000")
        .create_with_context(Ctx::new(events_tx))?;
    let consumer = Arc::new(consumer);
    let topics: Vec<String> = cfg.topics.iter().map(|t| t.topic.clone()).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let (records_tx, records) = mpsc::channel(RECORD_CHANNEL);
    let poller = poller::Poller::start(consumer.clone(), topics, records_tx)
        .map_err(|e| KafkaError::Subscription(format!("cannot start the poller thread: {e}")))?;
    let dlq = DlqWriter::new(&cfg, metrics.clone())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg_for_rollup = cfg.clone();
    let mut lp = Loop {
        bulk: BulkService::new(es.clone(), cfg.retry.clone(), metrics.clone()),
        limits: BulkLimits::from(&cfg.bulk),
        cfg,
        es,
        consumer,
        poller,
        metrics,
        status,
        dlq,
        tx,
        hard_stop: CancellationToken::new(),
        parts: HashMap::new(),
        stops: HashMap::new(),
        jobs: tokio::task::JoinSet::new(),
        units: HashMap::new(),
        in_flight: 0,
        held: false,
        rr: 0,
        leaving: None,
        left: false,
        kafka_ok: false,
        pinging: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        panics: 0,
        rollup: crate::rollup::Plan::of(&cfg_for_rollup).map(Arc::new),
        topic_shared: HashMap::new(),
        ns_names: crate::action::NsNames::default(),
    };
    lp.status.set_running(true);
    let out = lp.main(records, events, rx, control, shutdown).await;
    lp.status.set_running(false);
    out
}

/// The loop's state (see the module documentation); one owner.
struct Loop {
    cfg: Arc<SyncConfig>,
    es: Elasticsearch,
    /// For storing offsets (thread-safe, never blocks).
    consumer: Arc<SyncConsumer>,
    poller: poller::Poller,
    bulk: BulkService,
    limits: BulkLimits,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    dlq: DlqWriter,
    tx: mpsc::UnboundedSender<Report>,
    /// Fires when the shutdown grace is over: every task gives up.
    hard_stop: CancellationToken,
    /// Assigned partitions.
    parts: HashMap<Tp, PartitionQueue>,
    /// Per partition generation: cancels its tasks when it is revoked or
    /// restarted.
    stops: HashMap<(Tp, u64), CancellationToken>,
    /// Every running task.
    jobs: tokio::task::JoinSet<jobs::Outcome>,
    /// What each running task holds (to release it if it panics).
    units: HashMap<tokio::task::Id, jobs::Unit>,
    /// Bulk requests and cleanups in flight (bounded by max_in_flight).
    in_flight: usize,
    /// Paused by an operator (`POST /consumer/pause`).
    held: bool,
    rr: usize,
    /// A `Leave` request waiting for in-flight work to finish.
    leaving: Option<ControlReply>,
    /// Out of the group after a `Leave`.
    left: bool,
    /// A broker answers (from the client's statistics).
    kafka_ok: bool,
    /// An Elasticsearch ping is running.
    pinging: Arc<std::sync::atomic::AtomicBool>,
    /// Tasks that panicked since the start.
    panics: u64,
    /// Replies rolled up into cards, when configured.
    rollup: Option<Arc<crate::rollup::Plan>>,
    /// Each topic's projection, shared by its queued documents (filled
    /// as topics are first read).
    /// Per topic, what its queued documents share.
    topic_shared: HashMap<String, intake::TopicShared>,
    /// `db.coll` names shared by queued documents.
    ns_names: crate::action::NsNames,
}

impl Loop {
    /// The state of an assigned partition of the current generation.
    fn part(&mut self, tp: &Tp, epoch: u64) -> Option<&mut PartitionQueue> {
        self.parts.get_mut(tp).filter(|p| p.epoch == epoch)
    }

    /// The cancellation of a partition's tasks (child of the hard stop).
    fn stop_of(&mut self, tp: &Tp, epoch: u64) -> CancellationToken {
        self.stops
            .entry((tp.clone(), epoch))
            .or_insert_with(|| self.hard_stop.child_token())
            .clone()
    }

    /// Forgets a partition: its queue is dropped, its tasks cancelled.
    fn drop_partition(&mut self, tp: &Tp) {
        if let Some(p) = self.parts.remove(tp) {
            if let Some(stop) = self.stops.remove(&(tp.clone(), p.epoch)) {
                stop.cancel();
            }
            self.metrics
                .lag_records
                .remove(&crate::metrics::PartitionLabels {
                    topic: tp.0.to_string(),
                    partition: tp.1,
                });
        }
    }

    /// Records received and not done over every partition, and their bytes.
    fn buffered(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(n, b), p| {
            let (pn, pb) = p.outstanding();
            (n + pn, b + pb)
        })
    }

    /// Whether the loop may take more records (the buffer limits).
    fn has_room(&self) -> bool {
        let (n, bytes) = self.buffered();
        let c = &self.cfg.consumer;
        n < c.max_buffered_records && bytes < c.max_buffered_bytes
    }

    /// Marks `offset` done and stores the committable offset if it moved.
    fn mark_done(&mut self, tp: &Tp, epoch: u64, offset: i64) {
        let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) else {
            return;
        };
        if let Some(next) = p.done(offset) {
            store(&self.consumer, tp, next, p);
        }
    }
}

/// Stores `offset` of `tp` for the next commit.
fn store(consumer: &SyncConsumer, tp: &Tp, offset: i64, p: &mut PartitionQueue) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    if tpl
        .add_partition_offset(&tp.0, tp.1, rdkafka::Offset::Offset(offset))
        .is_ok()
    {
        match consumer.store_offsets(&tpl) {
            Ok(()) => p.stored = Some(offset),
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %e, "cannot store offset")
            }
        }
    }
}
