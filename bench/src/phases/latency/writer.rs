//! The load generator of a latency run: the changes due at one tick, as at
//! most one `insert_many`, one `update_many` and one `delete_many`, sent at
//! once; each is tracked from its acknowledgement.

use super::track::{tag, Kind, Track};
use anyhow::Result;
use e2e_tests::workload::Workload;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The changes of one tick, split by kind.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// New cards (count).
    pub inserts: usize,
    /// Ids of searchable cards to update.
    pub updates: Vec<String>,
    /// Ids of searchable cards to delete.
    pub deletes: Vec<String>,
}

/// Splits changes `first..first + k` by kind; an update or delete without a
/// free searchable card becomes an insert.
pub fn plan(track: &mut Track, first: u64, k: u64) -> Plan {
    let mut p = Plan::default();
    for n in first..first + k {
        match Kind::of(n) {
            Kind::Insert => p.inserts += 1,
            kind => match track.take_settled(n) {
                Some(id) if kind == Kind::Update => p.updates.push(id),
                Some(id) => p.deletes.push(id),
                None => p.inserts += 1,
            },
        }
    }
    p
}

fn oids(ids: &[String]) -> Vec<Bson> {
    ids.iter()
        .filter_map(|i| ObjectId::parse_str(i).ok())
        .map(Bson::ObjectId)
        .collect()
}

/// Issues changes `first..first + k` (tick number `tick`) and tracks them.
pub async fn write(
    cards: &mongodb::Collection<Document>,
    w: &mut Workload,
    track: &Arc<Mutex<Track>>,
    first: u64,
    k: u64,
    tick: i64,
) -> Result<()> {
    let p = plan(&mut track.lock().expect("track"), first, k);
    let (ins_tag, upd_tag) = (tag(tick, Kind::Insert), tag(tick, Kind::Update));
    let mut docs = Vec::with_capacity(p.inserts);
    let mut ids = Vec::with_capacity(p.inserts);
    for _ in 0..p.inserts {
        let mut d = w.card();
        d.insert("likes", ins_tag);
        if let Some(id) = d.get("_id").and_then(Bson::as_object_id) {
            ids.push(id.to_hex());
        }
        docs.push(d);
    }
    let insert = async {
        if docs.is_empty() {
            return Ok::<_, anyhow::Error>(None);
        }
        cards.insert_many(docs).await?;
        Ok(Some(Instant::now()))
    };
    let update = async {
        if p.updates.is_empty() {
            return Ok::<_, anyhow::Error>(None);
        }
        cards
            .update_many(
                doc! {"_id": {"$in": oids(&p.updates)}},
                doc! {"$set": {"likes": upd_tag, "updated_at": mongodb::bson::DateTime::now()}},
            )
            .await?;
        Ok(Some(Instant::now()))
    };
    let delete = async {
        if p.deletes.is_empty() {
            return Ok::<_, anyhow::Error>(None);
        }
        cards
            .delete_many(doc! {"_id": {"$in": oids(&p.deletes)}})
            .await?;
        Ok(Some(Instant::now()))
    };
    let (i, u, d) = tokio::join!(insert, update, delete);
    let mut t = track.lock().expect("track");
    if let Some(at) = i? {
        t.add_group(ins_tag, at, Kind::Insert, ids);
    }
    if let Some(at) = u? {
        t.add_group(upd_tag, at, Kind::Update, p.updates);
    }
    if let Some(at) = d? {
        t.add_deletes(p.deletes, at);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn without_searchable_cards_everything_is_an_insert() {
        let mut t = Track::default();
        let p = plan(&mut t, 0, 10);
        assert_eq!(p.inserts, 10);
        assert!(p.updates.is_empty() && p.deletes.is_empty());
    }

    #[test]
    fn searchable_cards_are_updated_and_deleted_by_the_mix() {
        let mut t = Track::default();
        let t0 = Instant::now();
        let ids: Vec<String> = (0..20).map(|i| format!("{i:024x}")).collect();
        t.add_group(5, t0, Kind::Insert, ids);
        let snap = t.snapshot();
        t.observe(t0, &snap, &HashMap::from([(5, 20)]), &HashSet::new());
        let p = plan(&mut t, 0, 10);
        assert_eq!((p.inserts, p.updates.len(), p.deletes.len()), (6, 3, 1));
        assert!(
            p.updates.iter().all(|u| !p.deletes.contains(u)),
            "a card is taken once"
        );
        assert_eq!(oids(&p.updates).len(), 3);
    }
}
