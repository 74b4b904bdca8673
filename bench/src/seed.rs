//! Seeding: `n` documents of the shared workload generator (3 cards : 1
//! reply, Korean/English text, long-tail body sizes) inserted with
//! `insert_many` in batches of 500 per collection.

use anyhow::Result;
use e2e_tests::workload::Workload;
use mongodb::bson::Document;
use std::time::Instant;

/// Documents per `insert_many`.
const BATCH: usize = 500;

/// Seconds taken and bytes of BSON inserted.
pub struct Seeded {
    /// Seconds from the first insert to the last acknowledgement.
    pub secs: f64,
    /// BSON bytes of the documents.
    pub bytes: u64,
}

/// Seeds `n` documents into `card` and `reply` of `db`.
pub async fn seed(db: &mongodb::Database, seed: u64, n: u64) -> Result<Seeded> {
    let mut w = Workload::new(seed);
    let cards = db.collection::<Document>("card");
    let replies = db.collection::<Document>("reply");
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let (mut cb, mut rb) = (vec![], vec![]);
    for done in 1..=n {
        let d = if done % 4 == 0 {
            w.reply().unwrap_or_else(|| w.card())
        } else {
            w.card()
        };
        bytes += mongodb::bson::to_vec(&d).map_or(0, |v| v.len() as u64);
        if d.contains_key("card_id") {
            rb.push(d);
        } else {
            cb.push(d);
        }
        if (cb.len() >= BATCH || done == n) && !cb.is_empty() {
            cards.insert_many(std::mem::take(&mut cb)).await?;
        }
        if (rb.len() >= BATCH || done == n) && !rb.is_empty() {
            replies.insert_many(std::mem::take(&mut rb)).await?;
        }
    }
    Ok(Seeded {
        secs: t0.elapsed().as_secs_f64(),
        bytes,
    })
}
