//! The module table's JSON written straight from raw BSON into a byte
//! buffer: no [`mongodb::bson::Document`] and no [`serde_json::Value`] in
//! between, so a change event costs one pass over its bytes instead of two
//! trees of small allocations (issue 17: they were a third of
//! mongo-source's CPU).
//!
//! The bytes are exactly those of `serde_json::to_vec(&bson_to_json(..))`
//! of the same document read the usual way (`RawDocument` → `Document`);
//! `tests` holds the two paths to that over every BSON type. Where the
//! tree path would not keep the bytes as they are, the writer refuses
//! ([`Unwritable`]) and the caller takes the tree path:
//! - a string or key that is not UTF-8 (the tree path reads those lossily);
//! - a field name twice in one document (the tree keeps one of them);
//! - BSON that does not parse.
//!
//! Rare types (regular expressions, JavaScript, symbols, DBPointer,
//! min/max keys) are converted through [`super::bson_to_json`] itself.

use super::{bson_to_json, relaxed_date, MAX_SAFE_INTEGER};
use base64::Engine as _;
use mongodb::bson::{Bson, RawArray, RawBsonRef, RawDocument};
use std::collections::HashSet;
use std::io::Write as _;

/// Why a document is left to the tree path (see the module documentation).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unwritable {
    /// The BSON does not parse, or holds a string that is not UTF-8.
    #[error("unreadable BSON: {0}")]
    Bson(String),
    /// A field name appears twice in one document.
    #[error("field {0:?} twice in one document")]
    DuplicateKey(String),
}

/// Field names a document may have before duplicates are looked up in a
/// hash set instead of by comparing with each earlier name (documents of a
/// few dozen fields never allocate).
const LINEAR_KEYS: usize = 32;

/// The field names of one document seen so far.
pub(crate) struct SeenKeys<'a> {
    few: [&'a str; LINEAR_KEYS],
    n: usize,
    many: Option<HashSet<&'a str>>,
}

impl<'a> SeenKeys<'a> {
    pub(crate) fn new() -> Self {
        Self {
            few: [""; LINEAR_KEYS],
            n: 0,
            many: None,
        }
    }

    /// Notes `key`; `false` if it was seen before.
    pub(crate) fn insert(&mut self, key: &'a str) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if self.few[..self.n].contains(&key) {
            return false;
        }
        if self.n < LINEAR_KEYS {
            self.few[self.n] = key;
            self.n += 1;
        } else {
            let mut set: HashSet<&str> = self.few.iter().copied().collect();
            set.insert(key);
            self.many = Some(set);
        }
        true
    }
}

/// Appends the JSON of `doc` to `out`. On an error, `out` holds part of it:
/// the caller truncates.
pub fn write_document(doc: &RawDocument, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    out.push(b'{');
    let mut seen = SeenKeys::new();
    for (n, field) in doc.iter().enumerate() {
        let (key, value) = field.map_err(|e| Unwritable::Bson(e.to_string()))?;
        if !seen.insert(key) {
            return Err(Unwritable::DuplicateKey(key.to_string()));
        }
        if n > 0 {
            out.push(b',');
        }
        string(out, key);
        out.push(b':');
        write_value(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends the JSON of one value to `out` (see [`write_document`]).
pub fn write_value(value: RawBsonRef<'_>, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    match value {
        RawBsonRef::Null | RawBsonRef::Undefined => out.extend_from_slice(b"null"),
        RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        RawBsonRef::String(s) => string(out, s),
        RawBsonRef::Int32(i) => number(out, i),
        RawBsonRef::Int64(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => {
            number(out, i)
        }
        RawBsonRef::Int64(i) => wrapped(out, "$numberLong", |out| string(out, &i.to_string())),
        RawBsonRef::Double(f) if f.is_finite() => number(out, f),
        RawBsonRef::Double(f) => {
            let name = if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            wrapped(out, "$numberDouble", |out| string(out, name))
        }
        RawBsonRef::Decimal128(d) => {
            wrapped(out, "$numberDecimal", |out| string(out, &d.to_string()))
        }
        RawBsonRef::ObjectId(oid) => wrapped(out, "$oid", |out| {
            // Hex digits need no escaping; no string made for them.
            let mut hex = [0u8; 24];
            let _ = hex::encode_to_slice(oid.bytes(), &mut hex);
            out.push(b'"');
            out.extend_from_slice(&hex);
            out.push(b'"');
        }),
        RawBsonRef::DateTime(dt) => wrapped(out, "$date", |out| match relaxed_date(dt) {
            Ok(s) => string(out, &s),
            Err(ms) => wrapped(out, "$numberLong", |out| string(out, &ms.to_string())),
        }),
        RawBsonRef::Binary(b) => wrapped(out, "$binary", |out| {
            out.extend_from_slice(b"{\"base64\":\"");
            // Base64's alphabet needs no escaping in a JSON string.
            base64_into(out, b.bytes);
            let _ = write!(out, "\",\"subType\":\"{:02x}\"}}", u8::from(b.subtype));
        }),
        RawBsonRef::Timestamp(ts) => {
            let _ = write!(
                out,
                "{{\"$timestamp\":{{\"t\":{},\"i\":{}}}}}",
                ts.time, ts.increment
            );
        }
        RawBsonRef::Document(d) => write_document(d, out)?,
        RawBsonRef::Array(a) => write_array(a, out)?,
        other => {
            let tree = Bson::try_from(other).map_err(|e| Unwritable::Bson(e.to_string()))?;
            let _ = serde_json::to_writer(&mut *out, &bson_to_json(&tree));
        }
    }
    Ok(())
}

fn write_array(items: &RawArray, out: &mut Vec<u8>) -> Result<(), Unwritable> {
    out.push(b'[');
    for (n, item) in items.into_iter().enumerate() {
        let item = item.map_err(|e| Unwritable::Bson(e.to_string()))?;
        if n > 0 {
            out.push(b',');
        }
        write_value(item, out)?;
    }
    out.push(b']');
    Ok(())
}

/// `{"name":` what `inner` writes `}`.
fn wrapped(out: &mut Vec<u8>, name: &str, inner: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'{');
    string(out, name);
    out.push(b':');
    inner(out);
    out.push(b'}');
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A number as serde_json writes it.
fn number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// Base64 of `bytes` appended to `out` (no intermediate string).
fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::super::document_to_json;
    use super::*;
    use mongodb::bson::{
        doc, oid::ObjectId, spec::BinarySubtype, Binary, DateTime, Decimal128, Document,
        JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp,
    };
    use std::str::FromStr;

    /// The tree path's bytes for `doc`.
    fn tree(doc: &Document) -> Vec<u8> {
        serde_json::to_vec(&document_to_json(doc)).unwrap()
    }

    fn streamed(raw: &RawDocument) -> Result<Vec<u8>, Unwritable> {
        let mut out = Vec::new();
        write_document(raw, &mut out).map(|()| out)
    }

    fn assert_same(doc: &Document) {
        let raw = RawDocumentBuf::from_document(doc).unwrap();
        let got = streamed(&raw).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&tree(&raw.to_document().unwrap())),
            "document {doc:?}"
        );
    }

    fn every_type() -> Document {
        let mut all = doc! {
            "s": "설악산 \"단풍\" \\ \n\t\u{1}\u{7f} ☃ 𝄞", "empty": "", "b": true, "f": false,
            "n": null, "u": Bson::Undefined,
            "i32": 7_i32, "i32min": i32::MIN, "i64": 42_i64, "i64max": i64::MAX, "i64min": i64::MIN,
            "safe": MAX_SAFE_INTEGER, "unsafe": MAX_SAFE_INTEGER + 1, "nsafe": -MAX_SAFE_INTEGER,
            "nunsafe": -MAX_SAFE_INTEGER - 1,
            "d": 1.5, "d1": 1.0, "dneg0": -0.0, "dtiny": 5e-324, "dbig": 1.7976931348623157e308,
            "dthird": 1.0 / 3.0, "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY,
        };
        let more = doc! {
            "dec": Bson::Decimal128(Decimal128::from_str("12.50").unwrap()),
            "dec2": Bson::Decimal128(Decimal128::from_str("-1E+400").unwrap()),
            "oid": ObjectId::from_str("65a1b2c3d4e5f60718293a4b").unwrap(),
            "date": DateTime::from_millis(1_704_164_645_678),
            "date0": DateTime::from_millis(1_704_164_645_000),
            "epoch": DateTime::from_millis(0),
            "before1970": DateTime::from_millis(-1000),
            "after9999": DateTime::from_millis(253_402_300_800_000),
            "maxdate": DateTime::MAX,
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "bin0": Binary { subtype: BinarySubtype::Generic, bytes: vec![] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0xff; 16] },
            "old": Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![9, 8, 7, 6, 5] },
            "user": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![0xfe] },
        };
        let rest = doc! {
            "ts": Timestamp { time: 1_700_000_000, increment: 9 },
            "tsmax": Timestamp { time: u32::MAX, increment: u32::MAX },
            "re": Regex { pattern: "^산.*$".into(), options: "mix".into() },
            "code": Bson::JavaScriptCode("function() { return 1; }".into()),
            "scope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x".into(), scope: doc! { "x": 1_i32 },
            }),
            "sym": Bson::Symbol("기호".into()),
            "ptr": Bson::try_from(serde_json::json!({
                "$dbPointer": { "$ref": "c", "$id": { "$oid": "65a1b2c3d4e5f60718293a4b" } }
            }))
            .unwrap(),
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "nested": { "arr": [1_i32, "x", { "y": 2.5, "z": [] }, [[]], {}], "e": {} },
            "한글 키 \"quoted\"": 1_i32, "": "empty key", "$dollar": "and.dot",
        };
        all.extend(more);
        all.extend(rest);
        all
    }

    #[test]
    fn every_type_is_written_as_the_tree_path_writes_it() {
        let all = every_type();
        assert_same(&all);
        for (k, v) in &all {
            assert_same(&doc! { k.clone(): v.clone() });
            assert_same(&doc! { "in array": [v.clone(), v.clone()] });
        }
        assert_same(&doc! {});
    }

    #[test]
    fn generated_documents_match_the_tree_path() {
        // A small deterministic generator (xorshift): nested documents
        // and arrays of every type, many fields, Korean and escaped text.
        let leaves: Vec<Bson> = every_type().into_iter().map(|(_, v)| v).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn build(next: &mut dyn FnMut() -> u64, leaves: &[Bson], depth: u32) -> Bson {
            match next() % 8 {
                0 if depth < 4 => {
                    let n = next() % 50;
                    Bson::Document(
                        (0..n)
                            .map(|i| {
                                (
                                    format!("필드{i}_{}", next() % 1000),
                                    build(next, leaves, depth + 1),
                                )
                            })
                            .collect(),
                    )
                }
                1 if depth < 4 => Bson::Array(
                    (0..next() % 6)
                        .map(|_| build(next, leaves, depth + 1))
                        .collect(),
                ),
                _ => leaves[(next() % leaves.len() as u64) as usize].clone(),
            }
        }
        for _ in 0..300 {
            let d: Document = (0..next() % 40)
                .map(|i| (format!("f{i}"), build(&mut next, &leaves, 0)))
                .collect();
            assert_same(&d);
        }
    }

    #[test]
    fn a_repeated_field_name_is_left_to_the_tree_path() {
        // Built by hand: the bson crate's builders keep one of the two.
        for fields in [2usize, LINEAR_KEYS + 5] {
            let mut raw = RawDocumentBuf::new();
            for i in 0..fields - 1 {
                raw.append(format!("k{i}"), i as i32);
            }
            raw.append("k0", "again");
            assert_eq!(
                streamed(&raw),
                Err(Unwritable::DuplicateKey("k0".into())),
                "{fields} fields"
            );
        }
        // Many distinct names, past the linear scan: written.
        let many: Document = (0..100)
            .map(|i| (format!("k{i}"), Bson::Int32(i)))
            .collect();
        assert_same(&many);
    }

    #[test]
    fn invalid_utf8_is_left_to_the_tree_path() {
        let mut raw = RawDocumentBuf::new();
        raw.append("ok", "fine");
        raw.append("bad", "XX");
        let mut bytes = raw.into_bytes();
        // The string's two bytes: make them an invalid UTF-8 sequence.
        let at = bytes.windows(2).rposition(|w| w == b"XX").unwrap();
        bytes[at] = 0xff;
        bytes[at + 1] = 0xfe;
        let raw = RawDocumentBuf::from_bytes(bytes).unwrap();
        assert!(matches!(streamed(&raw), Err(Unwritable::Bson(_))));
        let mut nested = RawDocumentBuf::new();
        nested.append("inner", raw.clone());
        assert!(matches!(streamed(&nested), Err(Unwritable::Bson(_))));
    }
}
