//! Pass 2 of `dlq replay`: each selected dead letter produced back to its
//! topic and partition, and its mark to the dead-letter topic, in one Kafka
//! transaction per batch. Either both are written or neither: a run that
//! stops half-way (killed, a broker away) leaves every dead letter either
//! re-driven and marked, or neither, and the next run goes on from there.
//!
//! The re-driven record is the original key, value and headers: the copy's
//! (its `dlq.*` headers removed), or for a pointer the original read back
//! from its topic, partition and offset (a pointer whose original the
//! topic no longer holds is counted as gone and left unmarked). It gets a
//! `dlq.redriven.from` header (`{dlq topic}/{partition}/{offset}`) when
//! that still fits the topic's limit.

use super::read::{read_ranges, Reader};
use super::scan::Letter;
use super::DlqReplayError;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use shared::wire::dlq::{headers, DlqPointer, Redriven, REDRIVEN_SCHEMA};
use shared::wire::record_size::batch_size;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Dead letters per transaction.
const BATCH_RECORDS: usize = 200;
/// Bytes per transaction (re-driven values).
const BATCH_BYTES: usize = 16 << 20;

/// A record to produce back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Redrive {
    /// The original from a record (copy or original): without `dlq.*`
    /// headers, plus `dlq.redriven.from` = `from` when the result still
    /// fits `limit`.
    pub fn of(m: &BorrowedMessage<'_>, from: &str, limit: usize) -> Self {
        let mut r = Self {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .filter(|x| !x.key.starts_with(headers::PREFIX))
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut with = r.headers.clone();
        with.push((
            headers::REDRIVEN_FROM.into(),
            Some(from.as_bytes().to_vec()),
        ));
        let hs: Vec<(usize, Option<usize>)> = with
            .iter()
            .map(|(k, v)| (k.len(), v.as_ref().map(Vec::len)))
            .collect();
        if batch_size(
            r.key.as_ref().map(Vec::len),
            r.value.as_ref().map(Vec::len),
            &hs,
        ) <= limit
        {
            r.headers = with;
        }
        r
    }
}

/// What pass 2 did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `(partition, offset)` of the dead letters re-driven (and marked).
    pub redriven: HashSet<(i32, i64)>,
    /// Those of pointers whose original is no longer in its topic.
    pub gone: HashSet<(i32, i64)>,
}

/// Everything pass 2 uses.
pub struct Redriver<'a> {
    /// The transactional producer (transactions initialised).
    pub producer: &'a BaseProducer,
    /// Reads the dead letters.
    pub dlq_reader: &'a Reader,
    /// Reads originals of pointers.
    pub original_reader: &'a Reader,
    /// The dead-letter topic.
    pub dlq_topic: &'a str,
    /// `max.message.bytes` of each target topic.
    pub limits: &'a HashMap<String, usize>,
    /// Kafka operation timeout.
    pub timeout: Duration,
}

impl Redriver<'_> {
    /// Re-drives `selected` (in partition and offset order); `on_done` is
    /// called once per dead letter handled.
    pub fn run(
        &self,
        selected: &[Letter],
        mut on_done: impl FnMut(),
    ) -> Result<Outcome, DlqReplayError> {
        let mut out = Outcome::default();
        let by_offset: HashMap<(i32, i64), &Letter> = selected
            .iter()
            .map(|l| ((l.partition, l.offset), l))
            .collect();
        let mut ranges: HashMap<i32, (i64, i64)> = HashMap::new();
        for l in selected {
            let e = ranges
                .entry(l.partition)
                .or_insert((l.offset, l.offset + 1));
            e.0 = e.0.min(l.offset);
            e.1 = e.1.max(l.offset + 1);
        }
        let mut batch: Vec<(i32, i64)> = Vec::new();
        let mut bytes = 0usize;
        // One partition at a time, so the reader never holds two.
        let mut parts: Vec<i32> = ranges.keys().copied().collect();
        parts.sort_unstable();
        for p in parts {
            let one: HashMap<i32, (i64, i64)> = HashMap::from([(p, ranges[&p])]);
            read_ranges(
                self.dlq_reader,
                self.dlq_topic,
                &one,
                self.timeout * 3,
                |m| {
                    let Some(l) = by_offset.get(&(m.partition(), m.offset())) else {
                        return Ok(());
                    };
                    let from = format!("{}/{}/{}", self.dlq_topic, l.partition, l.offset);
                    let limit = self.limits.get(&l.topic).copied().unwrap_or(usize::MAX);
                    let record = if l.pointer {
                        match self.original(m, &from, limit)? {
                            Some(r) => r,
                            None => {
                                out.gone.insert((l.partition, l.offset));
                                on_done();
                                return Ok(());
                            }
                        }
                    } else {
                        Redrive::of(m, &from, limit)
                    };
                    if batch.is_empty() {
                        self.producer.begin_transaction()?;
                    }
                    bytes += record.value.as_ref().map_or(0, Vec::len);
                    self.send(&l.topic, Some(l.source_partition), &record)?;
                    self.send(self.dlq_topic, Some(l.partition), &mark(l))?;
                    batch.push((l.partition, l.offset));
                    if batch.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                        self.commit(&mut batch, &mut out)?;
                        bytes = 0;
                    }
                    on_done();
                    Ok(())
                },
            )?;
        }
        if !batch.is_empty() {
            self.commit(&mut batch, &mut out)?;
        }
        Ok(out)
    }

    /// The original record a pointer names, `None` when its topic no
    /// longer holds it.
    fn original(
        &self,
        m: &BorrowedMessage<'_>,
        from: &str,
        limit: usize,
    ) -> Result<Option<Redrive>, DlqReplayError> {
        let ptr = DlqPointer::from_json(m.payload().unwrap_or_default())
            .map_err(|e| DlqReplayError::Read(format!("{from}: {e}")))?;
        let (low, high) =
            self.original_reader
                .fetch_watermarks(&ptr.topic, ptr.partition, self.timeout)?;
        if ptr.offset < low || ptr.offset >= high {
            return Ok(None);
        }
        let mut found = None;
        let one = HashMap::from([(ptr.partition, (ptr.offset, ptr.offset + 1))]);
        read_ranges(
            self.original_reader,
            &ptr.topic,
            &one,
            self.timeout * 3,
            |o| {
                if o.offset() == ptr.offset {
                    found = Some(Redrive::of(o, from, limit));
                }
                Ok(())
            },
        )?;
        Ok(found)
    }

    fn send(&self, topic: &str, partition: Option<i32>, r: &Redrive) -> Result<(), DlqReplayError> {
        let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(h);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(100));
                    rec = back;
                }
                Err((e, _)) => {
                    let _ = self.producer.abort_transaction(self.timeout);
                    return Err(DlqReplayError::Redrive {
                        topic: topic.to_string(),
                        source: e,
                    });
                }
            }
        }
    }

    fn commit(&self, batch: &mut Vec<(i32, i64)>, out: &mut Outcome) -> Result<(), DlqReplayError> {
        if let Err(e) = self.producer.commit_transaction(self.timeout * 3) {
            let _ = self.producer.abort_transaction(self.timeout);
            return Err(DlqReplayError::Redrive {
                topic: "(transaction commit)".into(),
                source: e,
            });
        }
        out.redriven.extend(batch.drain(..));
        Ok(())
    }
}

/// The mark of dead letter `l`, written to its partition of the
/// dead-letter topic.
fn mark(l: &Letter) -> Redrive {
    let m = Redriven {
        schema: REDRIVEN_SCHEMA.into(),
        partition: l.partition,
        offset: l.offset,
        topic: l.topic.clone(),
        to_partition: l.source_partition,
        error_type: l.error_type.clone(),
        redriven_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    };
    Redrive {
        key: Some(format!("redriven:{}:{}", l.partition, l.offset).into_bytes()),
        value: serde_json::to_vec(&m).ok(),
        headers: vec![(
            headers::REDRIVEN.into(),
            Some(REDRIVEN_SCHEMA.as_bytes().to_vec()),
        )],
    }
}
