//! Turns events into records, checks each against the size limit (sending
//! a dead-letter pointer instead of an oversized record, or failing, by
//! policy), and commits a batch plus the new position through the [`Sink`].

use super::StreamCtx;
use crate::config::OversizedPolicy;
use crate::error::{Result, StreamError};
use crate::kafka::positions::Position;
use crate::kafka::record::{oversized_pointer, Record};
use crate::kafka::sink::{Mode, Sink};
use crate::metrics::{StreamLabel, StreamOp, StreamReason};
use mongodb::bson::RawDocument;
use shared::wire::change_stream::{marker, write_snapshot_record, BadChange, RawChange};
use shared::wire::event::{ChangeEvent, ClusterTime, Operation, SnapshotInfo};
use shared::wire::source_dlq::Reason;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The records of one transaction, with what the metrics need.
#[derive(Default)]
pub struct Batch {
    /// Records in order.
    pub records: Vec<Record>,
    /// Bytes of those records.
    pub bytes: usize,
    /// Events per operation.
    pub ops: BTreeMap<&'static str, u64>,
    /// Pointers sent to the DLQ instead of records.
    pub dead_lettered: u64,
    /// Cluster time of the last change event.
    pub last: Option<ClusterTime>,
    /// When the first record was added.
    pub started: Option<Instant>,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A stream's writer.
pub struct Writer {
    sink: Sink,
    /// Largest record that fits, in bytes.
    pub limit: usize,
    limit_source: String,
    /// Partitions of the event topic.
    pub partitions: Vec<i32>,
}

impl Writer {
    /// Connects the sink and reads the topic's limit and partitions.
    pub async fn connect(ctx: &StreamCtx) -> Result<Self> {
        let sink = Sink::connect(&ctx.cfg.kafka, &ctx.spec.transactional_id).await?;
        let producer_limit = ctx.cfg.kafka.message_max_bytes;
        let topic_limit = ctx.topics.max_message_bytes(&ctx.spec.topic).await?;
        let (limit, limit_source) = match topic_limit {
            Some(t) if t < producer_limit => (
                t,
                format!("topic {} max.message.bytes = {t}", ctx.spec.topic),
            ),
            _ => (
                producer_limit,
                format!("kafka.message_max_bytes = {producer_limit}"),
            ),
        };
        let topics = ctx.topics.clone();
        let topic = ctx.spec.topic.clone();
        let timeout = Duration::from_millis(ctx.cfg.kafka.operation_timeout_ms);
        let partitions = tokio::task::spawn_blocking(move || topics.partitions(&topic, timeout))
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))??;
        if partitions.is_empty() {
            return Err(StreamError::Kafka(
                rdkafka::error::KafkaError::MetadataFetch(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                ),
            ));
        }
        ctx.status.set_mode(sink.mode(), limit);
        if sink.mode() == Mode::AtLeastOnce {
            tracing::warn!(stream = %ctx.spec.name, "delivery is at-least-once (no Kafka transactions)");
        }
        Ok(Self {
            sink,
            limit,
            limit_source,
            partitions,
        })
    }

    /// Adds snapshot marker `op` of `info` to every partition of the
    /// stream's topic, in partition order: a marker tells each partition's
    /// consumer where a copy (or an empty copy for a dropped collection)
    /// starts and ends, so every partition must carry it.
    pub fn add_markers(
        &self,
        ctx: &StreamCtx,
        batch: &mut Batch,
        op: Operation,
        info: &SnapshotInfo,
    ) -> Result<()> {
        let ev = marker(op, &ctx.spec.ns, info);
        for p in &self.partitions {
            self.add(ctx, batch, Some(*p), None, &ev)?;
        }
        Ok(())
    }

    /// Adds an event to `batch`: its record, or a dead-letter pointer when
    /// the record is over the limit (policy `dlq`), or an error (`fail`).
    pub fn add(
        &self,
        ctx: &StreamCtx,
        batch: &mut Batch,
        partition: Option<i32>,
        key: Option<String>,
        ev: &ChangeEvent,
    ) -> Result<()> {
        let record = Record::event(&ctx.spec.topic, partition, key, ev);
        let records = if record.wire_size() > self.limit {
            self.oversized(ctx, &record, Some(ev))?
        } else {
            vec![record]
        };
        Self::push(ctx, batch, records, ev.op, ev.cluster_time);
        Ok(())
    }

    /// [`Writer::add`] for a change read by the fast path: its record's
    /// value written straight from the change-stream document. A change
    /// the fast path cannot write (a string that is not UTF-8, a field
    /// name twice), or whose record is over the limit, is made into an
    /// event tree and added as [`Writer::add`] adds it; `BadEvent` if the
    /// tree cannot be made either (the caller dead-letters the event).
    pub fn add_raw(&self, ctx: &StreamCtx, batch: &mut Batch, change: &RawChange) -> Result<()> {
        // The JSON is about as long as the BSON it comes from, a little
        // longer for the wrappers of ObjectIds and dates: one allocation
        // instead of one per doubling.
        let bson = change.bson_len();
        let mut value = Vec::with_capacity(bson + bson / 8 + 128);
        if let Err(why) = change.write_json(&mut value) {
            tracing::debug!(stream = %ctx.spec.name, key = %change.key, %why, "change event written by the tree path");
            ctx.metrics.tree_path.get_or_create(&ctx.label()).inc();
            let ev = change.to_event().map_err(|e| StreamError::BadEvent(e.0))?;
            return self.add(ctx, batch, None, Some(change.key.clone()), &ev);
        }
        self.add_written(
            ctx,
            batch,
            Record::encoded(
                &ctx.spec.topic,
                None,
                Some(change.key.clone()),
                value,
                change.op,
                change.version,
            ),
            change.op,
            change.cluster_time,
            || change.to_event(),
        )
    }

    /// [`Writer::add`] for a snapshot copy read as raw BSON, written
    /// straight from it ([`write_snapshot_record`]), or by the tree path
    /// when it cannot be (a string not UTF-8, read lossily as the change
    /// stream reads it; a field name twice).
    pub fn add_snapshot_raw(
        &self,
        ctx: &StreamCtx,
        batch: &mut Batch,
        doc: &RawDocument,
        info: &SnapshotInfo,
    ) -> Result<()> {
        let bson = doc.as_bytes().len();
        let mut value = Vec::with_capacity(bson + bson / 8 + 256);
        let Some(key) = write_snapshot_record(doc, &ctx.spec.ns, info, &mut value) else {
            ctx.metrics.tree_path.get_or_create(&ctx.label()).inc();
            let (tree, lossy) = crate::change::read_raw(doc)?;
            if lossy {
                tracing::warn!(stream = %ctx.spec.name, "document with invalid UTF-8: replaced by U+FFFD");
            }
            let (key, ev) = crate::change::snapshot_record(&tree, &ctx.spec.ns, info)?;
            return self.add(ctx, batch, None, Some(key), &ev);
        };
        let ct = {
            let (t, i) = shared::wire::version::Version::from_u64(info.version).cluster_time();
            ClusterTime { t, i }
        };
        let record = Record::encoded(
            &ctx.spec.topic,
            None,
            Some(key),
            value,
            Operation::Snapshot,
            info.version,
        );
        self.add_written(ctx, batch, record, Operation::Snapshot, ct, || {
            let (tree, _) = shared::wire::change_stream::read_raw(doc)?;
            shared::wire::change_stream::snapshot_record(&tree, &ctx.spec.ns, info)
                .map(|(_, ev)| ev)
        })
    }

    /// Adds `record`, whose value is already written, of an event `op` at
    /// `ct`; `tree` makes the event as a tree when the record is over the
    /// limit.
    #[allow(clippy::too_many_arguments)]
    fn add_written(
        &self,
        ctx: &StreamCtx,
        batch: &mut Batch,
        record: Record,
        op: Operation,
        ct: ClusterTime,
        tree: impl FnOnce() -> std::result::Result<ChangeEvent, BadChange>,
    ) -> Result<()> {
        let records = if record.wire_size() > self.limit {
            let ev = tree().map_err(|e| StreamError::BadEvent(e.0))?;
            self.oversized(ctx, &record, Some(&ev))?
        } else {
            vec![record]
        };
        Self::push(ctx, batch, records, op, ct);
        Ok(())
    }

    /// Adds the records of one event (of `op` at `ct`) to `batch`.
    fn push(
        ctx: &StreamCtx,
        batch: &mut Batch,
        records: Vec<Record>,
        op: Operation,
        ct: ClusterTime,
    ) {
        for record in records {
            if record.topic != ctx.spec.topic {
                batch.dead_lettered += 1;
            } else if !op.is_marker() {
                *batch.ops.entry(op.as_str()).or_default() += 1;
            }
            batch.bytes += record.wire_size();
            batch.records.push(record);
        }
        if !op.is_marker() {
            batch.last = Some(ct);
        }
        batch.started.get_or_insert_with(Instant::now);
    }

    /// Adds `pointer`, a dead-letter record built by the caller for an event
    /// that cannot be delivered (see [`super::large_event`] and
    /// [`super::poison`]), to `batch`, counted as dead-lettered with
    /// `reason`; `cluster_time` is the event's, when it is known.
    pub fn dead_letter(
        &self,
        ctx: &StreamCtx,
        batch: &mut Batch,
        pointer: Record,
        reason: &str,
        cluster_time: Option<ClusterTime>,
    ) {
        tracing::error!(
            stream = %ctx.spec.name,
            key = pointer.key.as_deref().unwrap_or(""),
            reason,
            dlq = %pointer.topic,
            "change event dead-lettered"
        );
        ctx.metrics
            .dead_lettered
            .get_or_create(&StreamReason {
                stream: ctx.spec.name.clone(),
                reason: reason.into(),
            })
            .inc();
        batch.dead_lettered += 1;
        if cluster_time.is_some() {
            batch.last = cluster_time;
        }
        batch.bytes += pointer.wire_size();
        batch.started.get_or_insert_with(Instant::now);
        batch.records.push(pointer);
    }

    /// What to write instead of `record` (of event `ev`, when known), over
    /// the limit: by policy, the event cut to fit and a pointer saying so,
    /// or a pointer alone, or an error.
    fn oversized(
        &self,
        ctx: &StreamCtx,
        record: &Record,
        ev: Option<&ChangeEvent>,
    ) -> Result<Vec<Record>> {
        let size = record.wire_size();
        ctx.metrics
            .oversized
            .get_or_create(&StreamLabel {
                stream: ctx.spec.name.clone(),
            })
            .inc();
        let policy = ctx.cfg.oversized.policy;
        tracing::error!(
            stream = %ctx.spec.name,
            key = record.key.as_deref().unwrap_or(""),
            size,
            limit = self.limit,
            over_by = size.saturating_sub(self.limit),
            limit_source = %self.limit_source,
            ?policy,
            "record over the Kafka size limit"
        );
        if policy == OversizedPolicy::Fail {
            return Err(StreamError::Oversized(format!(
                "record for key {} is {size} bytes, over the limit of {} ({})",
                record.key.as_deref().unwrap_or(""),
                self.limit,
                self.limit_source
            )));
        }
        let cut = match (policy, ev) {
            (OversizedPolicy::Truncate, Some(ev)) => super::truncate::to_fit(
                ev,
                &record.topic,
                record.partition,
                record.key.clone(),
                self.limit,
            ),
            _ => None,
        };
        let reason = if cut.is_some() {
            Reason::RecordTruncated
        } else {
            Reason::RecordTooLarge
        };
        ctx.metrics
            .dead_lettered
            .get_or_create(&StreamReason {
                stream: ctx.spec.name.clone(),
                reason: reason.as_str().into(),
            })
            .inc();
        let mut pointer = oversized_pointer(
            reason,
            record,
            ev,
            &ctx.spec.ns,
            self.limit,
            &self.limit_source,
        );
        let dlq = ctx.cfg.topics.dlq_topic();
        Ok(match cut {
            Some(cut) => {
                tracing::warn!(stream = %ctx.spec.name, key = record.key.as_deref().unwrap_or(""), fields = ?cut.fields, "written with its largest text fields cut to fit");
                pointer.fields = cut.fields;
                vec![cut.record, Record::pointer(&dlq, &pointer)]
            }
            None => vec![Record::pointer(&dlq, &pointer)],
        })
    }

    /// Writes `batch` and `position` as one transaction and updates status
    /// and metrics.
    pub async fn commit(&self, ctx: &StreamCtx, batch: Batch, position: &Position) -> Result<()> {
        let started = Instant::now();
        let pos_record =
            crate::kafka::positions::to_record(position, &ctx.cfg.topics.offsets_topic());
        let mut late_dlq = 0;
        self.sink
            .write(&batch.records, pos_record, |r| {
                late_dlq += 1;
                // Our own record: its value is the event.
                let ev: Option<ChangeEvent> = serde_json::from_slice(&r.value).ok();
                self.oversized(ctx, r, ev.as_ref())
            })
            .await?;
        let label = StreamLabel {
            stream: ctx.spec.name.clone(),
        };
        ctx.metrics
            .produce_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if !batch.is_empty() {
            ctx.metrics
                .batch_events
                .get_or_create(&label)
                .observe(batch.len() as f64);
        }
        for (op, n) in &batch.ops {
            ctx.metrics
                .events
                .get_or_create(&StreamOp {
                    stream: ctx.spec.name.clone(),
                    op: (*op).into(),
                })
                .inc_by(*n);
        }
        let events: u64 = batch.ops.values().sum();
        ctx.status
            .committed(events, batch.dead_lettered + late_dlq, batch.last);
        ctx.status.refresh_gauges();
        Ok(())
    }
}
