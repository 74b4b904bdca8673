//! Smoke test of the Kafka broker of the test bench, through rdkafka:
//! keyed produce to 3 partitions, group consume with commit and resume,
//! and a transactional produce seen by a read_committed consumer.

use e2e_tests::kafka::{config, create_topic, read_all};
use e2e_tests::unique;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::HashSet;
use std::time::Duration;

async fn produce(p: &FutureProducer, topic: &str, key: &str, value: &str) {
    p.send(
        FutureRecord::to(topic).key(key).payload(value),
        Duration::from_secs(10),
    )
    .await
    .expect("delivery");
}

fn consumer(group: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

async fn take(c: &StreamConsumer, n: usize) -> Vec<String> {
    let mut out = vec![];
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("message in time")
            .expect("message");
        out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
    }
    out
}

#[tokio::test]
async fn keyed_produce_group_consume_commit_and_resume() {
    let topic = unique("smoke-");
    create_topic(&topic, 3, &[]).await;
    let producer: FutureProducer = config().create().expect("producer");
    for i in 0..10 {
        produce(&producer, &topic, &format!("k{}", i % 4), &format!("v{i}")).await;
    }
    let partitions: HashSet<i32> = read_all(&topic).await.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );

    let group = unique("group-");
    let c = consumer(&group, &topic);
    let first = take(&c, 10).await;
    assert_eq!(first.len(), 10);
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
    drop(c);

    for i in 10..13 {
        produce(&producer, &topic, "k0", &format!("v{i}")).await;
    }
    let c = consumer(&group, &topic);
    let resumed = take(&c, 3).await;
    assert_eq!(
        resumed,
        vec!["v10", "v11", "v12"],
        "resumed at the committed offset"
    );
}

#[tokio::test]
async fn transactional_produce_is_visible_to_read_committed_only_when_committed() {
    let topic = unique("smoke-txn-");
    create_topic(&topic, 1, &[]).await;
    let producer: FutureProducer = config()
        .set("transactional.id", unique("tid-"))
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");

    producer.begin_transaction().expect("begin");
    produce(&producer, &topic, "a", "aborted").await;
    producer
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");

    producer.begin_transaction().expect("begin");
    produce(&producer, &topic, "a", "committed").await;
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");

    let seen: Vec<String> = read_all(&topic)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.raw.unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(seen, vec!["committed"]);
}
