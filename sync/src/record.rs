//! The consumed Kafka record as the pipeline holds it: an owned copy
//! taken off librdkafka's buffer by the poller ([`crate::consumer`]),
//! queued per partition, turned into a bulk action, and, when it cannot
//! be indexed, dead-lettered from the same bytes ([`crate::dlq`]). It is
//! the one type both stages share, so it lives in neither.

use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::sync::Arc;

/// An owned copy of a consumed Kafka record.
///
/// Memory: up to `consumer.max_buffered_records` of these wait at once, so
/// a record costs its bytes and few allocations: the topic name is shared
/// by the records of a topic, and the headers are packed into one buffer
/// (three small strings and values each were seven allocations, some 300
/// bytes per record with the allocator's overhead; issue 17).
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Option<Vec<u8>>,
    /// Headers, byte for byte and in order.
    pub headers: PackedHeaders,
    /// Record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
}

impl RawRecord {
    /// Copies a record out of librdkafka's buffer (key, value and headers
    /// byte for byte, so a dead-lettered copy is the original); `topic` is
    /// its topic's name, shared.
    pub fn copy_of(m: &BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        RawRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    let size = h
                        .iter()
                        .map(|x| PackedHeaders::entry_len(x.key, x.value))
                        .sum();
                    PackedHeaders::pack_sized(size, h.iter().map(|x| (x.key, x.value)))
                })
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// Memory it holds (its bytes, its headers, itself), for the buffer
    /// bound. The topic's name is shared, so not counted.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self.headers.bytes()
    }
}

/// Record headers packed into one buffer: per header its key's length
/// (u32, little endian), the key, its value's length (u32; `u32::MAX` for
/// a header without a value), the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedHeaders(Box<[u8]>);

/// Value length that stands for "no value".
const NO_VALUE: u32 = u32::MAX;

impl PackedHeaders {
    /// Packs `headers` (key, value) in order. A key or value longer than
    /// `u32::MAX - 1` bytes cannot come from Kafka (a record is far
    /// smaller); it would be cut to that length.
    pub fn pack<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        Self::pack_sized(0, headers)
    }

    /// [`PackedHeaders::pack`] into a buffer of `size` bytes made at once
    /// (the headers' [`PackedHeaders::entry_len`] summed): one allocation
    /// instead of one per doubling.
    pub fn pack_sized<'a>(
        size: usize,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Self {
        let mut out = Vec::with_capacity(size);
        for (k, v) in headers {
            put(&mut out, Some(k.as_bytes()));
            put(&mut out, v);
        }
        Self(out.into_boxed_slice())
    }

    /// Bytes one header takes packed.
    pub fn entry_len(key: &str, value: Option<&[u8]>) -> usize {
        8 + key.len() + value.map_or(0, <[u8]>::len)
    }

    /// The headers in order; a key that is not UTF-8 (only possible from a
    /// buffer not made by [`PackedHeaders::pack`]) reads as empty.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let key = take(&mut rest)?;
            let value = take(&mut rest)?;
            let key = key.map_or("", |k| std::str::from_utf8(k).unwrap_or_default());
            Some((key, value))
        })
    }

    /// The headers as owned pairs (for a dead-letter record).
    pub fn to_vec(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.len()
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a [u8]>)> for PackedHeaders {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>>(iter: I) -> Self {
        Self::pack(iter)
    }
}

fn put(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(&NO_VALUE.to_le_bytes()),
        Some(b) => {
            let b = &b[..b.len().min(NO_VALUE as usize - 1)];
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// Takes one length-prefixed field off `rest`: `None` at the end (or on a
/// truncated buffer), `Some(None)` for "no value".
fn take<'a>(rest: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len);
    if len == NO_VALUE {
        *rest = tail;
        return Some(None);
    }
    let len = len as usize;
    if tail.len() < len {
        *rest = &[];
        return None;
    }
    let (field, tail) = tail.split_at(len);
    *rest = tail;
    Some(Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_headers_read_back_byte_for_byte_and_in_order() {
        let given: Vec<(&str, Option<&[u8]>)> = vec![
            ("op", Some(&b"insert"[..])),
            ("empty", Some(&b""[..])),
            ("none", None),
            ("op", Some(&b"\xff\x00 binary"[..])),
            ("", Some("한국어".as_bytes())),
        ];
        let h = PackedHeaders::pack(given.iter().copied());
        assert_eq!(h.iter().collect::<Vec<_>>(), given);
        assert_eq!(h.iter().count(), 5);
        assert_eq!(
            h.to_vec()[3],
            ("op".to_string(), Some(b"\xff\x00 binary".to_vec()))
        );
        assert_eq!(PackedHeaders::default().bytes(), 0);
        assert_eq!(PackedHeaders::default().iter().count(), 0);
    }

    #[test]
    fn headers_cost_one_buffer_of_their_bytes_plus_lengths() {
        let h = PackedHeaders::pack([
            ("op", Some(&b"insert"[..])),
            ("version", Some(&b"7312345678901234567"[..])),
            ("schema", Some(&b"search-pipeline.event.v1"[..])),
        ]);
        // 2+6 + 7+19 + 6+24 bytes of keys and values, 6 lengths of 4.
        assert_eq!(h.bytes(), 64 + 24);
        let sized: usize = h.iter().map(|(k, v)| PackedHeaders::entry_len(k, v)).sum();
        assert_eq!(sized, h.bytes());
        assert_eq!(PackedHeaders::pack_sized(sized, h.iter()), h);
    }

    #[test]
    fn a_truncated_buffer_ends_the_headers_instead_of_panicking() {
        let h = PackedHeaders::pack([("op", Some(&b"insert"[..]))]);
        let cut = PackedHeaders(h.0[..h.0.len() - 2].to_vec().into_boxed_slice());
        assert_eq!(cut.iter().count(), 0);
        let cut = PackedHeaders(h.0[..3].to_vec().into_boxed_slice());
        assert_eq!(cut.iter().count(), 0);
    }
}
