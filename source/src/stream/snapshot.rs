//! The initial (or re-) snapshot: copy every existing document, then let the
//! change stream go on from the cluster time read *before* the copy began.
//!
//! Nothing between copy and stream is missed: every write after that time
//! is in the change stream, and every write before it is in the copy.
//! Every snapshot record carries the snapshot version (that cluster time),
//! and the stream starts at that time inclusive: every change it delivers
//! has a version >= the snapshot version (equal only for the one change at
//! exactly that time, whose result the copy already holds), so a copy never
//! overwrites a newer change downstream. The copy is written
//! in transactions of `start.snapshot_batch` documents with its progress
//! (last `_id`) as the stream's position: a crash resumes the copy after
//! the last committed document. Start and end markers go to every
//! partition of the topic; after the end marker a partition's consumer
//! knows that any document of that partition older than the snapshot
//! version was deleted meanwhile. Each batch commits while the next one is
//! read ([`super::pipeline`]); the end marker waits for the last of them.

use super::pipeline::{self, Pending};
use super::writer::Batch;
use super::{current_cluster_time, now_iso, Pos, StreamCtx, Writer};
use crate::error::{Result, StreamError};
use crate::kafka::positions::SnapshotProgress;
use crate::metrics::StreamLabel;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use shared::ejson::{bson_to_json, json_to_bson};
use shared::state::StreamState;
use shared::wire::event::{ClusterTime, Operation, SnapshotInfo};

/// Runs (or resumes, given the stored position) a snapshot and returns the
/// position from which the change stream starts.
pub async fn run(ctx: &StreamCtx, writer: &Writer, resume: Option<Pos>) -> Result<Pos> {
    ctx.status.set_state(StreamState::Snapshotting);
    let mut pos = match resume {
        Some(p) if p.snapshot.is_some() => p,
        previous => {
            let ts = current_cluster_time(ctx).await?;
            let version = shared::wire::change_stream::snapshot_version(ts);
            Pos {
                stream: ctx.spec.name.clone(),
                token: None,
                cluster_time: previous.as_ref().and_then(|p| p.cluster_time),
                start_at: Some(ClusterTime {
                    t: ts.time,
                    i: ts.increment,
                }),
                after_invalidate: false,
                snapshot: Some(SnapshotProgress {
                    id: uuid::Uuid::new_v4().to_string(),
                    version,
                    last_id: None,
                    copied: 0,
                    started: false,
                }),
                txn: None,
                events: previous.map_or(0, |p| p.events),
                committed_at: now_iso(),
            }
        }
    };
    let Some(progress) = pos.snapshot.clone() else {
        return Err(StreamError::Internal("snapshot without progress".into()));
    };
    let info = SnapshotInfo {
        id: progress.id.clone(),
        version: progress.version,
    };
    tracing::info!(
        stream = %ctx.spec.name, snapshot = %info.id, version = info.version,
        resumed_after = ?progress.last_id, "snapshot"
    );
    if !progress.started {
        let mut batch = Batch::default();
        writer.add_markers(ctx, &mut batch, Operation::SnapshotStart, &info)?;
        if let Some(s) = pos.snapshot.as_mut() {
            s.started = true;
        }
        pos.committed_at = now_iso();
        writer.commit(ctx, batch, &pos).await?;
    }

    let filter = match &progress.last_id {
        Some(id) => {
            let id = json_to_bson(id).map_err(|e| StreamError::BadPosition {
                stream: ctx.spec.name.clone(),
                message: format!("snapshot last_id: {e}"),
            })?;
            resume_filter(id)
        }
        None => doc! {},
    };
    // Raw: each copy is written straight from its BSON
    // (`Writer::add_snapshot_raw`), and a string that is not UTF-8 is read
    // lossily instead of failing the snapshot.
    let mut cursor = ctx
        .collection()
        .clone_with_type::<RawDocumentBuf>()
        .find(filter)
        .sort(doc! { "_id": 1 })
        .batch_size(u32::try_from(ctx.cfg.start.snapshot_batch).unwrap_or(1000))
        .await?;
    let label = StreamLabel {
        stream: ctx.spec.name.clone(),
    };
    let mut batch = Batch::default();
    let mut last_id: Option<Bson> = None;
    let mut pending: Pending<'_> = None;
    loop {
        let next = match pipeline::read(cursor.try_next(), &mut pending, &ctx.cancel).await? {
            Some(r) => r?,
            None => None,
        };
        let done = next.is_none();
        if let Some(doc) = next {
            writer.add_snapshot_raw(ctx, &mut batch, &doc, &info)?;
            last_id = doc
                .get("_id")
                .ok()
                .flatten()
                .and_then(|id| Bson::try_from(id).ok());
        }
        let full =
            batch.len() >= ctx.cfg.start.snapshot_batch || batch.bytes >= ctx.cfg.batch.max_bytes;
        if (full || done) && !batch.is_empty() {
            let n = batch.len() as u64;
            if let Some(s) = pos.snapshot.as_mut() {
                s.copied += n;
                s.last_id = last_id.as_ref().map(bson_to_json);
            }
            pos.events += n;
            pos.committed_at = now_iso();
            let (batch, at, label) = (std::mem::take(&mut batch), pos.clone(), &label);
            pipeline::hand_over(&mut pending, async move {
                writer.commit(ctx, batch, &at).await?;
                ctx.metrics
                    .snapshot_documents
                    .get_or_create(label)
                    .inc_by(n);
                if let Some(s) = &at.snapshot {
                    ctx.status.snapshot_progress(&s.id, s.copied);
                }
                Ok(())
            })
            .await?;
        }
        if done {
            break;
        }
    }
    pipeline::settle(&mut pending).await?;
    if ctx.cancel.is_cancelled() {
        return Err(StreamError::Internal(
            "shutdown during snapshot (progress committed)".into(),
        ));
    }
    let mut batch = Batch::default();
    writer.add_markers(ctx, &mut batch, Operation::SnapshotEnd, &info)?;
    let copied = pos.snapshot.as_ref().map_or(0, |s| s.copied);
    pos.snapshot = None;
    pos.committed_at = now_iso();
    writer.commit(ctx, batch, &pos).await?;
    tracing::info!(stream = %ctx.spec.name, snapshot = %info.id, copied, "snapshot complete");
    Ok(pos)
}

/// MongoDB's sort order of BSON types, as `$type` aliases per rank
/// (<https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/>).
const TYPE_ORDER: &[&[&str]] = &[
    &["minKey"],
    &["null", "undefined"],
    &["double", "int", "long", "decimal"],
    &["symbol", "string"],
    &["object"],
    &["array"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["maxKey"],
];

fn type_rank(v: &Bson) -> Option<usize> {
    let alias = match v {
        Bson::MinKey => "minKey",
        Bson::Null | Bson::Undefined => "null",
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => "double",
        Bson::Symbol(_) | Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Timestamp(_) => "timestamp",
        Bson::RegularExpression(_) => "regex",
        Bson::MaxKey => "maxKey",
        _ => return None,
    };
    TYPE_ORDER.iter().position(|r| r.contains(&alias))
}

/// The documents after `last` in `_id` order, whatever their type.
///
/// `{_id: {$gt: last}}` alone matches only values of `last`'s own type
/// (query type bracketing), while the copy's cursor sorts across types: a
/// snapshot resumed after a string `_id` would skip every ObjectId `_id`
/// (found by the chaos run: a lease moved after the copy had read one
/// string id, and the resumed copy lost the collection's ObjectId
/// documents). So the filter also takes every type that sorts later.
pub fn resume_filter(last: Bson) -> Document {
    let later: Vec<Bson> = type_rank(&last)
        .map(|r| {
            TYPE_ORDER[r + 1..]
                .iter()
                .flat_map(|aliases| aliases.iter())
                .map(|a| Bson::String((*a).to_string()))
                .collect()
        })
        .unwrap_or_default();
    if later.is_empty() {
        return doc! { "_id": { "$gt": last } };
    }
    doc! { "$or": [ { "_id": { "$gt": last } }, { "_id": { "$type": later } } ] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn after_a_string_id_every_later_type_is_included() {
        let f = resume_filter(Bson::String("probe-2".into()));
        let or = f.get_array("$or").unwrap();
        assert_eq!(or[0], Bson::Document(doc! { "_id": { "$gt": "probe-2" } }));
        let types = or[1].as_document().unwrap().get_document("_id").unwrap();
        let types: Vec<&str> = types
            .get_array("$type")
            .unwrap()
            .iter()
            .filter_map(Bson::as_str)
            .collect();
        assert!(types.contains(&"objectId") && types.contains(&"object"));
        assert!(!types.contains(&"string") && !types.contains(&"int"));
    }

    #[test]
    fn after_an_object_id_numbers_and_strings_are_not_included() {
        let f = resume_filter(Bson::ObjectId(ObjectId::new()));
        let types = f.get_array("$or").unwrap()[1]
            .as_document()
            .unwrap()
            .get_document("_id")
            .unwrap()
            .get_array("$type")
            .unwrap()
            .clone();
        assert!(!types.contains(&Bson::String("string".into())));
        assert!(types.contains(&Bson::String("date".into())));
    }

    #[test]
    fn after_max_key_only_greater_values() {
        assert_eq!(
            resume_filter(Bson::MaxKey),
            doc! { "_id": { "$gt": Bson::MaxKey } }
        );
    }
}
