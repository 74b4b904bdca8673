//! `es-sync dlq replay`: re-drives dead-lettered records to their original
//! topic and partition once the cause is fixed (a mapping that now accepts
//! the value, a new index built by `reindex`), so the running es-sync
//! indexes them like any record. See `docs/sync.md` ("Re-driving dead
//! letters").
//!
//! 1. **Scan** ([`scan`]): the whole dead-letter topic is read
//!    (`read_committed`), keeping per dead letter its error type, its
//!    source topic/partition/offset, times and whether it is a pointer,
//!    and the marks of those already re-driven.
//! 2. **Select**: not re-driven yet, and matching the filters (error
//!    types, source topics, a `dlq.failed_at` time range). A pointer whose
//!    original its topic no longer holds is counted as gone.
//! 3. `--dry-run` stops here and prints what would be re-driven, per error
//!    type and topic. Otherwise, **re-drive** ([`redrive`]): each selected
//!    record (the copy, or the original a pointer names) is produced back
//!    to its topic and partition and a mark ([`shared::wire::dlq::Redriven`])
//!    to the dead-letter topic, in one Kafka transaction per batch.
//!
//! Delivery guarantee: each dead letter is re-driven at most once by all
//! runs together, and a run that ends early (killed, a broker away) can
//! be run again. A record and its mark are committed together or not at
//! all; a run first initialises its transactional producer (fixed
//! `transactional.id`, default `{group_id}.dlq-replay`), which fences an
//! earlier run still going and aborts its open transaction, and only then
//! reads the marks. Marks live in the dead-letter topic itself, so they
//! are kept exactly as long as the dead letters they mark (a consumer
//! group's committed offsets would expire after the broker's
//! `offsets.retention.minutes`, 7 days by default, and could not skip only
//! the records a filter selected). What is re-driven goes through es-sync
//! again: still bad, it is dead-lettered again as a new dead letter.

pub mod read;
pub mod redrive;
pub mod report;
pub mod scan;

pub use report::{Report, Row};

use crate::config::SyncConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use read::Reader;
use scan::Letter;
use shared::wire::record_size::KAFKA_DEFAULT_MAX_MESSAGE_BYTES;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A re-driven record older than this may bring back a document deleted
/// since (the shipped `index.gc_deletes`): the report says so.
const GC_DELETES_MS: i64 = 12 * 3600 * 1000;

/// What to re-drive.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only these error types (`dlq.error.type`); empty: all.
    pub error_types: Vec<String>,
    /// Only dead letters of these source topics; empty: all.
    pub topics: Vec<String>,
    /// Only dead letters written at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only dead letters written before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Print what would be re-driven; write nothing.
    pub dry_run: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// `transactional.id` of the re-drive producer (default
    /// `{kafka.group_id}.dlq-replay`).
    pub transactional_id: Option<String>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqReplayError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The dead-letter topic does not exist.
    #[error("topic {0} does not exist (or has no partitions)")]
    NoTopic(String),
    /// Reading stalled or a record is not what its headers say.
    #[error("{0}")]
    Read(String),
    /// A bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// Producing failed (the open transaction was aborted: nothing of it
    /// is re-driven or marked).
    #[error("re-driving to {topic}: {source}")]
    Redrive {
        /// Where to.
        topic: String,
        /// The error.
        source: KafkaError,
    },
}

impl Request {
    fn selects(&self, l: &Letter) -> bool {
        (self.error_types.is_empty() || self.error_types.contains(&l.error_type))
            && (self.topics.is_empty() || self.topics.contains(&l.topic))
            && self
                .since
                .is_none_or(|s| l.failed_at.is_some_and(|t| t >= s))
            && self
                .until
                .is_none_or(|u| l.failed_at.is_some_and(|t| t < u))
    }
}

/// Runs a replay (see the module documentation). Blocking.
pub fn run(cfg: &SyncConfig, req: &Request) -> Result<Report, DlqReplayError> {
    if let (Some(s), Some(u)) = (req.since, req.until) {
        if s >= u {
            return Err(DlqReplayError::Usage(format!(
                "--since ({s}) must be before --until ({u})"
            )));
        }
    }
    let started = Instant::now();
    let dlq_topic = cfg.dlq.topic_name();
    let timeout = Duration::from_millis(cfg.kafka.operation_timeout_ms);
    let base = cfg.kafka.client_config();
    let tid = req
        .transactional_id
        .clone()
        .unwrap_or_else(|| format!("{}.dlq-replay", cfg.kafka.group_id));
    let reader = read::consumer(&base, &format!("{tid}.reader"))?;
    // Fence an earlier run before reading the marks (see the module docs);
    // the producer that writes is made after the scan, with the limits of
    // the topics it writes to.
    if !req.dry_run {
        transactional(&base, &tid, &[], timeout)?;
    }
    let bar = report::progress_bar(req.progress);
    bar.set_message("reading the dead-letter topic");
    let (scan, total) = scan::scan(&reader, &dlq_topic, timeout, || bar.inc(1))?;
    bar.set_length(total);
    let mut selected: Vec<Letter> = Vec::new();
    let (mut already, mut filtered) = (0u64, 0u64);
    for l in &scan.letters {
        if scan.marks.contains(&(l.partition, l.offset)) {
            already += 1;
        } else if req.selects(l) {
            selected.push(l.clone());
        } else {
            filtered += 1;
        }
    }
    let gone_now = pointers_gone(&reader, &selected, timeout)?;
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for l in &selected {
        let r = rows
            .entry((l.error_type.clone(), l.topic.clone()))
            .or_insert_with(|| Row::new(&l.error_type, &l.topic));
        r.records += 1;
        r.pointers += u64::from(l.pointer);
        r.gone += u64::from(gone_now.contains(&(l.partition, l.offset)));
    }
    let mut report = Report {
        dlq_topic: dlq_topic.clone(),
        dry_run: req.dry_run,
        dead_letters: scan.letters.len() as u64,
        already_redriven: already,
        filtered_out: filtered,
        foreign: scan.foreign,
        rows: Vec::new(),
        redriven: 0,
        gone: 0,
        older_than_gc_deletes: 0,
        seconds: 0.0,
    };
    if !req.dry_run {
        let to_do: Vec<Letter> = selected
            .iter()
            .filter(|l| !gone_now.contains(&(l.partition, l.offset)))
            .cloned()
            .collect();
        bar.set_position(0);
        bar.set_length(to_do.len() as u64);
        bar.set_message("re-driving");
        let original_reader = read::consumer(&base, &format!("{tid}.originals"))?;
        let admin: AdminClient<DefaultClientContext> = base.create()?;
        let limits = topic_limits(&admin, &to_do, &dlq_topic, timeout);
        let sizes: Vec<usize> = limits.values().copied().collect();
        let producer = transactional(&base, &tid, &sizes, timeout)?;
        let r = redrive::Redriver {
            producer: &producer,
            dlq_reader: &reader,
            original_reader: &original_reader,
            dlq_topic: &dlq_topic,
            limits: &limits,
            timeout,
        };
        let outcome = r.run(&to_do, || bar.inc(1))?;
        let now = now_ms();
        for l in &to_do {
            let key = (l.partition, l.offset);
            let row = rows.get_mut(&(l.error_type.clone(), l.topic.clone()));
            if outcome.redriven.contains(&key) {
                report.redriven += 1;
                if let Some(r) = row {
                    r.redriven += 1;
                }
                let t = l.source_timestamp.or(l.failed_at).unwrap_or(now);
                if now - t > GC_DELETES_MS {
                    report.older_than_gc_deletes += 1;
                }
            } else if outcome.gone.contains(&key) {
                if let Some(r) = row {
                    r.gone += 1;
                }
            }
        }
    }
    bar.finish_and_clear();
    report.gone = rows.values().map(|r| r.gone).sum();
    report.rows = rows.into_values().collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A transactional producer with `transactional.id` `tid`, its
/// transactions initialised (which fences any other producer of that id).
/// Records up to the largest of `limits` pass librdkafka's own check, and
/// batches of several records stay within the smallest (the broker refuses
/// a batch over a topic's `max.message.bytes` whole).
fn transactional(
    base: &ClientConfig,
    tid: &str,
    limits: &[usize],
    timeout: Duration,
) -> Result<BaseProducer, DlqReplayError> {
    let largest = limits.iter().copied().max().unwrap_or(1_000_000);
    let smallest = limits.iter().copied().min().unwrap_or(1_000_000);
    let p: BaseProducer = base
        .clone()
        .set("transactional.id", tid)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set(
            "message.max.bytes",
            largest.clamp(1000, 1_000_000_000).to_string(),
        )
        .set("batch.size", smallest.clamp(1000, 1_000_000).to_string())
        .create()?;
    p.init_transactions(timeout * 3)?;
    Ok(p)
}

/// Dead letters among `selected` that are pointers to records their topic
/// no longer holds (below its low watermark).
fn pointers_gone(
    c: &Reader,
    selected: &[Letter],
    timeout: Duration,
) -> Result<std::collections::HashSet<(i32, i64)>, DlqReplayError> {
    let mut lows: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    let mut out = std::collections::HashSet::new();
    for l in selected.iter().filter(|l| l.pointer) {
        let key = (l.topic.clone(), l.source_partition);
        let (low, high) = match lows.get(&key) {
            Some(w) => *w,
            None => {
                let w = c
                    .fetch_watermarks(&l.topic, l.source_partition, timeout)
                    .unwrap_or((i64::MAX, i64::MAX));
                lows.insert(key, w);
                w
            }
        };
        if l.source_offset < low || l.source_offset >= high {
            out.insert((l.partition, l.offset));
        }
    }
    Ok(out)
}

/// `max.message.bytes` of each topic re-driven to and of the dead-letter
/// topic (Kafka's default when it cannot be read).
fn topic_limits(
    admin: &AdminClient<DefaultClientContext>,
    letters: &[Letter],
    dlq_topic: &str,
    timeout: Duration,
) -> HashMap<String, usize> {
    let mut topics: Vec<&str> = letters.iter().map(|l| l.topic.as_str()).collect();
    topics.push(dlq_topic);
    topics.sort_unstable();
    topics.dedup();
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    // rdkafka's admin futures are completed by its own thread: no runtime.
    let answers = futures::executor::block_on(admin.describe_configs(specs.iter(), &opts))
        .unwrap_or_default();
    let mut out: HashMap<String, usize> = topics
        .iter()
        .map(|t| (t.to_string(), KAFKA_DEFAULT_MAX_MESSAGE_BYTES))
        .collect();
    for (t, a) in topics.iter().zip(answers) {
        if let Some(v) = a
            .ok()
            .and_then(|r| r.get("max.message.bytes").and_then(|e| e.value.clone()))
            .and_then(|v| v.parse().ok())
        {
            out.insert(t.to_string(), v);
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(error_type: &str, topic: &str, failed_at: Option<i64>) -> Letter {
        Letter {
            partition: 0,
            offset: 1,
            error_type: error_type.into(),
            topic: topic.into(),
            source_partition: 2,
            source_offset: 3,
            source_timestamp: None,
            failed_at,
            pointer: false,
        }
    }

    #[test]
    fn filters_select_by_error_type_topic_and_time() {
        let l = letter(
            "mapper_parsing_exception",
            "live.mountain.card",
            Some(1_000),
        );
        assert!(Request::default().selects(&l));
        let by_type = Request {
            error_types: vec!["not_json".into()],
            ..Request::default()
        };
        assert!(!by_type.selects(&l));
        let by_topic = Request {
            topics: vec!["live.mountain.card".into()],
            ..Request::default()
        };
        assert!(by_topic.selects(&l));
        let window = |since, until| Request {
            since,
            until,
            ..Request::default()
        };
        assert!(window(Some(1_000), Some(1_001)).selects(&l));
        assert!(!window(Some(1_001), None).selects(&l));
        assert!(!window(None, Some(1_000)).selects(&l), "until is exclusive");
        // No time known: a time filter leaves it out.
        assert!(!window(Some(0), None).selects(&letter("x", "t", None)));
    }
}
