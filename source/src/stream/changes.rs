//! Following the change stream: read events, cut them into batches by
//! count, bytes and deadline ([`crate::config::BatchConfig`]), and commit
//! each batch with the resume token that covers it.
//!
//! The token stored with a batch is the change stream's resume token right
//! after the batch's last event (the event's own token, or the server's
//! post-batch token once the cursor batch is drained). A quiet stream keeps
//! committing its advancing post-batch token every `idle_commit_ms`, so its
//! stored position never falls off the oplog.
//!
//! Events over MongoDB's 16 MB limit are reassembled from their fragments
//! or skipped to a dead-letter pointer ([`super::large_event`]); events
//! that cannot be decoded are dead-lettered too ([`super::poison`]), so no
//! single event stops the stream.
//!
//! Each batch's transaction commits while the next batch is read
//! ([`super::pipeline`]); the stream ends only after its last commit.
//! Where the loop's time goes (waiting for MongoDB, for the previous
//! commit, or converting) is counted by [`super::stages`].

use super::large_event::{self, Fragments, Mode};
use super::pipeline::{self, Pending};
use super::poison;
use super::reader::Reader;
use super::stages::{Stage, StageClock};
use super::writer::Batch;
use super::{now_iso, Pos, Start, StreamCtx, Writer};
use crate::change::{decode, decode_raw, Decoded, TxnRanks};
use crate::error::{Result, StreamError};
use mongodb::bson::{Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use shared::ejson::json_to_bson;
use shared::state::StreamState;
use shared::wire::change_stream::collection_gone_snapshot;
use shared::wire::event::{ClusterTime, Operation, TxnInfo};
use std::time::{Duration, Instant};

/// The event as a document (see [`crate::change::read_raw`]).
fn to_document(ctx: &StreamCtx, raw: &RawDocumentBuf) -> Result<Document> {
    let (doc, lossy) = crate::change::read_raw(raw)?;
    if lossy {
        tracing::warn!(stream = %ctx.spec.name, "change event with invalid UTF-8: replaced by U+FFFD");
    }
    Ok(doc)
}

/// Follows the change stream from `start` until shutdown.
pub async fn follow(
    ctx: &StreamCtx,
    writer: &Writer,
    start: Start,
    position: Option<Pos>,
) -> Result<()> {
    let mut position = position.unwrap_or_else(|| Pos {
        stream: ctx.spec.name.clone(),
        token: None,
        cluster_time: None,
        start_at: None,
        after_invalidate: false,
        snapshot: None,
        txn: None,
        events: 0,
        committed_at: now_iso(),
    });
    let mut ranks = TxnRanks::resume(position.txn.as_ref());
    // Shown from the start (0), so a dashboard sees the series.
    let _ = ctx.metrics.tree_path.get_or_create(&ctx.label());
    let mut start = start;
    let mut split = server_splits(ctx).await;
    let mut mode = Mode::Normal;
    loop {
        let stream = match open(ctx, &start, split, mode).await {
            Err(StreamError::Mongo(e)) if split && large_event::is_split_unsupported(&e) => {
                tracing::warn!(stream = %ctx.spec.name, error = %e, "server refuses $changeStreamSplitLargeEvent; large events will be skipped");
                split = false;
                continue;
            }
            r => r?,
        };
        ctx.status.set_state(StreamState::Running);
        // Read ahead on a task of its own (`reader`): one batch at most,
        // and no further than the events this life may take.
        let max = ctx.cfg.batch.max_events;
        let ahead = mode.event_budget(max).map_or(max, |b| b.min(max));
        let mut reader = Reader::spawn(stream, ahead);
        let drained = drain(
            ctx,
            writer,
            &mut reader,
            &mut position,
            &mut ranks,
            mode,
            split,
        )
        .await?;
        match drained {
            Drained::Shutdown => return Ok(()),
            Drained::TooLarge => {
                mode = mode.after_too_large();
                tracing::warn!(stream = %ctx.spec.name, ?mode, "change event over 16 MB (BSONObjectTooLarge); reopening to skip it");
                start = resume_from(&position, &start);
            }
            Drained::Budget => {
                mode = Mode::Normal;
                start = resume_from(&position, &start);
            }
            Drained::Invalidated => {
                mode = Mode::Normal;
                tracing::warn!(stream = %ctx.spec.name, "change stream invalidated; reopening after it");
                start = match &position.token {
                    Some(t) => Start::Token {
                        token: t.clone(),
                        after_invalidate: true,
                    },
                    None => Start::Now,
                };
            }
        }
    }
}

enum Drained {
    Shutdown,
    Invalidated,
    /// The cursor failed with BSONObjectTooLarge; what came before is
    /// committed.
    TooLarge,
    /// The events of a [`Mode`] other than `Normal` are read.
    Budget,
}

/// Where to reopen after the committed `position` (else where `start` was).
fn resume_from(position: &Pos, start: &Start) -> Start {
    match &position.token {
        Some(t) => Start::Token {
            token: t.clone(),
            after_invalidate: position.after_invalidate,
        },
        None => start.clone(),
    }
}

/// Whether the server splits large events (by its `buildInfo` version).
async fn server_splits(ctx: &StreamCtx) -> bool {
    let info = ctx
        .mongo
        .database("admin")
        .run_command(mongodb::bson::doc! {"buildInfo": 1})
        .await;
    match info {
        Ok(r) => {
            let version = r.get_str("version").unwrap_or("");
            let split = large_event::split_supported(version);
            tracing::info!(stream = %ctx.spec.name, version, split, "large change events");
            split
        }
        Err(e) => {
            tracing::warn!(stream = %ctx.spec.name, error = %e, "buildInfo failed; large change events will be skipped, not split");
            false
        }
    }
}

async fn open(
    ctx: &StreamCtx,
    start: &Start,
    split: bool,
    mode: Mode,
) -> Result<ChangeStream<RawDocumentBuf>> {
    let cfg = &ctx.cfg;
    let mut pipeline = Vec::with_capacity(ctx.spec.pipeline.len());
    for (i, stage) in ctx.spec.pipeline.iter().enumerate() {
        let json = serde_json::to_value(stage).map_err(|e| StreamError::BadEvent(e.to_string()))?;
        match json_to_bson(&json) {
            Ok(Bson::Document(d)) => pipeline.push(d),
            _ => {
                return Err(StreamError::BadEvent(format!(
                    "collections pipeline stage {i} is not a document"
                )))
            }
        }
    }
    let batch_size = match mode {
        Mode::Normal => u32::try_from(cfg.batch.max_events).unwrap_or(u32::MAX),
        Mode::OneByOne | Mode::SkipOne => 1,
    };
    match mode {
        Mode::SkipOne => pipeline.push(large_event::drop_large_fields_stage()),
        _ if split => pipeline.push(large_event::split_stage()),
        _ => {}
    }
    let coll = ctx.collection();
    let watch = coll
        .watch()
        .pipeline(pipeline)
        .full_document(FullDocumentType::UpdateLookup)
        .max_await_time(Duration::from_millis(cfg.batch.max_wait_ms))
        .batch_size(batch_size);
    let watch = match start {
        Start::Token {
            token,
            after_invalidate,
        } => {
            let bson = json_to_bson(token).map_err(|e| StreamError::BadPosition {
                stream: ctx.spec.name.clone(),
                message: format!("resume token: {e}"),
            })?;
            let token: ResumeToken =
                mongodb::bson::from_bson(bson).map_err(|e| StreamError::BadPosition {
                    stream: ctx.spec.name.clone(),
                    message: format!("resume token: {e}"),
                })?;
            if *after_invalidate {
                watch.start_after(token)
            } else {
                watch.resume_after(token)
            }
        }
        Start::At(ct) => watch.start_at_operation_time(Timestamp {
            time: ct.t,
            increment: ct.i,
        }),
        Start::Now => watch,
    };
    let stream = watch.await.map_err(StreamError::from_mongo)?;
    tracing::info!(stream = %ctx.spec.name, start = ?start, split, ?mode, "change stream open");
    // Raw: a string with invalid UTF-8 must not make the event unreadable
    // (it would stop the stream on the same event forever).
    Ok(stream.with_type::<RawDocumentBuf>())
}

fn token_json(token: Option<&ResumeToken>) -> Option<serde_json::Value> {
    let bson = mongodb::bson::to_bson(token?).ok()?;
    Some(bson.into_canonical_extjson())
}

async fn drain(
    ctx: &StreamCtx,
    writer: &Writer,
    reader: &mut Reader,
    position: &mut Pos,
    ranks: &mut TxnRanks,
    mode: Mode,
    split: bool,
) -> Result<Drained> {
    let mut pending: Pending<'_> = None;
    let out = drain_pipelined(
        ctx,
        writer,
        reader,
        position,
        ranks,
        mode,
        split,
        &mut pending,
    )
    .await;
    // Whatever ended the loop, the batch already handed over is committed
    // (or its failure reported) before the caller moves on.
    let last = pipeline::settle(&mut pending).await;
    let out = out?;
    last.map(|()| out)
}

#[allow(clippy::too_many_arguments)]
async fn drain_pipelined<'a>(
    ctx: &'a StreamCtx,
    writer: &'a Writer,
    reader: &mut Reader,
    position: &mut Pos,
    ranks: &mut TxnRanks,
    mode: Mode,
    split: bool,
    pending: &mut Pending<'a>,
) -> Result<Drained> {
    let limits = &ctx.cfg.batch;
    let max_wait = Duration::from_millis(limits.max_wait_ms);
    let idle_every = Duration::from_millis(limits.idle_commit_ms);
    let mut last_commit = Instant::now();
    let mut fragments = Fragments::default();
    // `_id` (resume token) of the last whole event read.
    let mut last_id: Option<Bson> = None;
    let mut budget = mode.event_budget(limits.max_events);
    let mut clock = StageClock::start();
    // The stream's resume token after the last read taken.
    let mut stream_token: Option<ResumeToken> = None;
    loop {
        let mut batch = Batch::default();
        let mut invalidated = false;
        let mut too_large = false;
        // Collect one batch.
        loop {
            if ctx.cancel.is_cancelled() || budget == Some(0) {
                break;
            }
            // The next event, read while the previous batch commits.
            let read = pipeline::read(reader.next(), pending, &ctx.cancel);
            let Some(next) = clock.wait(Stage::Read, read).await? else {
                break;
            };
            let next = next?;
            stream_token = next.token;
            let next = match next.item {
                Ok(n) => n,
                Err(e) if large_event::is_too_large(&e) => {
                    tracing::error!(stream = %ctx.spec.name, error = %e, ?mode, "change event over 16 MB");
                    too_large = true;
                    break;
                }
                Err(e) => return Err(StreamError::from_mongo(e)),
            };
            let next = match next {
                Some(raw) => {
                    // Test builds only: a panic while an event is in hand.
                    shared::faults::panic_point(|| format!("source.stream:{}", ctx.spec.name));
                    // The fast path: one document's change, written
                    // straight from its BSON (`shared::wire::change_stream::raw`).
                    let fast = match mode {
                        Mode::SkipOne => None,
                        _ if fragments.pending() => None,
                        _ => decode_raw(&raw, &ctx.spec.ns),
                    };
                    if let Some(mut change) = fast {
                        last_id = raw
                            .get("_id")
                            .ok()
                            .flatten()
                            .and_then(|t| Bson::try_from(t).ok());
                        budget = budget.map(|b| b.saturating_sub(1));
                        let key = std::mem::take(&mut change.key);
                        let clamped = ranks.assign(&key, &mut change);
                        change.key = key;
                        if clamped {
                            version_clamped(
                                ctx,
                                &change.key,
                                change.cluster_time,
                                change.txn.as_ref(),
                            );
                        }
                        match writer.add_raw(ctx, &mut batch, &change) {
                            Ok(()) => {}
                            Err(StreamError::BadEvent(error)) => {
                                let facts = poison::Facts::of_raw(&raw);
                                dead_letter_poison(ctx, writer, &mut batch, &facts, &error);
                            }
                            Err(e) => return Err(e),
                        }
                        if batch_full(&batch, limits, max_wait) {
                            break;
                        }
                        continue;
                    }
                    let doc = match to_document(ctx, &raw) {
                        Ok(doc) => doc,
                        Err(StreamError::BadEvent(error)) => {
                            // Unreadable even with lossy UTF-8: whole
                            // events only (a fragment's is reassembled
                            // with its siblings first).
                            let facts = poison::Facts::of_raw(&raw);
                            dead_letter_poison(ctx, writer, &mut batch, &facts, &error);
                            last_id = facts
                                .resume_token
                                .as_ref()
                                .and_then(|t| json_to_bson(t).ok());
                            budget = budget.map(|b| b.saturating_sub(1));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let committed = &position.token;
                    let before = || {
                        last_id
                            .clone()
                            .map(Bson::into_canonical_extjson)
                            .or_else(|| committed.clone())
                    };
                    match fragments.push(doc, before).map_err(StreamError::BadEvent)? {
                        Some(doc) => {
                            last_id = doc.get("_id").cloned();
                            budget = budget.map(|b| b.saturating_sub(1));
                            Some(doc)
                        }
                        None => continue,
                    }
                }
                None => None,
            };
            match next {
                Some(doc) => match decode(&doc, &ctx.spec.ns) {
                    Err(StreamError::BadEvent(error)) => {
                        let facts = poison::Facts::of_document(&doc);
                        dead_letter_poison(ctx, writer, &mut batch, &facts, &error);
                    }
                    Err(e) => return Err(e),
                    Ok(Decoded::Change { key, mut event }) => {
                        ctx.metrics.tree_path.get_or_create(&ctx.label()).inc();
                        if ranks.assign(&key, &mut *event) {
                            version_clamped(ctx, &key, event.cluster_time, event.txn.as_ref());
                        }
                        if mode == Mode::SkipOne {
                            let pointer = large_event::too_large_pointer(
                                &ctx.cfg.topics.dlq_topic(),
                                &ctx.spec.topic,
                                &key,
                                &event,
                                split,
                            );
                            writer.dead_letter(
                                ctx,
                                &mut batch,
                                pointer,
                                large_event::REASON,
                                Some(event.cluster_time),
                            );
                        } else {
                            writer.add(ctx, &mut batch, None, Some(key), &event)?;
                        }
                    }
                    Ok(Decoded::CollectionGone { op, cluster_time }) => {
                        collection_gone(ctx, writer, &mut batch, &op, cluster_time)?;
                    }
                    Ok(Decoded::Invalidate) => {
                        invalidated = true;
                        break;
                    }
                    Ok(Decoded::Ignored(op)) => {
                        tracing::debug!(stream = %ctx.spec.name, op, "event ignored");
                    }
                },
                None => {
                    // An empty answer: the stages so far are counted now,
                    // so an idle stream's metric moves too.
                    ctx.metrics.add_stages(&ctx.spec.name, &clock.take());
                    if batch.is_empty() {
                        ctx.status.caught_up();
                        if last_commit.elapsed() >= idle_every {
                            break;
                        }
                        continue;
                    }
                    break;
                }
            }
            if batch_full(&batch, limits, max_wait) {
                break;
            }
        }
        // While a split event is incomplete, only the position before its
        // first fragment is safe.
        let token = if fragments.pending() {
            fragments.resume_before.clone()
        } else {
            token_json(stream_token.as_ref())
        };
        let token_moved = token.is_some() && token != position.token;
        if !batch.is_empty() || token_moved || invalidated {
            let mut next = position.clone();
            next.token = token.or(next.token);
            next.after_invalidate = invalidated;
            next.cluster_time = batch.last.or(next.cluster_time);
            next.txn = ranks.progress();
            next.events += batch.ops.values().sum::<u64>() + batch.dead_lettered;
            next.committed_at = now_iso();
            *position = next.clone();
            let handed =
                pipeline::hand_over(
                    pending,
                    async move { writer.commit(ctx, batch, &next).await },
                );
            clock.wait(Stage::CommitWait, handed).await?;
            last_commit = Instant::now();
        }
        ctx.metrics.add_stages(&ctx.spec.name, &clock.take());
        if invalidated {
            return Ok(Drained::Invalidated);
        }
        if ctx.cancel.is_cancelled() {
            return Ok(Drained::Shutdown);
        }
        if too_large {
            return Ok(Drained::TooLarge);
        }
        if budget == Some(0) {
            return Ok(Drained::Budget);
        }
    }
}

/// Sends a poison event (see [`poison`]) to the dead-letter topic.
fn dead_letter_poison(
    ctx: &StreamCtx,
    writer: &Writer,
    batch: &mut Batch,
    facts: &poison::Facts,
    error: &str,
) {
    tracing::error!(stream = %ctx.spec.name, error, op = ?facts.op, "change event cannot be decoded: dead-lettered, the stream goes on");
    let pointer = poison::pointer(
        &ctx.cfg.topics.dlq_topic(),
        &ctx.spec.topic,
        &ctx.spec.ns,
        facts,
        error,
    );
    writer.dead_letter(ctx, batch, pointer, poison::REASON, facts.cluster_time);
}

/// A dropped or renamed collection: every document is gone as of
/// `cluster_time`. Announced as an empty snapshot (start and end markers
/// on every partition, versioned at the drop), so the sink removes every
/// document older than it.
fn collection_gone(
    ctx: &StreamCtx,
    writer: &Writer,
    batch: &mut Batch,
    op: &str,
    ts: Timestamp,
) -> Result<()> {
    tracing::warn!(stream = %ctx.spec.name, op, "collection gone: announcing an empty snapshot");
    let snap = collection_gone_snapshot(op, ts);
    for op in [Operation::SnapshotStart, Operation::SnapshotEnd] {
        writer.add_markers(ctx, batch, op, &snap)?;
    }
    batch.last = Some(ClusterTime {
        t: ts.time,
        i: ts.increment,
    });
    Ok(())
}

/// A change whose version had to be clamped ([`TxnRanks::assign`]): more
/// than 524,287 oplog entries in one second, or more than 255 changes of
/// one document in one transaction. Order is kept; two such changes of one
/// document may share a version. Logged and counted, never silent.
/// Whether a batch is to be committed now: full, or its first event has
/// waited `max_wait`.
fn batch_full(batch: &Batch, limits: &crate::config::BatchConfig, max_wait: Duration) -> bool {
    batch.len() >= limits.max_events
        || batch.bytes >= limits.max_bytes
        || batch.started.is_some_and(|s| s.elapsed() >= max_wait)
}

fn version_clamped(ctx: &StreamCtx, key: &str, ct: ClusterTime, txn: Option<&TxnInfo>) {
    tracing::warn!(
        stream = %ctx.spec.name,
        key,
        t = ct.t,
        i = ct.i,
        rank = txn.map_or(0, |t| t.rank),
        "version clamped: increment or transaction rank past the version layout"
    );
    ctx.metrics
        .versions_clamped
        .get_or_create(&ctx.label())
        .inc();
}
