//! What a MongoDB resume token says about the position of its event inside
//! a transaction.
//!
//! A real MongoDB (3.6+) change event's `_id` is `{"_data": "<hex>"}`: the
//! `ResumeTokenData` {clusterTime, version, tokenType, txnOpIndex, ...}
//! encoded as a KeyString (MongoDB's order-preserving key encoding). The
//! MongoDB Kafka Connector copies it into every record, and `txnOpIndex`
//! (the event's index among the operations of its transaction) is the only
//! thing in such a record that orders the changes of one transaction, all
//! of which share one cluster time. `es-sync` uses it as the rank `n` of
//! the version layout for connector records ([`super::version`]).
//!
//! Only the leading fields are read: a Timestamp (type byte 130, 8 bytes),
//! then small non-negative integers (type 41 for zero, 43..=50 for 1..8
//! big-endian bytes holding the value shifted left by one). Anything else
//! (another server's opaque token, a corrupt one) gives `None`: no rank.

/// KeyString type byte of a Timestamp.
const TIMESTAMP: u8 = 130;
/// KeyString type byte of the number zero.
const ZERO: u8 = 41;
/// KeyString type bytes of positive integers of 1..=8 bytes.
const POSITIVE_INT: std::ops::RangeInclusive<u8> = 43..=50;

/// The cluster time and `txnOpIndex` of a resume token's `_data` (hex).
pub fn txn_op_index(data_hex: &str) -> Option<((u32, u32), u64)> {
    let bytes = hex::decode(data_hex).ok()?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    if r.byte()? != TIMESTAMP {
        return None;
    }
    let ts = r.take(8)?;
    let t = u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]);
    let i = u32::from_be_bytes([ts[4], ts[5], ts[6], ts[7]]);
    let version = r.int()?;
    if version >= 1 {
        let _token_type = r.int()?;
    }
    let txn_op_index = r.int()?;
    Some(((t, i), txn_op_index))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    /// A small non-negative KeyString integer.
    fn int(&mut self) -> Option<u64> {
        let ty = self.byte()?;
        if ty == ZERO {
            return Some(0);
        }
        if !POSITIVE_INT.contains(&ty) {
            return None;
        }
        let n = usize::from(ty - POSITIVE_INT.start() + 1);
        let raw = self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Some(raw >> 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_event_token() {
        // A token printed by mongodb-resumetoken-decoder's README:
        // timestamp {t: 1630438675, i: 1}, version 1, tokenType 128,
        // txnOpIndex 0.
        let token = "82612E8513000000012B022C0100296E5A1004A5093ABB38FE4B9EA67F01BB1A96D812463C5F6964003C5F5F5F78000004";
        assert_eq!(txn_op_index(token), Some(((1_630_438_675, 1), 0)));
    }

    #[test]
    fn reads_a_transaction_index() {
        // Same layout with txnOpIndex 300 (2 bytes: 600 = 0x0258).
        let token = "82612E8513000000072B022C01002C02586E5A1004";
        assert_eq!(txn_op_index(token), Some(((1_630_438_675, 7), 300)));
        // txnOpIndex 3 (1 byte: 6).
        let token = "82612E8513000000072B022C01002B066E";
        assert_eq!(txn_op_index(token), Some(((1_630_438_675, 7), 3)));
    }

    #[test]
    fn other_tokens_give_nothing() {
        for t in [
            "",
            "zz",
            "82",
            "8261",
            "0a0b0c",
            "82612E851300000001",
            "82612E8513000000012B",
        ] {
            assert_eq!(txn_op_index(t), None, "{t}");
        }
    }
}
