//! Kafka helpers: topic creation and the read_committed counting consumer
//! that times what a source (ours or a peer) made visible.

use anyhow::{bail, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
/// `topics` with read_committed until `n` records, or `timeout` passes, or
/// `cancel` is set. Markers (records without key) are not counted.
pub fn read_n(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    n: u64,
    timeout: Duration,
    cancel: &AtomicBool,
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
        if cancel.load(Ordering::Relaxed) {
            bail!("read {} of {n} records: given up", run.count);
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

/// [`read_n`] on a blocking thread, given up when this future is dropped
/// (a trial that failed otherwise: the process exits only once every
/// blocking thread is done, and a reader left behind kept the bench
/// running until its trial's timeout, minutes after its result).
pub async fn read_n_async(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    n: u64,
    timeout: Duration,
) -> Result<ReadRun> {
    /// Sets the flag when dropped.
    struct CancelOnDrop(Arc<AtomicBool>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let (b, t) = (bootstrap.to_string(), topics.to_vec());
    tokio::task::spawn_blocking(move || read_n(&b, &t, partitions, n, timeout, &flag)).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime waits for its blocking threads when dropped: a reader
    /// left polling after its trial failed kept the bench from exiting
    /// until the reader's timeout.
    #[test]
    fn a_runtime_whose_reader_was_dropped_shuts_down_at_once() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            // No broker there: the reader would poll until its timeout.
            let topics = ["nowhere".to_string()];
            let read = read_n_async("127.0.0.1:9", &topics, 1, 10, Duration::from_secs(600));
            let gave_up = tokio::time::timeout(Duration::from_millis(300), read).await;
            assert!(gave_up.is_err(), "no broker, no records");
        });
        let began = Instant::now();
        drop(rt);
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the runtime waited {:?} for the reader",
            began.elapsed()
        );
    }
}
