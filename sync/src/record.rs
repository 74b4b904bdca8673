//! The consumed Kafka record as the pipeline holds it: an owned copy
//! taken off librdkafka's buffer by the poller ([`crate::consumer`]),
//! queued per partition, turned into a bulk action, and, when it cannot
//! be indexed, dead-lettered from the same bytes ([`crate::dlq`]). It is
//! the one type both stages share, so it lives in neither.

use rdkafka::message::{BorrowedMessage, Headers, Message};

/// Bytes of one header entry besides its key and value.
const HEADER_OVERHEAD: usize = std::mem::size_of::<(String, Option<Vec<u8>>)>();

/// An owned copy of a consumed Kafka record.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
}

impl RawRecord {
    /// Copies a record out of librdkafka's buffer (key, value and headers
    /// byte for byte, so a dead-lettered copy is the original).
    pub fn copy_of(m: &BorrowedMessage<'_>) -> Self {
        RawRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// Memory it holds (its bytes, its headers, itself), for the buffer
    /// bound.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + HEADER_OVERHEAD)
            .sum();
        std::mem::size_of::<Self>()
            + self.topic.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + headers
    }
}
