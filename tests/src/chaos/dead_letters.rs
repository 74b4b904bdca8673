//! Dead letters under load:
//!
//! - the dead-letter topic unavailable: es-sync's dead-letter topic is
//!   deleted (the suite's broker creates no topic by itself, as in the
//!   compose deployment), then a card bad by itself comes (`likes` is not a
//!   number: `mapper_parsing_exception`). Its partition must wait (`/status`
//!   "waiting for the dead-letter topic"), never skip the record nor commit
//!   past it; when the operator creates the topic again, the card is
//!   dead-lettered and the partition goes on;
//! - a record just under mongo-source's limit (1,048,576 bytes as it counts
//!   them) that Elasticsearch refuses as bad by itself: es-sync must
//!   dead-letter it (a pointer: the copy with its reason headers does not
//!   fit the topic's default limit) and go on.
//!
//! In both the application then corrects the card (a number in `likes`),
//! which must be indexed: the verifier ends equal, and the dead-letter
//! topic holds that card only.

use super::run::Run;
use super::Fault;
use crate::kafka::{read_all, Rec};
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use shared::wire::dlq::headers;
use std::time::{Duration, Instant};

/// mongo-source's record limit (`kafka.message_max_bytes`, shipped value).
const SOURCE_LIMIT: usize = 1_048_576;

/// Injects one of the dead-letter faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    match fault {
        Fault::DlqUnavailable => dlq_unavailable(run).await,
        Fault::NearLimitDeadLetter => near_limit(run).await,
        other => unreachable!("{other:?} is not a dead-letter fault"),
    }
}

/// A card whose `likes` Elasticsearch cannot take.
fn bad_card(id: ObjectId, body: String) -> Document {
    doc! {
        "_id": id, "title": "좋아요가 숫자가 아닌 글", "body": body, "likes": "많이",
        "mountain": "설악산", "created_at": DateTime::now(),
    }
}

fn admin() -> AdminClient<DefaultClientContext> {
    crate::kafka::config().create().expect("admin client")
}

/// The dead letters of `key` on es-sync's dead-letter topic.
async fn dead_letters_of(run: &Run, key: &str) -> Vec<Rec> {
    read_all(&run.p.sync_dlq())
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key))
        .collect()
}

async fn wait_dead_letter(run: &Run, key: &str) -> Rec {
    crate::eventually(
        "the bad card dead-lettered",
        Duration::from_secs(120),
        || async { dead_letters_of(run, key).await.into_iter().next() },
    )
    .await
}

async fn dlq_unavailable(run: &mut Run) {
    let topic = run.p.sync_dlq();
    let admin = admin();
    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("delete the dead-letter topic");
    crate::eventually(
        "the dead-letter topic gone",
        Duration::from_secs(60),
        || async { (!crate::kafka::topic_exists(&topic).await).then_some(()) },
    )
    .await;
    let id = ObjectId::new();
    let key = shared::ejson::canonical_key(&Bson::ObjectId(id));
    run.bad_keys.insert(key.clone());
    run.insert_card(bad_card(id, "숫자 아님".into())).await;
    let t = Instant::now();
    run.wait_sync_waiting("waiting for the dead-letter topic", Duration::from_secs(90))
        .await;
    let noticed = t.elapsed();
    let hold = run.pick_ms(3_000..6_000, 3_000..30_000);
    tokio::time::sleep(hold).await;
    // Created again by the operator (a deletion takes a moment to finish).
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
    crate::eventually(
        "the dead-letter topic created again",
        Duration::from_secs(60),
        || async {
            let res = admin
                .create_topics([&new], &AdminOptions::new())
                .await
                .ok()?;
            res.iter()
                .all(|r| match r {
                    Ok(_) => true,
                    Err((_, code)) => *code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                })
                .then_some(())
        },
    )
    .await;
    let dl = wait_dead_letter(run, &key).await;
    run.note = format!(
        "topic gone {:.0} s, noticed in {:.1} s; then dead-lettered {}",
        (hold + noticed).as_secs_f64(),
        noticed.as_secs_f64(),
        dl.headers
            .get(headers::ERROR_TYPE)
            .map_or("?", String::as_str)
    );
    run.update_card(&Bson::ObjectId(id), doc! {"likes": 3})
        .await;
}

/// mongo-source's size of a record (`source/src/kafka/record.rs`,
/// `Record::wire_size`).
fn source_size(r: &Rec) -> usize {
    r.key.as_ref().map_or(0, String::len)
        + r.raw.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
        + 128
}

/// The change event of `key` on the card topic (the first one).
async fn event_of(run: &Run, key: &str) -> Rec {
    let topic = run.p.source.topic("card");
    crate::eventually("the card's event", Duration::from_secs(120), || async {
        read_all(&topic)
            .await
            .into_iter()
            .find(|r| r.key.as_deref() == Some(key))
    })
    .await
}

async fn near_limit(run: &mut Run) {
    // A small card of the same shape first: its record's size tells how
    // large the body must be for the record to end just under the limit.
    let probe = ObjectId::new();
    let probe_body = "크기 재기".to_string();
    let mut small = bad_card(probe, probe_body.clone());
    small.insert("likes", 1);
    run.insert_card(small).await;
    let probe_key = shared::ejson::canonical_key(&Bson::ObjectId(probe));
    let base = source_size(&event_of(run, &probe_key).await) - probe_body.len();
    // Room for the later update's `update` field and `likes` digits.
    let target = SOURCE_LIMIT - 200;
    let filler =
        crate::workload::Workload::new(run.p.sync_admin_port.into()).text_of_bytes(target - base);
    let mut body = filler;
    let mut end = target - base;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body.truncate(end);
    let id = ObjectId::new();
    let key = shared::ejson::canonical_key(&Bson::ObjectId(id));
    run.bad_keys.insert(key.clone());
    run.insert_card(bad_card(id, body)).await;
    let ev = event_of(run, &key).await;
    let size = source_size(&ev);
    assert!(
        size <= SOURCE_LIMIT && size > SOURCE_LIMIT - 1_000,
        "the record takes {size} bytes, not just under {SOURCE_LIMIT}"
    );
    assert!(
        ev.value["doc"].get("_truncated").is_none(),
        "sent whole, not cut"
    );
    let dl = wait_dead_letter(run, &key).await;
    let form = if dl.headers.contains_key(headers::POINTER) {
        "a pointer"
    } else {
        "a whole copy"
    };
    assert_eq!(
        dl.headers.get(headers::ERROR_TYPE).map(String::as_str),
        Some("mapper_parsing_exception"),
        "{:?}",
        dl.headers
    );
    run.note = format!("record {size} bytes, dead-lettered as {form}");
    run.update_card(&Bson::ObjectId(id), doc! {"likes": 7})
        .await;
}
