//! Kafka helpers: topic creation and the read_committed counting consumer
//! that times what a source (ours or a peer) made visible.

use anyhow::{bail, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

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
    timeout: Duration,
) -> Result<ReadRun> {
    let c = consumer(bootstrap, topics, partitions)?;
    let t0 = Instant::now();
    let mut run = ReadRun {
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
            Some(Err(e)) => warn(&format!("consumer: {e}")),
            Some(Ok(m)) => {
                let Some(key) = m.key() else { continue };
                if run.count == 0 {
                    run.first = t0.elapsed();
                }
                run.count += 1;
                let v = m.payload().unwrap_or_default();
                run.bytes += (v.len() + key.len()) as u64;
                run.last = t0.elapsed();
            }
        }
    }
    Ok(run)
}

fn warn(msg: &str) {
    crate::log::log(msg);
}

/// [`read_n`] on a blocking thread.
pub async fn read_n_async(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    n: u64,
    timeout: Duration,
) -> Result<ReadRun> {
    let (b, t) = (bootstrap.to_string(), topics.to_vec());
    tokio::task::spawn_blocking(move || read_n(&b, &t, partitions, n, timeout)).await?
}
