//! The steady mixed write load of the chaos runs, on `card` and `reply`
//! (seeded, Korean and English text of [`crate::workload`]): inserts,
//! updates and deletes of cards, inserts, edits and deletes of replies,
//! multi-document transactions (a card, a reply to it and an update of
//! another card, committed together), and now and then a card near the
//! size limit of mongo-source's records (1,048,576 bytes: a body of
//! 0.95-1.0 MB, sent whole) or over it (1.1 MB: sent cut to fit, with a
//! pointer on the source's dead-letter topic).
//!
//! A write that fails (a server restarting under chaos) is not retried:
//! it may or may not have happened, and the comparison at the end decides,
//! not the count.

use crate::workload::Workload;
use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::{Client, Collection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every `LARGE_EVERY`-th write is a card near the record limit.
const LARGE_EVERY: u64 = 300;
/// Every `OVERSIZED_EVERY`-th write is a card over the record limit.
const OVERSIZED_EVERY: u64 = 700;
/// Body of a card near the limit: this many bytes, minus up to 50,000.
const NEAR_LIMIT_BYTES: usize = 1_000_000;
/// Body of a card over the limit.
const OVER_LIMIT_BYTES: usize = 1_100_000;

/// What the load did.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// Writes attempted (a transaction counts its three writes).
    pub writes: u64,
    /// Writes that failed (the server was away).
    pub failed: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Cards near the record limit inserted.
    pub near_limit: u64,
    /// Ids of the cards over the record limit (their changes are cut to
    /// fit by mongo-source and each leaves a pointer on its dead-letter
    /// topic).
    pub oversized: Vec<ObjectId>,
}

/// Starts the load on database `db` of `client` until `stop` is set.
pub fn spawn(
    client: Client,
    db: &str,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LoadStats> {
    let db = client.database(db);
    let cards: Collection<Document> = db.collection("card");
    let replies: Collection<Document> = db.collection("reply");
    tokio::spawn(async move {
        let mut w = Workload::new(seed);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let mut reply_ids: Vec<ObjectId> = Vec::new();
        let mut st = LoadStats::default();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let res: Result<u64, mongodb::error::Error> = if n.is_multiple_of(OVERSIZED_EVERY) {
                let card = big_card(&mut w, &mut rng, OVER_LIMIT_BYTES);
                let id = card.get_object_id("_id").ok();
                let r = cards.insert_one(card).await.map(|_| 1);
                if let (Ok(_), Some(id)) = (&r, id) {
                    st.oversized.push(id);
                }
                r
            } else if n.is_multiple_of(LARGE_EVERY) {
                let size = NEAR_LIMIT_BYTES - rng.random_range(0..50_000);
                let r = cards
                    .insert_one(big_card(&mut w, &mut rng, size))
                    .await
                    .map(|_| 1);
                if r.is_ok() {
                    st.near_limit += 1;
                }
                r
            } else {
                match n % 20 {
                    0..=6 => cards.insert_one(w.card()).await.map(|_| 1),
                    7..=10 => match w.card_update() {
                        Some((f, u)) => cards.update_one(f, u).await.map(|_| 1),
                        None => Ok(0),
                    },
                    11..=13 => match w.reply() {
                        Some(r) => {
                            let id = r.get_object_id("_id").ok();
                            let res = replies.insert_one(r).await.map(|_| 1);
                            if let (Ok(_), Some(id)) = (&res, id) {
                                reply_ids.push(id);
                            }
                            res
                        }
                        None => Ok(0),
                    },
                    14 => edit_reply(&replies, &mut reply_ids, &mut rng, false).await,
                    15 => edit_reply(&replies, &mut reply_ids, &mut rng, true).await,
                    16 | 17 => match w.card_to_delete() {
                        Some(id) => cards.delete_one(doc! { "_id": id }).await.map(|_| 1),
                        None => Ok(0),
                    },
                    _ => {
                        let r = transaction(&client, &cards, &replies, &mut w).await;
                        if let Ok(Some(reply)) = &r {
                            reply_ids.push(*reply);
                            st.transactions += 1;
                        }
                        r.map(|_| 3)
                    }
                }
            };
            match res {
                Ok(k) => {
                    st.writes += k;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    st.writes += 1;
                    st.failed += 1;
                    eprintln!("load: write failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        st
    })
}

/// A card whose body is about `bytes` bytes of text.
fn big_card(w: &mut Workload, rng: &mut StdRng, bytes: usize) -> Document {
    let mut card = w.card();
    let mut body = w.text_of_bytes(bytes);
    // Cut on a character boundary.
    let mut end = bytes - rng.random_range(0..16);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body.truncate(end);
    card.insert("body", body);
    card
}

/// Changes the body of a random reply, or deletes it.
async fn edit_reply(
    replies: &Collection<Document>,
    ids: &mut Vec<ObjectId>,
    rng: &mut StdRng,
    delete: bool,
) -> Result<u64, mongodb::error::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let i = rng.random_range(0..ids.len());
    if delete {
        let id = ids.swap_remove(i);
        replies.delete_one(doc! { "_id": id }).await.map(|_| 1)
    } else {
        let body = format!("수정된 댓글 {}", rng.random_range(0..10_000));
        replies
            .update_one(doc! { "_id": ids[i] }, doc! { "$set": { "body": body } })
            .await
            .map(|_| 1)
    }
}

/// One transaction: a new card, a reply to it, and an update of another
/// card. Returns the reply's id when it committed.
async fn transaction(
    client: &Client,
    cards: &Collection<Document>,
    replies: &Collection<Document>,
    w: &mut Workload,
) -> Result<Option<ObjectId>, mongodb::error::Error> {
    let other = w.card_update();
    let card = w.card();
    let card_id = card.get_object_id("_id").ok();
    let reply_id = ObjectId::new();
    let mut s = client.start_session().await?;
    s.start_transaction().await?;
    let res = async {
        cards.insert_one(card).session(&mut s).await?;
        let mut reply = w.reply().unwrap_or_default();
        reply.insert("_id", reply_id);
        if let Some(id) = card_id {
            reply.insert("card_id", id);
        }
        replies.insert_one(reply).session(&mut s).await?;
        if let Some((f, u)) = other {
            cards.update_one(f, u).session(&mut s).await?;
        }
        Ok::<(), mongodb::error::Error>(())
    }
    .await;
    match res {
        Ok(()) => {
            s.commit_transaction().await?;
            Ok(Some(reply_id))
        }
        Err(e) => {
            let _ = s.abort_transaction().await;
            Err(e)
        }
    }
}
