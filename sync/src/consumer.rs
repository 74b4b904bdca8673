//! The consumer: one task owning the Kafka consumer, the per-partition
//! queues and offset trackers; bulk requests, cleanups and dead-letter
//! writes run as tasks that report back to it.
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
//! Delivery guarantee: at-least-once into Elasticsearch, made effectively
//! exactly-once in its result by external versions.

use crate::action::{self, Action};
use crate::bulk::request::{encode, Batch, BulkLimits, Item};
use crate::bulk::service::{BulkService, Final};
use crate::config::SyncConfig;
use crate::dlq::{DlqReason, DlqWriter, RawRecord};
use crate::elastic;
use crate::event;
use crate::metrics::{Metrics, PartitionLabels};
use crate::offsets::OffsetTracker;
use crate::status::{PartitionStatus, SyncStatus};
use elasticsearch::Elasticsearch;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::json;
use shared::state::StreamState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Tp = (String, i32);

/// A rebalance seen by the consumer context.
#[derive(Debug)]
enum RebalanceEvent {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// Consumer context: commits on revocation and tells the loop.
pub struct Ctx {
    tx: std::sync::mpsc::Sender<RebalanceEvent>,
}

impl ClientContext for Ctx {}

fn tpl_parts(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl_parts(tpl);
            match base.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = ?parts, "revoked; committed done offsets"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(error = %e, "commit on revocation failed"),
            }
            let _ = self.tx.send(RebalanceEvent::Revoked(parts));
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = tpl_parts(tpl);
                tracing::info!(partitions = ?parts, "assigned");
                let _ = self.tx.send(RebalanceEvent::Assigned(parts));
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The consumer type.
pub type SyncConsumer = StreamConsumer<Ctx>;

/// Client configuration of the consumer group (also used by `replay`).
pub fn consumer_config(cfg: &SyncConfig, group: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.kafka.bootstrap_servers)
        .set("group.id", group)
        .set("client.id", "es-sync")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            cfg.consumer.commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", &cfg.kafka.auto_offset_reset)
        // Incremental rebalances: a member joining or leaving moves only
        // the partitions that must move; the others keep their in-flight
        // work (the context handles incremental assign/revoke lists).
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            cfg.kafka.session_timeout_ms.to_string(),
        )
        // Prefetch bounds. Our own buffer (`consumer.max_buffered_*`) is
        // what bounds memory by design; librdkafka's defaults would add
        // far more while catching up (measured: ~40 MiB of zstd output
        // buffers and 18k queued messages, issue 6): it keeps 100,000
        // messages per partition queued, and one fetch may carry 1 MiB of
        // *compressed* records per partition (5-10x that decompressed).
        // A few bulks' worth per partition is enough to keep requests full
        // (consuming runs ~100x faster than indexing). A record batch
        // larger than these limits is still fetched whole (KIP-74).
        .set(
            "queued.min.messages",
            cfg.bulk.max_actions.max(100).to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            (cfg.consumer.max_buffered_bytes / 4 / 1024)
                .max(1024)
                .to_string(),
        )
        .set("fetch.max.bytes", (1usize << 20).to_string())
        .set("max.partition.fetch.bytes", (256usize << 10).to_string());
    for (k, v) in cfg.kafka.client_properties() {
        cc.set(k, v);
    }
    cc
}

/// What waits in a partition queue.
enum Work {
    Bulk {
        lines: Vec<u8>,
        index: String,
        kind: &'static str,
    },
    Cleanup {
        action: Action,
    },
}

struct Queued {
    offset: i64,
    received: Instant,
    work: Work,
    record: Arc<RawRecord>,
}

struct Partition {
    epoch: u64,
    tracker: OffsetTracker,
    queue: VecDeque<Queued>,
    /// Bulk items in `queue` and their NDJSON bytes (kept so deciding
    /// whether a request is due costs O(partitions), not O(records)).
    queued_items: usize,
    queued_bytes: usize,
    busy: bool,
    /// offset -> (event time seconds, bytes) of records not done.
    outstanding: BTreeMap<i64, (u64, usize)>,
    outstanding_bytes: usize,
    high_watermark: Option<i64>,
    stored: Option<i64>,
    state: StreamState,
}

impl Partition {
    fn clear_queue(&mut self) {
        self.queue.clear();
        self.queued_items = 0;
        self.queued_bytes = 0;
    }
}

/// Bulk item metadata.
struct Meta {
    tp: Tp,
    epoch: u64,
    offset: i64,
    index: String,
    kind: &'static str,
    record: Arc<RawRecord>,
}

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
}

/// The answer to a [`Control`] request.
pub type ControlReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Requests of the admin API to the consumer (`replay --coordinate`).
#[derive(Debug)]
pub enum Control {
    /// Finish in-flight work, drop queued records, commit, and leave the
    /// group (the process keeps running, consuming nothing).
    Leave(ControlReply),
    /// Join the group again; partitions start from their committed offsets.
    Rejoin(ControlReply),
    /// Operator pause: stop fetching (in-flight work finishes, the group
    /// membership and partitions are kept) until [`Control::Resume`].
    Pause(ControlReply),
    /// End an operator pause.
    Resume(ControlReply),
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

impl Loop {
    async fn main(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
        rb_rx: std::sync::mpsc::Receiver<RebalanceEvent>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let consumer = self.consumer.clone();
        loop {
            self.drain_rebalances(&rb_rx);
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(report) = rx.recv() => self.on_report(report),
                Some(c) = control.recv() => self.on_control(c),
                msg = consumer.recv() => {
                    self.drain_rebalances(&rb_rx);
                    match msg {
                        Ok(m) => self.on_message(&m),
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                () = sleep_until_opt(deadline) => {}
                _ = tick.tick() => {
                    ticks += 1;
                    self.publish_status();
                    // Watermarks (lag) and reachability every 2 s.
                    if ticks % 2 == 1 {
                        self.spawn_health_checks();
                    }
                }
            }
            self.finish_leave();
            self.pump();
            self.backpressure();
        }
        self.shutdown(rx).await
    }

    async fn shutdown(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
    ) -> Result<(), KafkaError> {
        for p in self.parts.values_mut() {
            p.clear_queue();
        }
        let grace = Duration::from_millis(self.cfg.consumer.shutdown_timeout_ms);
        let until = tokio::time::Instant::now() + grace;
        tracing::info!(
            in_flight = self.tasks,
            "shutting down: finishing in-flight work"
        );
        while self.tasks > 0 {
            tokio::select! {
                Some(report) = rx.recv() => self.on_report(report),
                () = tokio::time::sleep_until(until), if !self.hard_stop.is_cancelled() => {
                    tracing::warn!(in_flight = self.tasks, "shutdown grace over: abandoning in-flight work");
                    self.hard_stop.cancel();
                }
                else => break,
            }
            for p in self.parts.values_mut() {
                p.clear_queue();
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed"),
        }
        self.publish_status();
        tracing::info!("consumer stopped");
        Ok(())
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Pause(reply) => {
                tracing::info!("consumption paused by an operator");
                self.held = true;
                self.backpressure();
                let _ = reply.send(if self.paused {
                    Ok(())
                } else {
                    Err("cannot pause".into())
                });
            }
            Control::Resume(reply) => {
                tracing::info!("consumption resumed by an operator");
                self.held = false;
                self.backpressure();
                let _ = reply.send(Ok(()));
            }
            Control::Leave(reply) => {
                if self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                tracing::info!(
                    in_flight = self.tasks,
                    "leave requested: finishing in-flight work"
                );
                for p in self.parts.values_mut() {
                    p.clear_queue();
                }
                if let Some(previous) = self.leaving.replace(reply) {
                    let _ = previous.send(Err("superseded by another leave request".into()));
                }
            }
            Control::Rejoin(reply) => {
                if let Some(l) = self.leaving.take() {
                    let _ = l.send(Err("rejoin requested before the leave completed".into()));
                }
                if !self.left {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let topics: Vec<&str> = self.cfg.topics.iter().map(|t| t.topic.as_str()).collect();
                let out = self.consumer.subscribe(&topics).map_err(|e| e.to_string());
                if out.is_ok() {
                    self.left = false;
                    tracing::info!("rejoined the consumer group");
                }
                let _ = reply.send(out);
            }
        }
    }

    /// Completes a pending leave once nothing is in flight.
    fn finish_leave(&mut self) {
        if self.leaving.is_none() || self.tasks > 0 {
            return;
        }
        let out = match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(format!("commit failed: {e}")),
        };
        self.consumer.unsubscribe();
        self.parts.clear();
        self.left = true;
        tracing::info!("left the consumer group (on request)");
        if let Some(reply) = self.leaving.take() {
            let _ = reply.send(out);
        }
    }

    fn drain_rebalances(&mut self, rb_rx: &std::sync::mpsc::Receiver<RebalanceEvent>) {
        while let Ok(ev) = rb_rx.try_recv() {
            match ev {
                RebalanceEvent::Revoked(parts) => {
                    for tp in parts {
                        if let Some(p) = self.parts.remove(&tp) {
                            self.metrics.lag_records.remove(&PartitionLabels {
                                topic: tp.0.clone(),
                                partition: tp.1,
                            });
                            tracing::info!(topic = %tp.0, partition = tp.1, dropped = p.queue.len(), "partition revoked");
                        }
                    }
                }
                RebalanceEvent::Assigned(parts) => {
                    for tp in &parts {
                        self.partition(tp);
                    }
                    if self.paused {
                        let mut tpl = TopicPartitionList::new();
                        for (t, p) in &parts {
                            tpl.add_partition(t, *p);
                        }
                        if let Err(e) = self.consumer.pause(&tpl) {
                            tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                        }
                    }
                }
            }
        }
    }

    fn partition(&mut self, tp: &Tp) -> &mut Partition {
        let epoch = self.next_epoch;
        let entry = self.parts.entry(tp.clone()).or_insert_with(|| Partition {
            epoch,
            tracker: OffsetTracker::default(),
            queue: VecDeque::new(),
            queued_items: 0,
            queued_bytes: 0,
            busy: false,
            outstanding: BTreeMap::new(),
            outstanding_bytes: 0,
            high_watermark: None,
            stored: None,
            state: StreamState::Running,
        });
        if entry.epoch == epoch {
            self.next_epoch += 1;
        }
        entry
    }

    fn on_message(&mut self, m: &BorrowedMessage<'_>) {
        if self.leaving.is_some() || self.left {
            // Not tracked, so never committed: delivered again after a rejoin.
            return;
        }
        let record = Arc::new(RawRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        });
        let tp: Tp = (record.topic.clone(), record.partition);
        let cfg = self.cfg.clone();
        let Some(route) = cfg.route(&record.topic) else {
            return;
        };
        let offset = record.offset;
        let size = record.size();
        let decoded = event::decode(record.payload.as_deref());
        let event_secs = decoded
            .as_ref()
            .map(|e| u64::from(e.cluster_time.t))
            .ok()
            .or(record.timestamp.map(|t| (t / 1000).max(0) as u64))
            .unwrap_or(0);
        let part = self.partition(&tp);
        if !part.tracker.received(offset) {
            return;
        }
        part.outstanding.insert(offset, (event_secs, size));
        part.outstanding_bytes += size;
        let epoch = part.epoch;
        let index = route.alias.clone();
        let built = decoded
            .map_err(|e| DlqReason {
                error_type: e.kind().into(),
                reason: e.to_string(),
                index: None,
            })
            .and_then(|ev| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                action::check_not_future(&ev, now, cfg.consumer.max_future_seconds)
                    .and_then(|()| action::build(&ev, route, &index, tp.1))
                    .map_err(|e| DlqReason {
                        error_type: e.kind().into(),
                        reason: e.to_string(),
                        index: Some(index.clone()),
                    })
            });
        match built {
            Ok(Action::Skip) => {
                self.metrics.count(&index, "skipped", 1);
                self.mark_done(&tp, epoch, offset);
            }
            Ok(a @ Action::SnapshotEnd { .. }) => {
                let part = self.partition(&tp);
                part.queue.push_back(Queued {
                    offset,
                    received: Instant::now(),
                    work: Work::Cleanup { action: a },
                    record,
                });
            }
            Ok(a) => {
                let kind = a.kind();
                let Some(lines) = encode(&a) else { return };
                let part = self.partition(&tp);
                part.queued_items += 1;
                part.queued_bytes += lines.len();
                part.queue.push_back(Queued {
                    offset,
                    received: Instant::now(),
                    work: Work::Bulk { lines, index, kind },
                    record,
                });
            }
            Err(why) => {
                let index_label = why.index.clone().unwrap_or_else(|| index.clone());
                self.spawn_dlq(tp, epoch, record, why, index_label);
            }
        }
    }

    fn spawn_dlq(
        &mut self,
        tp: Tp,
        epoch: u64,
        record: Arc<RawRecord>,
        why: DlqReason,
        index: String,
    ) {
        self.tasks += 1;
        let dlq = self.dlq.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let ok = dlq.send(&record, &why, &stop).await;
            let mut done = Vec::new();
            if ok {
                metrics.count(&index, "dead_lettered", 1);
                done.push((tp, epoch, record.offset));
            }
            let _ = tx.send(Report::Finished {
                release: Vec::new(),
                done,
                slot: false,
            });
        });
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Finished {
                release,
                done,
                slot,
            } => {
                self.tasks = self.tasks.saturating_sub(1);
                if slot {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                for (tp, epoch) in release {
                    if let Some(p) = self.parts.get_mut(&tp).filter(|p| p.epoch == epoch) {
                        p.busy = false;
                    }
                }
                for (tp, epoch, offset) in done {
                    self.mark_done(&tp, epoch, offset);
                }
            }
            Report::Watermarks(marks) => {
                for (tp, high) in marks {
                    if let Some(p) = self.parts.get_mut(&tp) {
                        p.high_watermark = Some(high);
                    }
                }
            }
        }
    }

    fn mark_done(&mut self, tp: &Tp, epoch: u64, offset: i64) {
        let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) else {
            return;
        };
        if let Some((_, size)) = p.outstanding.remove(&offset) {
            p.outstanding_bytes = p.outstanding_bytes.saturating_sub(size);
        }
        if let Some(next) = p.tracker.done(offset) {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .is_ok()
            {
                match self.consumer.store_offsets(&tpl) {
                    Ok(()) => p.stored = Some(next),
                    Err(e) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, offset = next, error = %e, "cannot store offset")
                    }
                }
            }
        }
    }

    /// When the oldest waiting bulk item is due (its linger time is over).
    /// `None` while no request could start anyway (every slot in flight,
    /// or leaving): the loop then waits for a report instead of waking at
    /// a deadline already past, which would spin a core while
    /// Elasticsearch, on the same host, needs it.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        if self.in_flight >= self.cfg.bulk.max_in_flight
            || self.hard_stop.is_cancelled()
            || self.leaving.is_some()
            || self.left
        {
            return None;
        }
        self.parts
            .values()
            .filter(|p| !p.busy)
            .filter_map(|p| p.queue.front())
            .filter(|q| matches!(q.work, Work::Bulk { .. }))
            .map(|q| q.received + self.limits.linger)
            .min()
            .map(tokio::time::Instant::from_std)
    }

    /// Starts bulk requests and cleanups while slots are free.
    fn pump(&mut self) {
        if self.hard_stop.is_cancelled() || self.leaving.is_some() || self.left {
            return;
        }
        while self.in_flight < self.cfg.bulk.max_in_flight {
            // Cleanups at the head of idle partitions first.
            let cleanup = self
                .parts
                .iter()
                .find(|(_, p)| {
                    !p.busy
                        && matches!(
                            p.queue.front(),
                            Some(Queued {
                                work: Work::Cleanup { .. },
                                ..
                            })
                        )
                })
                .map(|(tp, _)| tp.clone());
            if let Some(tp) = cleanup {
                self.start_cleanup(&tp);
                continue;
            }
            // Is a bulk due?
            let now = Instant::now();
            let (mut count, mut bytes, mut due) = (0usize, 0usize, false);
            for p in self.parts.values().filter(|p| !p.busy) {
                count += p.queued_items;
                bytes += p.queued_bytes;
                if let Some(Queued {
                    work: Work::Bulk { .. },
                    received,
                    ..
                }) = p.queue.front()
                {
                    due |= now >= *received + self.limits.linger;
                }
            }
            if count == 0
                || !(due || count >= self.limits.max_actions || bytes >= self.limits.max_bytes)
            {
                return;
            }
            if !self.start_bulk() {
                return;
            }
        }
    }

    /// Starts one bulk request; `false` if there was nothing to send.
    fn start_bulk(&mut self) -> bool {
        let mut keys: Vec<Tp> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.busy)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        if keys.is_empty() {
            return false;
        }
        self.rr = self.rr.wrapping_add(1);
        let start = self.rr % keys.len();
        keys.rotate_left(start);
        let mut batch: Batch<Meta> = Batch::default();
        let mut release = Vec::new();
        'parts: for tp in keys {
            let Some(p) = self.parts.get_mut(&tp) else {
                continue;
            };
            let mut took = false;
            while let Some(q) = p.queue.front() {
                let Work::Bulk { lines, .. } = &q.work else {
                    break;
                };
                if !batch.fits(lines.len(), &self.limits) {
                    if took {
                        p.busy = true;
                        release.push((tp.clone(), p.epoch));
                    }
                    break 'parts;
                }
                let Some(q) = p.queue.pop_front() else { break };
                let Work::Bulk { lines, index, kind } = q.work else {
                    break;
                };
                p.queued_items = p.queued_items.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(lines.len());
                batch.push(
                    Item {
                        lines,
                        meta: Meta {
                            tp: tp.clone(),
                            epoch: p.epoch,
                            offset: q.offset,
                            index,
                            kind,
                            record: q.record,
                        },
                    },
                    q.received,
                );
                took = true;
            }
            if took {
                p.busy = true;
                release.push((tp.clone(), p.epoch));
            }
        }
        if batch.is_empty() {
            return false;
        }
        self.in_flight += 1;
        self.tasks += 1;
        let svc = self.bulk.clone();
        let dlq = self.dlq.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        tracing::debug!(items = batch.len(), bytes = batch.bytes(), "sending bulk");
        tokio::spawn(async move {
            let results = svc.execute(batch.into_items(), &stop).await;
            let mut done = Vec::with_capacity(results.len());
            for (meta, fin) in results {
                let finished = match fin {
                    Final::Success => {
                        metrics.count(
                            &meta.index,
                            if meta.kind == "delete" {
                                "deleted"
                            } else {
                                "indexed"
                            },
                            1,
                        );
                        true
                    }
                    Final::Conflict => {
                        metrics.count(&meta.index, "conflicted", 1);
                        true
                    }
                    Final::Permanent { error_type, reason } => {
                        let why = DlqReason {
                            error_type,
                            reason,
                            index: Some(meta.index.clone()),
                        };
                        let ok = dlq.send(&meta.record, &why, &stop).await;
                        if ok {
                            metrics.count(&meta.index, "dead_lettered", 1);
                        }
                        ok
                    }
                    Final::Abandoned => false,
                };
                if finished {
                    done.push((meta.tp, meta.epoch, meta.offset));
                }
            }
            let _ = tx.send(Report::Finished {
                release,
                done,
                slot: true,
            });
        });
        true
    }

    fn start_cleanup(&mut self, tp: &Tp) {
        let Some(p) = self.parts.get_mut(tp) else {
            return;
        };
        let Some(q) = p.queue.pop_front() else { return };
        let Work::Cleanup {
            action:
                Action::SnapshotEnd {
                    index,
                    ns,
                    partition,
                    version,
                },
        } = q.work
        else {
            return;
        };
        p.busy = true;
        let epoch = p.epoch;
        self.in_flight += 1;
        self.tasks += 1;
        let es = self.es.clone();
        let tx = self.tx.clone();
        let stop = self.hard_stop.clone();
        let metrics = self.metrics.clone();
        let retry = self.cfg.retry.clone();
        let dlq = self.dlq.clone();
        let tp = tp.clone();
        let offset = q.offset;
        let record = q.record;
        tokio::spawn(async move {
            let query = json!({"bool": {"filter": [
                {"range": {"_sync.version": {"lt": version}}},
                {"term": {"_sync.partition": partition}},
                {"term": {"_sync.ns": ns}},
            ]}});
            let result = shared::retry::retry(
                &retry,
                &stop,
                |e: &elastic::EsError, d| {
                    metrics.retry("cleanup", 1);
                    tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "snapshot cleanup failed; retrying");
                },
                || async {
                    elastic::refresh(&es, &index).await?;
                    elastic::delete_by_query(&es, &index, &query).await
                },
            )
            .await;
            let finished = match result {
                Ok(deleted) => {
                    tracing::info!(%index, %ns, partition, version, deleted, "snapshot cleanup done");
                    metrics
                        .cleanups
                        .get_or_create(&crate::metrics::IndexLabels {
                            index: index.clone(),
                        })
                        .inc_by(deleted);
                    true
                }
                Err(shared::retry::RetryError::Failed(e)) => {
                    let why = DlqReason {
                        error_type: "snapshot_cleanup_failed".into(),
                        reason: e.to_string(),
                        index: Some(index.clone()),
                    };
                    dlq.send(&record, &why, &stop).await
                }
                Err(shared::retry::RetryError::Cancelled) => false,
            };
            let done = if finished {
                vec![(tp.clone(), epoch, offset)]
            } else {
                Vec::new()
            };
            let _ = tx.send(Report::Finished {
                release: vec![(tp, epoch)],
                done,
                slot: true,
            });
        });
    }

    fn buffered(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(n, b), p| {
            (n + p.tracker.outstanding(), b + p.outstanding_bytes)
        })
    }

    fn backpressure(&mut self) {
        let (n, bytes) = self.buffered();
        self.metrics.buffered.set(n as i64);
        let c = &self.cfg.consumer;
        let over = self.held || n >= c.max_buffered_records || bytes >= c.max_buffered_bytes;
        let under =
            !self.held && n <= c.max_buffered_records / 2 && bytes <= c.max_buffered_bytes / 2;
        if !self.paused && over {
            if let Ok(a) = self.consumer.assignment() {
                match self.consumer.pause(&a) {
                    Ok(()) => {
                        self.paused = true;
                        self.metrics.paused.set(1);
                        tracing::info!(buffered = n, bytes, "consumption paused (backpressure)");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot pause consumption"),
                }
            }
        } else if self.paused && under {
            if let Ok(a) = self.consumer.assignment() {
                match self.consumer.resume(&a) {
                    Ok(()) => {
                        self.paused = false;
                        self.metrics.paused.set(0);
                        tracing::info!(buffered = n, "consumption resumed");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot resume consumption"),
                }
            }
        }
    }

    fn publish_status(&self) {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::with_capacity(self.parts.len());
        for ((topic, partition), p) in &self.parts {
            let labels = PartitionLabels {
                topic: topic.clone(),
                partition: *partition,
            };
            let lag = match (p.high_watermark, p.tracker.committable().or(p.stored)) {
                (Some(h), Some(c)) => Some((h - c).max(0)),
                _ => None,
            };
            if let Some(l) = lag {
                self.metrics.lag_records.get_or_create(&labels).set(l);
            }
            let lag_secs = p
                .outstanding
                .values()
                .next()
                .map_or(0, |(t, _)| now_secs.saturating_sub(*t) as i64);
            self.metrics
                .lag_seconds
                .get_or_create(&labels)
                .set(lag_secs);
            out.push(PartitionStatus {
                topic: topic.clone(),
                partition: *partition,
                state: if self.paused {
                    StreamState::Paused
                } else {
                    p.state
                },
                committable: p.tracker.committable(),
                high_watermark: p.high_watermark,
                lag_records: lag,
                outstanding: p.tracker.outstanding(),
                in_flight: p.busy,
            });
        }
        let (n, _) = self.buffered();
        self.status.set_partitions(out, n, self.paused);
    }

    fn spawn_health_checks(&self) {
        let es = self.es.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let ok = elastic::ping(&es).await;
            status.set_elasticsearch_ok(ok);
        });
        let consumer = self.consumer.clone();
        let parts: Vec<Tp> = self.parts.keys().cloned().collect();
        let status = self.status.clone();
        let tx = self.tx.clone();
        let timeout = Duration::from_millis(self.cfg.kafka.operation_timeout_ms);
        tokio::task::spawn_blocking(move || {
            let ok = consumer.fetch_metadata(None, timeout).is_ok();
            status.set_kafka_ok(ok);
            if !ok {
                return;
            }
            let marks: Vec<(Tp, i64)> = parts
                .into_iter()
                .filter_map(|(t, p)| {
                    let (_, high) = consumer.fetch_watermarks(&t, p, timeout).ok()?;
                    Some(((t, p), high))
                })
                .collect();
            let _ = tx.send(Report::Watermarks(marks));
        });
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> SyncConfig {
        let text = include_str!("../../config/es-sync.toml");
        let mut cfg: SyncConfig = shared::config::load_str(
            text,
            std::path::Path::new("config/es-sync.toml"),
            "ES_SYNC",
            std::iter::empty(),
        )
        .unwrap();
        cfg.resolve_paths(std::path::Path::new("config"));
        cfg.validate().unwrap();
        cfg
    }

    #[test]
    fn prefetch_is_bounded_by_our_own_buffer_limits() {
        let mut cfg = shipped();
        cfg.consumer.max_buffered_bytes = 16 << 20;
        cfg.bulk.max_actions = 500;
        let cc = consumer_config(&cfg, "g");
        // librdkafka defaults: 100000 messages, 65536 KiB, 52428800, 1048576.
        assert_eq!(cc.get("queued.min.messages"), Some("500"));
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(cc.get("fetch.max.bytes"), Some("1048576"));
        assert_eq!(cc.get("max.partition.fetch.bytes"), Some("262144"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn user_properties_override_the_prefetch_bounds() {
        let mut cfg = shipped();
        cfg.kafka.properties.insert(
            "queued.max.messages.kbytes".into(),
            shared::config::Secret::new("65536"),
        );
        let cc = consumer_config(&cfg, "g");
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
