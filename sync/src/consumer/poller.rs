//! The Kafka poller: one thread owns the consumer's poll loop, so no
//! blocking Kafka call (poll, the synchronous commit on revocation, seek,
//! subscribe) ever runs on the async runtime. It hands records to the loop
//! over a bounded channel, and rebalances, restarts and the client's
//! statistics over an unbounded one that the loop always drains first (a
//! rebalance must never wait behind records the loop has no room for).
//!
//! Backpressure: when the channel is full the poller stops polling, so
//! librdkafka's prefetch (bounded, see [`super::config`]) fills and
//! fetching stops, with nothing dropped and no cold restart. Only a long
//! stall (`STALL`: Elasticsearch away, say) pauses the partitions, so the
//! poller can go on polling (a consumer that does not poll for
//! `max.poll.interval.ms` is thrown out of the group) without taking more
//! records; they resume when the loop takes records again.
//!
//! Generations: every assignment (and every restart of a partition by a
//! seek) gets a new generation; a record carries the generation it was
//! read in, so the loop drops records of an assignment that is over. The
//! event announcing a generation is sent before any record of it, and the
//! loop takes events before records.
//!
//! Delivery guarantee: none by itself; offsets are stored by the loop only
//! for records done, and committed by librdkafka (periodically, on
//! revocation synchronously here, and at the end).

use crate::record::RawRecord;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Topic and partition.
pub(super) type Tp = (Arc<str>, i32);

/// How long the channel may stay full before the partitions are paused.
const STALL: Duration = Duration::from_secs(10);

/// A record, read in this generation of its partition.
#[derive(Debug)]
pub(super) struct Polled(pub(super) RawRecord, pub(super) u64);

/// What else the poller tells the loop.
#[derive(Debug)]
pub(super) enum Event {
    /// Partitions assigned, with their generations.
    Assigned(Vec<(Tp, u64)>),
    /// Partitions revoked (their stored offsets were committed).
    Revoked(Vec<Tp>),
    /// A partition restarted from an earlier offset (a seek), in a new
    /// generation: drop its state, records follow from there.
    Reset(Tp, u64),
    /// The client's statistics: per partition, its marks, and whether a
    /// broker is up.
    Stats(Vec<(Tp, super::queue::Marks)>, bool),
}

/// What the loop asks of the poller.
#[derive(Debug)]
pub(super) enum Command {
    /// Restart a partition from this offset.
    Seek(Tp, i64),
    /// Stop (or go on) taking records: an operator's pause.
    Hold(bool),
    /// Commit what is stored, then leave the group.
    Unsubscribe(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Join the group again.
    Subscribe(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Commit what is stored and end.
    Stop,
}

/// State shared by the consumer context (run inside `poll`) and the poller.
pub struct Ctx {
    events: mpsc::UnboundedSender<Event>,
    gens: Mutex<HashMap<Tp, u64>>,
    /// One past the last record handed to the loop, per partition.
    handed: Mutex<HashMap<Tp, i64>>,
    next_gen: AtomicU64,
    /// Partitions are paused (operator, or a long stall): new assignments
    /// are paused too.
    paused: AtomicBool,
}

impl Ctx {
    /// A context telling the loop through `events`.
    pub(super) fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            events,
            gens: Mutex::new(HashMap::new()),
            handed: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            paused: AtomicBool::new(false),
        }
    }

    fn new_gen(&self, tp: &Tp) -> u64 {
        let g = self.next_gen.fetch_add(1, Ordering::Relaxed);
        lock(&self.gens).insert(tp.clone(), g);
        lock(&self.handed).insert(tp.clone(), 0);
        g
    }

    fn gen(&self, tp: &Tp) -> Option<u64> {
        lock(&self.gens).get(tp).copied()
    }

    fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tpl_parts(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        let up = s.brokers.values().any(|b| b.state == "UP");
        let gens = lock(&self.gens);
        let handed = lock(&self.handed);
        let mut marks = Vec::new();
        for (tp, _) in gens.iter() {
            let Some(p) = s.topics.get(&*tp.0).and_then(|t| t.partitions.get(&tp.1)) else {
                continue;
            };
            if p.hi_offset < 0 {
                continue;
            }
            marks.push((
                tp.clone(),
                super::queue::Marks {
                    high: p.hi_offset,
                    stable: if p.ls_offset >= 0 {
                        p.ls_offset
                    } else {
                        p.hi_offset
                    },
                    // Before the first record is handed over, the position
                    // is where the partition starts: its committed offset.
                    position: if p.app_offset >= 0 {
                        p.app_offset
                    } else {
                        p.committed_offset.max(0)
                    },
                    committed: p.committed_offset.max(0),
                    handed: handed.get(tp).copied().unwrap_or(0),
                },
            ));
        }
        drop((gens, handed));
        self.send(Event::Stats(marks, up));
    }
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
            {
                let mut gens = lock(&self.gens);
                for tp in &parts {
                    gens.remove(tp);
                }
            }
            self.send(Event::Revoked(parts));
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = tpl_parts(tpl);
                tracing::info!(partitions = ?parts, "assigned");
                if self.paused.load(Ordering::Relaxed) {
                    if let Err(e) = base.pause(tpl) {
                        tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                    }
                }
                let with_gens = parts.into_iter().map(|tp| {
                    let g = self.new_gen(&tp);
                    (tp, g)
                });
                self.send(Event::Assigned(with_gens.collect()));
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The consumer type.
pub type SyncConsumer = BaseConsumer<Ctx>;

/// The loop's handle on the poller thread.
pub(super) struct Poller {
    cmds: std::sync::mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Partitions paused for a long stall or by an operator.
    pub(super) paused: Arc<AtomicBool>,
}

impl Poller {
    /// Starts the thread polling `consumer` (already subscribed), handing
    /// records to `records`.
    pub(super) fn start(
        consumer: Arc<SyncConsumer>,
        topics: Vec<String>,
        records: mpsc::Sender<Polled>,
    ) -> std::io::Result<Self> {
        let (cmds, rx) = std::sync::mpsc::channel();
        let paused = Arc::new(AtomicBool::new(false));
        let flag = paused.clone();
        let thread = std::thread::Builder::new()
            .name("kafka-poller".into())
            .spawn(move || run(&consumer, &rx, &topics, &flag, &records))?;
        Ok(Self {
            cmds,
            thread: Some(thread),
            paused,
        })
    }

    /// A handle on no thread (the one left once the poller was stopped).
    pub(super) fn stopped() -> Self {
        let (cmds, _) = std::sync::mpsc::channel();
        Self {
            cmds,
            thread: None,
            paused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends a command (ignored once the thread ended).
    pub(super) fn send(&self, c: Command) {
        let _ = self.cmds.send(c);
    }

    /// Asks the thread to commit and end, and waits for it (off the
    /// runtime).
    pub(super) async fn stop(mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The poller thread (see the module documentation).
fn run(
    consumer: &SyncConsumer,
    cmds: &std::sync::mpsc::Receiver<Command>,
    topics: &[String],
    paused: &AtomicBool,
    records: &mpsc::Sender<Polled>,
) {
    let ctx = consumer.context();
    let names: Vec<Arc<str>> = topics.iter().map(|t| Arc::from(t.as_str())).collect();
    let mut waiting: VecDeque<Polled> = VecDeque::new();
    let mut full_since: Option<Instant> = None;
    let (mut held, mut stalled) = (false, false);
    let set_paused = |on: bool| {
        if let Ok(a) = consumer.assignment() {
            let r = if on {
                consumer.pause(&a)
            } else {
                consumer.resume(&a)
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, on, "cannot pause or resume the partitions");
            }
        }
        ctx.paused.store(on, Ordering::Relaxed);
        paused.store(on, Ordering::Relaxed);
    };
    loop {
        loop {
            let c = match cmds.try_recv() {
                Ok(c) => c,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                // The loop is gone: nothing more to do.
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            };
            match c {
                Command::Seek(tp, offset) => {
                    match consumer.seek(
                        &tp.0,
                        tp.1,
                        Offset::Offset(offset),
                        Duration::from_secs(10),
                    ) {
                        Ok(()) => {
                            let g = ctx.new_gen(&tp);
                            // Records of the old generation still waiting are dropped.
                            waiting
                                .retain(|Polled(r, _)| (&*r.topic, r.partition) != (&*tp.0, tp.1));
                            tracing::warn!(topic = %tp.0, partition = tp.1, offset, "partition restarted from its first record not done");
                            ctx.send(Event::Reset(tp, g));
                        }
                        Err(e) => {
                            tracing::error!(topic = %tp.0, partition = tp.1, offset, error = %e, "seek failed")
                        }
                    }
                }
                Command::Hold(on) => {
                    held = on;
                    if !stalled {
                        set_paused(on);
                    }
                }
                Command::Unsubscribe(reply) => {
                    let out = match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                            Ok(())
                        }
                        Err(e) => Err(format!("commit failed: {e}")),
                    };
                    consumer.unsubscribe();
                    waiting.clear();
                    let _ = reply.send(out);
                }
                Command::Subscribe(reply) => {
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let _ = reply.send(consumer.subscribe(&names).map_err(|e| e.to_string()));
                }
                Command::Stop => {
                    match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                        Err(e) => tracing::warn!(error = %e, "final commit failed"),
                    }
                    return;
                }
            }
        }
        // Hand over what waits, in order.
        while let Some(p) = waiting.pop_front() {
            match records.try_send(p) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(p)) => {
                    waiting.push_front(p);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if waiting.is_empty() {
            full_since = None;
            if stalled {
                stalled = false;
                if !held {
                    set_paused(false);
                }
                tracing::info!("records taken again: partitions resumed");
            }
        } else {
            let since = *full_since.get_or_insert_with(Instant::now);
            if !stalled && since.elapsed() >= STALL {
                stalled = true;
                set_paused(true);
                tracing::warn!(
                    secs = since.elapsed().as_secs(),
                    "records not taken (Elasticsearch slow or away?): partitions paused"
                );
            }
            if !stalled {
                // Not polling is the backpressure; look again soon.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                if let Some(p) = to_polled(ctx, &m, &names) {
                    waiting.push_back(p);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A record for the loop (with its generation), noting it as handed;
/// `names` are the subscribed topics' names, shared by their records.
fn to_polled(ctx: &Ctx, m: &BorrowedMessage<'_>, names: &[Arc<str>]) -> Option<Polled> {
    let name = names
        .iter()
        .find(|n| n.as_ref() == m.topic())
        .cloned()
        .unwrap_or_else(|| Arc::from(m.topic()));
    let tp: Tp = (name.clone(), m.partition());
    let gen = ctx.gen(&tp)?;
    lock(&ctx.handed).insert(tp, m.offset() + 1);
    let record = RawRecord::copy_of(m, name);
    Some(Polled(record, gen))
}
