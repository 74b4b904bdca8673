//! Kafka helpers: topic creation, a read_committed counting/reading
//! consumer, and the plain producer loop baseline.

use anyhow::{bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One record read back from a topic.
#[derive(Clone)]
pub struct Rec {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers `(name, value)`.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Creates topics with `partitions` partitions (existing ones are fine).
pub async fn create_topics(bootstrap: &str, topics: &[String], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for r in res {
        if let Err((t, e)) = r {
            if e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("create topic {t}: {e}");
            }
        }
    }
    Ok(())
}

fn consumer(bootstrap: &str, topics: &[String], partitions: i32) -> Result<BaseConsumer> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    Ok(c)
}

/// Result of reading `n` records.
pub struct ReadRun {
    /// Records read (with their data when `keep`).
    pub records: Vec<Rec>,
    /// Records counted.
    pub count: u64,
    /// Value + key bytes counted.
    pub bytes: u64,
    /// Time of the first record, from the start of the read.
    pub first: Duration,
    /// Time of the last (n-th) record.
    pub last: Duration,
}

/// Reads (blocking, run it in `spawn_blocking`) from the beginning of
/// `topics` with read_committed until `n` records, or `timeout` passes.
/// Markers (records without key) are not counted.
pub fn read_n(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    n: u64,
    keep: bool,
    timeout: Duration,
) -> Result<ReadRun> {
    let c = consumer(bootstrap, topics, partitions)?;
    let t0 = Instant::now();
    let mut run = ReadRun {
        records: vec![],
        count: 0,
        bytes: 0,
        first: Duration::ZERO,
        last: Duration::ZERO,
    };
    while run.count < n {
        if t0.elapsed() > timeout {
            bail!("read {} of {n} records in {timeout:?}", run.count);
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => tracing_free_warn(&format!("consumer: {e}")),
            Some(Ok(m)) => {
                let Some(key) = m.key() else { continue };
                if run.count == 0 {
                    run.first = t0.elapsed();
                }
                run.count += 1;
                let v = m.payload().unwrap_or_default();
                run.bytes += (v.len() + key.len()) as u64;
                if keep {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    run.records.push(Rec {
                        key: Some(key.to_vec()),
                        value: v.to_vec(),
                        headers,
                    });
                }
                run.last = t0.elapsed();
            }
        }
    }
    Ok(run)
}

fn tracing_free_warn(msg: &str) {
    eprintln!("bench: {msg}");
}

struct Counting {
    ok: Arc<AtomicU64>,
    err: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.err.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Result of the producer loop.
pub struct ProduceRun {
    /// Records acknowledged.
    pub acked: u64,
    /// Records failed.
    pub failed: u64,
    /// Send of the first record to the last acknowledgement.
    pub elapsed: Duration,
}

/// Plain producer loop (blocking): every record to `topic` (its key picks
/// the partition), acks=all, idempotent, zstd, librdkafka defaults
/// otherwise; waits for every acknowledgement.
pub fn produce_all(bootstrap: &str, topic: &str, recs: &[Rec]) -> Result<ProduceRun> {
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let p: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("partitioner", "murmur2_random")
        .create_with_context(Counting {
            ok: ok.clone(),
            err: err.clone(),
        })?;
    let t0 = Instant::now();
    for r in recs {
        let mut h = OwnedHeaders::new();
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut rec = BaseRecord::to(topic).payload(&r.value).headers(h);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        let mut rec = rec;
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                        bail!("produce: {e}");
                    }
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).context("flush")?;
    let elapsed = t0.elapsed();
    Ok(ProduceRun {
        acked: ok.load(Ordering::Relaxed),
        failed: err.load(Ordering::Relaxed),
        elapsed,
    })
}
