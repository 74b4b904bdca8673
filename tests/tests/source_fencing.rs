//! mongo-source's Kafka sink when another producer takes its
//! `transactional.id` (issue 15 item 4): every failure after the fencing
//! is reported as [`StreamError::Fenced`], whichever call of the
//! transaction met it.
//!
//! A fencing that lands while the sink commits can reach it in two steps:
//! in a fresh CI run of `source_cluster` (Kafka 4.1.1) the broker answered
//! the commit with UNKNOWN, and only the abort that followed set
//! librdkafka's fatal `_FENCED`. The sink reported that fencing as a
//! retryable Kafka error, so the stream did not count it, and a second
//! fencing would not have given the lease up; the sink now looks at the
//! fatal error again after every abort. This test fences many short
//! transactions (events over three partitions, the position in a topic of
//! its own) at spread moments; it did not meet the UNKNOWN answer in 132
//! rounds here, so it guards the other paths, and `source_cluster`'s
//! fencing test the one seen once.

use e2e_tests::cluster::fence;
use e2e_tests::kafka::create_topic;
use mongo_source::config::KafkaConfig;
use mongo_source::error::StreamError;
use mongo_source::kafka::record::Record;
use mongo_source::kafka::sink::Sink;
use std::time::{Duration, Instant};

fn kafka_config() -> KafkaConfig {
    let text = format!(
        "bootstrap_servers = \"{}\"\ntransaction_timeout_ms = 60000\noperation_timeout_ms = 10000\n",
        e2e_tests::kafka_bootstrap()
    );
    toml::from_str(&text).expect("kafka config")
}

fn record(topic: &str, i: usize) -> Record {
    Record {
        topic: topic.to_string(),
        partition: Some((i % 3) as i32),
        key: Some(format!("k{i}")),
        value: format!("{{\"i\":{i}}}").into_bytes(),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_after_a_fencing_is_reported_as_fenced() {
    let topic = e2e_tests::unique("fencing-");
    // Events over three partitions and the position in a compacted topic
    // of its own, as a stream writes them: the commit writes markers to
    // four partitions of two topics.
    create_topic(&topic, 3, &[]).await;
    let positions = format!("{topic}.offsets");
    create_topic(&positions, 1, &[("cleanup.policy", "compact")]).await;
    let cfg = kafka_config();
    const ROUNDS: u64 = 12;
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let tid = format!("{topic}-{round}");
        let sink = Sink::connect(&cfg, &tid).await.expect("connect");
        // Fence after a delay that moves through the first transactions'
        // steps from round to round.
        let delay = Duration::from_millis(20 + round * 17);
        let fencer = {
            let tid = tid.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                fence(&tid).await;
            })
        };
        let began = Instant::now();
        let mut committed = 0usize;
        let error = loop {
            let records: Vec<Record> = (0..6).map(|i| record(&topic, i)).collect();
            match sink
                .write(
                    &records,
                    Record {
                        topic: positions.clone(),
                        partition: Some(0),
                        ..record(&topic, 999)
                    },
                    |_| Ok(Vec::new()),
                )
                .await
            {
                Ok(()) => committed += 1,
                Err(e) => break e,
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "round {round}: still committing 60 s after the fencing"
            );
        };
        fencer.await.expect("fencer");
        assert!(
            matches!(error, StreamError::Fenced(ref id) if *id == tid),
            "round {round} (fenced after {delay:?}, {committed} transactions committed): \
             reported as {error:?}, not as fenced"
        );
        outcomes.push(committed);
    }
    eprintln!("transactions committed before the fencing, per round: {outcomes:?}");
}
