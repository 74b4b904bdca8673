//! The resume position of one `mongo-source` stream (schema
//! `mongo-source.position.v1`): a record of the compacted positions topic,
//! key = stream name, written in the same Kafka transaction as the events
//! it covers. `mongo-source` reads it back at start; nothing else does.

use super::event::ClusterTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `schema` header of a position record.
pub const POSITION_SCHEMA: &str = "mongo-source.position.v1";

/// The stored position of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Stream name (`db.collection`), also the record key.
    pub stream: String,
    /// Resume token (canonical Extended JSON of the opaque token), if the
    /// change stream produced one yet.
    #[serde(default)]
    pub token: Option<Value>,
    /// Cluster time of the last event covered (lag and status).
    #[serde(default)]
    pub cluster_time: Option<ClusterTime>,
    /// Where to start the change stream when there is no token yet: right
    /// after a snapshot, its start time.
    #[serde(default)]
    pub start_at: Option<ClusterTime>,
    /// The token is an invalidate event's: reopen with `startAfter`.
    #[serde(default)]
    pub after_invalidate: bool,
    /// Snapshot in progress, if any.
    #[serde(default)]
    pub snapshot: Option<SnapshotProgress>,
    /// The transaction the last covered change belonged to, if the batch
    /// may have ended inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnProgress>,
    /// Events written by this stream so far.
    #[serde(default)]
    pub events: u64,
    /// When this position was committed (ISO-8601).
    pub committed_at: String,
}

/// Progress of a snapshot copy, so a crash resumes the copy where it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Snapshot run id.
    pub id: String,
    /// Snapshot version (from the cluster time read before the copy).
    pub version: u64,
    /// The `_id` of the last document copied (Extended JSON); the copy
    /// goes on after it in `_id` order.
    #[serde(default)]
    pub last_id: Option<Value>,
    /// Documents copied so far.
    #[serde(default)]
    pub copied: u64,
    /// Whether the start marker was written.
    #[serde(default)]
    pub started: bool,
}

/// Where the stream was inside a multi-document transaction when the
/// position was committed: the batch ended between two changes of one
/// transaction. A stream that resumes there gives the transaction's later
/// changes ranks from `changes` on, above any rank given before the
/// restart (see [`super::version`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnProgress {
    /// Logical session id of the transaction, Extended JSON.
    pub lsid: Value,
    /// Transaction number within the session.
    pub txn_number: i64,
    /// The transaction's cluster time.
    pub cluster_time: ClusterTime,
    /// Changes of this transaction already written by the stream.
    pub changes: u64,
}

impl Position {
    /// The record value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips() {
        let p = Position {
            stream: "mountain.card".into(),
            token: Some(serde_json::json!({"_data": "8265..."})),
            cluster_time: Some(ClusterTime { t: 5, i: 1 }),
            start_at: None,
            after_invalidate: false,
            snapshot: None,
            txn: Some(TxnProgress {
                lsid: serde_json::json!({"id": "s"}),
                txn_number: 3,
                cluster_time: ClusterTime { t: 5, i: 1 },
                changes: 2000,
            }),
            events: 10,
            committed_at: "2026-12-01T00:00:00Z".into(),
        };
        let back: Position = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(back, p);
        // A position written before `txn` existed still reads.
        let old = r#"{"stream":"a.b","token":null,"events":1,"committed_at":"x"}"#;
        let back: Position = serde_json::from_str(old).unwrap();
        assert_eq!(back.txn, None);
    }
}
