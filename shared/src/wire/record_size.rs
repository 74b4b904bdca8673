//! The size a Kafka broker counts for a record: what it compares with a
//! topic's `max.message.bytes` (the broker's `message.max.bytes` for topics
//! without their own) when the record travels alone in its batch.
//!
//! Kafka's record batch (magic 2) is a 61-byte header followed by the
//! records; the broker refuses a batch whose total size is over the limit
//! (`RecordTooLargeException`, `MESSAGE_TOO_LARGE` to the client). One
//! record is its length (varint), attributes (1 byte), timestamp delta and
//! offset delta (varints, 0 for the first record of a batch), the key and
//! the value each as a varint length (-1 for none) and the bytes, then the
//! header count (varint) and each header as name length, name, value length
//! (-1 for none) and value. Varints are zig-zag encoded. This is the size
//! **uncompressed**: compression can only make a batch smaller (librdkafka
//! sends a batch uncompressed when compressing does not help), so a record
//! whose size here fits the limit is always accepted.
//!
//! librdkafka's own check (`message.max.bytes`, local
//! `MSG_SIZE_TOO_LARGE`) counts key, value, headers and at most 36 bytes of
//! per-record varints, which is always below this size: a producer whose
//! `message.max.bytes` equals the topic's limit accepts every record that
//! fits here.

/// Bytes of a record batch header (magic 2).
pub const BATCH_HEADER: usize = 61;

/// The default `message.max.bytes` of a Kafka broker (1 MiB + 12), the
/// limit of every topic that sets no `max.message.bytes` of its own.
pub const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Bytes of the zig-zag varint encoding of `v`.
pub fn varint_len(v: i64) -> usize {
    // Zig-zag: small magnitudes of either sign take few bytes.
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn bytes_field(len: Option<usize>) -> usize {
    match len {
        None => varint_len(-1),
        Some(l) => varint_len(i64::try_from(l).unwrap_or(i64::MAX)) + l,
    }
}

/// Size of one record (without the batch header): key and value lengths
/// (`None` for a null key or value) and each header's name length and
/// value length (`None` for a null value).
pub fn record_size(
    key: Option<usize>,
    value: Option<usize>,
    headers: &[(usize, Option<usize>)],
) -> usize {
    let body = 1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(0) // offset delta
        + bytes_field(key)
        + bytes_field(value)
        + varint_len(i64::try_from(headers.len()).unwrap_or(i64::MAX))
        + headers
            .iter()
            .map(|(name, value)| bytes_field(Some(*name)) + bytes_field(*value))
            .sum::<usize>();
    varint_len(i64::try_from(body).unwrap_or(i64::MAX)) + body
}

/// Size of a batch holding only this record: what the broker compares
/// with the topic's `max.message.bytes`.
pub fn batch_size(
    key: Option<usize>,
    value: Option<usize>,
    headers: &[(usize, Option<usize>)],
) -> usize {
    BATCH_HEADER + record_size(key, value, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_zig_zag() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(-64), 1);
        assert_eq!(varint_len(-65), 2);
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
        assert_eq!(varint_len(1_048_576), 4);
        assert_eq!(varint_len(i64::MAX), 10);
    }

    #[test]
    fn an_empty_record_is_the_batch_header_plus_seven_bytes() {
        // length 1, attributes 1, two deltas 1+1, null key 1, null value 1,
        // no headers 1.
        assert_eq!(record_size(None, None, &[]), 7);
        assert_eq!(batch_size(None, None, &[]), 68);
    }

    #[test]
    fn key_value_and_headers_count_with_their_lengths() {
        // key "k" (1+1), value 100 bytes (2+100), two headers (1): "op" =
        // "insert" (1+2 + 1+6) and one with a null value (1+4 + 1); the
        // record's length (124) takes two bytes.
        let body = 1 + 1 + 1 + 2 + 102 + 1 + 10 + 6;
        assert_eq!(body, 124);
        assert_eq!(
            record_size(Some(1), Some(100), &[(2, Some(6)), (4, None)]),
            2 + body
        );
    }

    #[test]
    fn a_one_mib_value_takes_a_four_byte_length() {
        let r = record_size(None, Some(1 << 20), &[]);
        // value length varint of 2^20 is 4 bytes; the record length too.
        assert_eq!(r, 4 + (1 + 1 + 1 + 1 + 4 + (1 << 20) + 1));
    }
}
