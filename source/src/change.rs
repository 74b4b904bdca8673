//! From a change-stream document to the event written to Kafka: the
//! decoding itself is the wire contract's ([`shared::wire::change_stream`]);
//! what only the stream can know is here: the rank of a change among the
//! changes of the same document inside one transaction ([`TxnRanks`]), the
//! `n` of the version layout ([`shared::wire::version`]).

use crate::error::StreamError;
use mongodb::bson::{Document, RawDocument};
pub use shared::wire::change_stream::{decode_raw, marker, Decoded, RawChange};
use shared::wire::event::{ChangeEvent, ClusterTime, Namespace, Ranked, SnapshotInfo};
use shared::wire::position::TxnProgress;
use std::collections::HashMap;

/// [`shared::wire::change_stream::read_raw`], with the stream's error.
pub fn read_raw(raw: &RawDocument) -> Result<(Document, bool), StreamError> {
    shared::wire::change_stream::read_raw(raw).map_err(|e| StreamError::BadEvent(e.0))
}

/// [`shared::wire::change_stream::decode`], with the stream's error.
pub fn decode(raw: &Document, ns: &Namespace) -> Result<Decoded, StreamError> {
    shared::wire::change_stream::decode(raw, ns).map_err(|e| StreamError::BadEvent(e.0))
}

/// [`shared::wire::change_stream::snapshot_record`], with the stream's error.
pub fn snapshot_record(
    doc: &Document,
    ns: &Namespace,
    snapshot: &SnapshotInfo,
) -> Result<(String, ChangeEvent), StreamError> {
    shared::wire::change_stream::snapshot_record(doc, ns, snapshot)
        .map_err(|e| StreamError::BadEvent(e.0))
}

/// Identity of a transaction: session, number, cluster time.
#[derive(Debug, Clone, PartialEq)]
struct TxnId {
    lsid: serde_json::Value,
    txn_number: i64,
    cluster_time: ClusterTime,
}

/// Ranks the changes of each document inside the current transaction, in
/// stream order (0 for a document's first change in it). Changes of one
/// transaction are contiguous in a change stream, so only the current one
/// is tracked; its state is saved with each committed position
/// ([`TxnRanks::progress`]) and restored when a stream resumes inside a
/// transaction: the changes after the resume point then rank from the
/// number of changes already written on, above every rank given before, so
/// no two changes of one document share a version even across a restart.
#[derive(Debug, Default)]
pub struct TxnRanks {
    current: Option<TxnId>,
    /// Rank of the first change of each document since the resume point.
    base: u32,
    /// Changes per document key since the resume point (or the start of
    /// the transaction).
    seen: HashMap<String, u32>,
    /// Changes of the current transaction written by the stream.
    changes: u64,
}

impl TxnRanks {
    /// A tracker that resumes after a committed position's `progress`.
    pub fn resume(progress: Option<&TxnProgress>) -> Self {
        let Some(p) = progress else {
            return Self::default();
        };
        Self {
            current: Some(TxnId {
                lsid: p.lsid.clone(),
                txn_number: p.txn_number,
                cluster_time: p.cluster_time,
            }),
            base: u32::try_from(p.changes).unwrap_or(u32::MAX),
            seen: HashMap::new(),
            changes: p.changes,
        }
    }

    /// Gives `event` (of document `key`) its rank and version; `true` when
    /// the version had to be clamped ([`ChangeEvent::set_rank`]).
    pub fn assign(&mut self, key: &str, event: &mut impl Ranked) -> bool {
        let Some(txn) = event.txn() else {
            self.reset(None);
            return event.set_rank(0);
        };
        let cluster_time = event.cluster_time();
        let same = self.current.as_ref().is_some_and(|c| {
            c.txn_number == txn.txn_number && c.cluster_time == cluster_time && c.lsid == txn.lsid
        });
        if !same {
            let id = TxnId {
                lsid: txn.lsid.clone(),
                txn_number: txn.txn_number,
                cluster_time,
            };
            self.reset(Some(id));
        }
        let count = self.seen.entry(key.to_string()).or_insert(0);
        let rank = self.base.saturating_add(*count);
        *count = count.saturating_add(1);
        self.changes += 1;
        event.set_rank(rank)
    }

    fn reset(&mut self, id: Option<TxnId>) {
        self.current = id;
        self.base = 0;
        self.seen.clear();
        self.changes = 0;
    }

    /// What a position committed now must remember (`None` outside a
    /// transaction).
    pub fn progress(&self) -> Option<TxnProgress> {
        self.current.as_ref().map(|id| TxnProgress {
            lsid: id.lsid.clone(),
            txn_number: id.txn_number,
            cluster_time: id.cluster_time,
            changes: self.changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Timestamp};
    use shared::wire::version::{Version, MAX_RANK};

    fn ns() -> Namespace {
        Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        }
    }

    /// A decoded change of `id` at cluster time `(t, i)`, in transaction
    /// `txn` of session "s" when given.
    fn change(id: &str, t: u32, i: u32, txn: Option<i64>) -> (String, ChangeEvent) {
        let mut raw = doc! {
            "_id": { "_data": "token" },
            "operationType": "update",
            "clusterTime": Timestamp { time: t, increment: i },
            "documentKey": { "_id": id },
            "fullDocument": { "_id": id, "x": 1_i32 },
        };
        if let Some(n) = txn {
            raw.insert("lsid", doc! { "id": "s" });
            raw.insert("txnNumber", n);
        }
        let Decoded::Change { key, event } = decode(&raw, &ns()).unwrap() else {
            panic!()
        };
        (key, *event)
    }

    fn ranked(r: &mut TxnRanks, id: &str, t: u32, i: u32, txn: Option<i64>) -> ChangeEvent {
        let (key, mut ev) = change(id, t, i, txn);
        assert!(!r.assign(&key, &mut ev));
        ev
    }

    #[test]
    fn changes_of_one_document_in_one_transaction_get_increasing_versions() {
        let mut r = TxnRanks::default();
        let a1 = ranked(&mut r, "a", 100, 5, Some(1));
        let b1 = ranked(&mut r, "b", 100, 5, Some(1));
        let a2 = ranked(&mut r, "a", 100, 5, Some(1));
        let a3 = ranked(&mut r, "a", 100, 5, Some(1));
        assert!(a1.version < a2.version && a2.version < a3.version);
        assert_eq!(a1.version, b1.version, "other documents need no rank");
        assert_eq!(a3.txn.as_ref().unwrap().rank, 2);
        assert_eq!(Version::from_u64(a3.version).parts().n, 2);
        // The next transaction (same session, next number) starts over and
        // still comes after.
        let a4 = ranked(&mut r, "a", 100, 6, Some(2));
        assert_eq!(a4.txn.as_ref().unwrap().rank, 0);
        assert!(a4.version > a3.version);
        // A change outside a transaction has rank 0.
        let a5 = ranked(&mut r, "a", 100, 7, None);
        assert_eq!(Version::from_u64(a5.version).parts().n, 0);
        assert!(r.progress().is_none());
    }

    #[test]
    fn a_resumed_transaction_ranks_above_what_was_written() {
        let mut r = TxnRanks::default();
        let a1 = ranked(&mut r, "a", 100, 5, Some(1));
        let _b1 = ranked(&mut r, "b", 100, 5, Some(1));
        let a2 = ranked(&mut r, "a", 100, 5, Some(1));
        let saved = r.progress().unwrap();
        assert_eq!(saved.changes, 3);
        // Restart: the tracker is rebuilt from the committed position.
        let mut r = TxnRanks::resume(Some(&saved));
        let a3 = ranked(&mut r, "a", 100, 5, Some(1));
        let b2 = ranked(&mut r, "b", 100, 5, Some(1));
        assert!(a3.version > a2.version && a2.version > a1.version);
        assert_eq!(Version::from_u64(b2.version).parts().n, 3);
        assert_eq!(r.progress().unwrap().changes, 5);
        // A resume point whose transaction is over: the next one starts at 0.
        let mut r = TxnRanks::resume(Some(&saved));
        let c = ranked(&mut r, "c", 100, 6, Some(2));
        assert_eq!(Version::from_u64(c.version).parts().n, 0);
    }

    #[test]
    fn ranks_past_the_layout_are_clamped_and_reported() {
        let mut r = TxnRanks::default();
        let mut last = 0;
        for k in 0..=MAX_RANK + 2 {
            let (key, mut ev) = change("a", 100, 5, Some(1));
            let clamped = r.assign(&key, &mut ev);
            assert_eq!(clamped, k > MAX_RANK, "rank {k}");
            assert!(ev.version >= last);
            last = ev.version;
        }
        assert!(last < Version::of_cluster_time(100, 6).as_u64());
    }
}
