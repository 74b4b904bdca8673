//! BSON to JSON, losslessly: MongoDB Extended JSON v2 in its *relaxed* form,
//! with one tightening so that no JSON consumer can lose precision.
//!
//! | BSON type        | JSON written                                             |
//! |------------------|----------------------------------------------------------|
//! | string, bool, null | the same JSON value                                    |
//! | int32            | number                                                   |
//! | int64 within ±2^53 | number                                                 |
//! | int64 beyond ±2^53 | `{"$numberLong": "9007199254740993"}` (canonical form) |
//! | double (finite)  | number (`1.0` stays a float: `1.0`)                      |
//! | double NaN/±inf  | `{"$numberDouble": "NaN" \| "Infinity" \| "-Infinity"}`  |
//! | Decimal128       | `{"$numberDecimal": "12.50"}`                            |
//! | ObjectId         | `{"$oid": "65a1..."}`                                    |
//! | date 1970..9999  | `{"$date": "2024-01-02T03:04:05.678Z"}`                  |
//! | other dates      | `{"$date": {"$numberLong": "-1000"}}`                    |
//! | binary           | `{"$binary": {"base64": "...", "subType": "00"}}`        |
//! | timestamp        | `{"$timestamp": {"t": 1700000000, "i": 1}}`              |
//! | regex            | `{"$regularExpression": {"pattern": "..", "options": ".."}}` |
//! | others           | their canonical Extended JSON form                       |
//!
//! The reverse direction, [`to_search_json`], turns that into plain JSON values
//! a search engine indexes naturally (ObjectId as its hex string, dates as
//! ISO-8601 strings, decimals as strings, binary as base64). It is applied by
//! `es-sync` when it builds documents, so Kafka keeps the lossless form.

use base64::Engine as _;
use mongodb::bson::{Bson, Document};
use serde_json::{json, Map, Value};

mod write;
pub(crate) use write::SeenKeys;
pub use write::{write_document, write_value, Unwritable};

/// Largest integer every JSON parser represents exactly (2^53).
pub const MAX_SAFE_INTEGER: i64 = 1 << 53;

/// Converts one BSON value to JSON (see the module table).
pub fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Int32(i) => json!(i),
        Bson::Int64(i) => {
            if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(i) {
                json!(i)
            } else {
                json!({ "$numberLong": i.to_string() })
            }
        }
        Bson::Double(f) => {
            if f.is_finite() {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            } else if f.is_nan() {
                json!({ "$numberDouble": "NaN" })
            } else if *f > 0.0 {
                json!({ "$numberDouble": "Infinity" })
            } else {
                json!({ "$numberDouble": "-Infinity" })
            }
        }
        Bson::Decimal128(d) => json!({ "$numberDecimal": d.to_string() }),
        Bson::ObjectId(oid) => json!({ "$oid": oid.to_hex() }),
        Bson::DateTime(dt) => match relaxed_date(*dt) {
            Ok(s) => json!({ "$date": s }),
            Err(ms) => json!({ "$date": { "$numberLong": ms.to_string() } }),
        },
        Bson::Binary(bin) => json!({
            "$binary": {
                "base64": base64::engine::general_purpose::STANDARD.encode(&bin.bytes),
                "subType": format!("{:02x}", u8::from(bin.subtype)),
            }
        }),
        Bson::Timestamp(ts) => json!({ "$timestamp": { "t": ts.time, "i": ts.increment } }),
        Bson::RegularExpression(re) => json!({
            "$regularExpression": { "pattern": re.pattern, "options": re.options }
        }),
        Bson::Document(doc) => Value::Object(document_to_map(doc)),
        Bson::Array(items) => Value::Array(items.iter().map(bson_to_json).collect()),
        // The remaining types (JavaScript code, symbols, DBPointer, min/max
        // keys) have no relaxed form: the canonical one is lossless.
        other => other.clone().into_canonical_extjson(),
    }
}

/// A date's relaxed form: its ISO-8601 string for years 1970..=9999 (as
/// the spec says), else `Err` with its milliseconds since the epoch (the
/// canonical `{"$numberLong": ...}` form).
pub(crate) fn relaxed_date(dt: mongodb::bson::DateTime) -> Result<String, i64> {
    let ms = dt.timestamp_millis();
    if !(0..=253_402_300_799_999).contains(&ms) {
        return Err(ms);
    }
    dt.try_to_rfc3339_string()
        .map(|s| normalise_rfc3339(&s))
        .map_err(|_| ms)
}

/// Converts a BSON document to a JSON object, keeping field order.
pub fn document_to_json(doc: &Document) -> Value {
    Value::Object(document_to_map(doc))
}

fn document_to_map(doc: &Document) -> Map<String, Value> {
    doc.iter()
        .map(|(k, v)| (k.clone(), bson_to_json(v)))
        .collect()
}

/// `2024-01-02T03:04:05.678Z` always with three fractional digits, so
/// strings sort and equal instants render equally: bson prints `...05Z`
/// when the milliseconds are zero and `...05.74Z` for 740 ms, while
/// Elasticsearch's `value_as_string` (a roll-up's latest reply time) always
/// prints three digits.
fn normalise_rfc3339(s: &str) -> String {
    let Some(body) = s.strip_suffix('Z') else {
        return s.to_string();
    };
    match body.rsplit_once('.') {
        None => format!("{body}.000Z"),
        Some((secs, frac)) if frac.len() < 3 && frac.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{secs}.{frac:0<3}Z")
        }
        Some(_) => s.to_string(),
    }
}

/// Canonical Extended JSON of a value, as one compact string: the Kafka key
/// of a document. Deterministic for the same `_id` (field order is kept, as
/// MongoDB itself compares embedded documents field by field, in order).
pub fn canonical_key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// Turns (relaxed or canonical) Extended JSON into plain JSON for a search
/// index: `$oid` becomes its hex string, `$date` an ISO-8601 string,
/// `$numberDecimal` / `$numberLong` strings or numbers, `$binary` base64.
pub fn to_search_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(v) = wrapper_value(map) {
                return v;
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), to_search_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(to_search_json).collect()),
        other => other.clone(),
    }
}

/// The plain value of a one-key Extended JSON wrapper, if `map` is one.
fn wrapper_value(map: &Map<String, Value>) -> Option<Value> {
    if map.len() != 1 {
        return None;
    }
    let (k, v) = map.iter().next()?;
    match (k.as_str(), v) {
        ("$oid", Value::String(s)) => Some(Value::String(s.clone())),
        ("$numberDecimal", Value::String(s)) => Some(Value::String(s.clone())),
        ("$numberLong", Value::String(s)) => Some(match s.parse::<i64>() {
            Ok(n) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) => json!(n),
            _ => Value::String(s.clone()),
        }),
        ("$numberInt", Value::String(s)) => s.parse::<i32>().ok().map(|n| json!(n)),
        ("$numberDouble", Value::String(s)) => Some(match s.parse::<f64>() {
            Ok(f) if f.is_finite() => json!(f),
            _ => Value::String(s.clone()),
        }),
        ("$date", Value::String(s)) => Some(Value::String(s.clone())),
        ("$date", Value::Object(inner)) => match inner.get("$numberLong") {
            Some(Value::String(ms)) => ms.parse::<i64>().ok().map(millis_to_search_date),
            _ => None,
        },
        ("$date", Value::Number(n)) => n.as_i64().map(millis_to_search_date),
        ("$binary", Value::Object(inner)) => inner.get("base64").cloned(),
        ("$timestamp", Value::Object(inner)) => inner.get("t").cloned(),
        ("$regularExpression", Value::Object(inner)) => inner.get("pattern").cloned(),
        ("$symbol", Value::String(s)) => Some(Value::String(s.clone())),
        ("$code", Value::String(s)) => Some(Value::String(s.clone())),
        ("$minKey", _) | ("$maxKey", _) | ("$undefined", _) => Some(Value::Null),
        _ => None,
    }
}

/// A date for the search index: ISO-8601 inside 0000..9999, else the
/// milliseconds since the epoch (Elasticsearch's `epoch_millis`).
fn millis_to_search_date(ms: i64) -> Value {
    match mongodb::bson::DateTime::from_millis(ms).try_to_rfc3339_string() {
        Ok(s) => Value::String(normalise_rfc3339(&s)),
        Err(_) => json!(ms),
    }
}

/// Parses Extended JSON (as written by [`bson_to_json`] or by the MongoDB
/// Kafka connector) back into BSON.
pub fn json_to_bson(value: &Value) -> Result<Bson, String> {
    Bson::try_from(value.clone()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Decimal128, Timestamp};
    use std::str::FromStr;

    #[test]
    fn dates_always_carry_three_fractional_digits() {
        // Elasticsearch answers a `max` on a date with three digits; the
        // same instant from MongoDB must render identically (verify once
        // reported roll-ups as stale because of `.74Z` against `.740Z`).
        for (ms, want) in [
            (1_764_722_729_740, "2025-12-03T00:45:29.740Z"),
            (1_764_722_729_700, "2025-12-03T00:45:29.700Z"),
            (1_764_722_729_000, "2025-12-03T00:45:29.000Z"),
            (1_764_722_729_007, "2025-12-03T00:45:29.007Z"),
        ] {
            let j = bson_to_json(&Bson::DateTime(mongodb::bson::DateTime::from_millis(ms)));
            assert_eq!(j, json!({ "$date": want }));
            assert_eq!(
                to_search_json(&json!({"$date": {"$numberLong": ms.to_string()}})),
                json!(want)
            );
        }
        assert_eq!(
            normalise_rfc3339("2025-12-03T00:45:29.1Z"),
            "2025-12-03T00:45:29.100Z"
        );
        assert_eq!(
            normalise_rfc3339("2025-12-03T00:45:29.123456Z"),
            "2025-12-03T00:45:29.123456Z"
        );
        assert_eq!(normalise_rfc3339("not a date"), "not a date");
        assert_eq!(normalise_rfc3339("x.혹Z"), "x.혹Z");
    }

    #[test]
    fn scalar_types_map_as_documented() {
        let oid = ObjectId::from_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let d = doc! {
            "s": "등산", "b": true, "n": null, "i32": 7_i32, "i64": 42_i64,
            "big": 9_007_199_254_740_993_i64, "neg": -9_007_199_254_740_993_i64,
            "f": 1.5, "nan": f64::NAN, "inf": f64::INFINITY,
            "dec": Bson::Decimal128(Decimal128::from_str("12.50").unwrap()),
            "oid": oid,
            "date": mongodb::bson::DateTime::from_millis(1_704_164_645_678),
            "old": mongodb::bson::DateTime::from_millis(-1000),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "ts": Timestamp { time: 1_700_000_000, increment: 9 },
        };
        let j = document_to_json(&d);
        assert_eq!(j["s"], "등산");
        assert_eq!(j["i32"], 7);
        assert_eq!(j["i64"], 42);
        assert_eq!(j["big"], json!({"$numberLong": "9007199254740993"}));
        assert_eq!(j["neg"], json!({"$numberLong": "-9007199254740993"}));
        assert_eq!(j["f"], 1.5);
        assert_eq!(j["nan"], json!({"$numberDouble": "NaN"}));
        assert_eq!(j["inf"], json!({"$numberDouble": "Infinity"}));
        assert_eq!(j["dec"], json!({"$numberDecimal": "12.50"}));
        assert_eq!(j["oid"], json!({"$oid": "65a1b2c3d4e5f60718293a4b"}));
        assert_eq!(j["date"], json!({"$date": "2024-01-02T03:04:05.678Z"}));
        assert_eq!(j["old"], json!({"$date": {"$numberLong": "-1000"}}));
        assert_eq!(
            j["bin"],
            json!({"$binary": {"base64": "AQID", "subType": "00"}})
        );
        assert_eq!(
            j["ts"],
            json!({"$timestamp": {"t": 1_700_000_000u32, "i": 9}})
        );
    }

    #[test]
    fn whole_seconds_keep_milliseconds() {
        let j = bson_to_json(&Bson::DateTime(mongodb::bson::DateTime::from_millis(
            1_704_164_645_000,
        )));
        assert_eq!(j, json!({"$date": "2024-01-02T03:04:05.000Z"}));
    }

    #[test]
    fn round_trip_is_lossless() {
        let d = doc! {
            "big": 9_007_199_254_740_993_i64,
            "dec": Bson::Decimal128(Decimal128::from_str("0.1").unwrap()),
            "oid": ObjectId::new(),
            "date": mongodb::bson::DateTime::from_millis(1_704_164_645_678),
            "nested": { "arr": [1_i32, "x", { "y": 2.5 }] },
            "bin": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        };
        let back = json_to_bson(&document_to_json(&d)).unwrap();
        assert_eq!(back, Bson::Document(d));
    }

    #[test]
    fn canonical_key_is_stable_and_typed() {
        let oid = ObjectId::from_str("65a1b2c3d4e5f60718293a4b").unwrap();
        assert_eq!(
            canonical_key(&Bson::ObjectId(oid)),
            r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#
        );
        assert_eq!(canonical_key(&Bson::String("a".into())), r#""a""#);
        assert_eq!(canonical_key(&Bson::Int32(5)), r#"{"$numberInt":"5"}"#);
        assert_ne!(
            canonical_key(&Bson::Int32(5)),
            canonical_key(&Bson::Int64(5))
        );
    }

    #[test]
    fn search_json_unwraps_extended_types() {
        let j = json!({
            "_id": {"$oid": "65a1b2c3d4e5f60718293a4b"},
            "at": {"$date": "2024-01-02T03:04:05.678Z"},
            "old": {"$date": {"$numberLong": "1704164645678"}},
            "price": {"$numberDecimal": "12.50"},
            "big": {"$numberLong": "9007199254740993"},
            "small": {"$numberLong": "5"},
            "tags": [{"$oid": "65a1b2c3d4e5f60718293a4c"}],
            "plain": {"a": 1, "b": 2}
        });
        let s = to_search_json(&j);
        assert_eq!(s["_id"], "65a1b2c3d4e5f60718293a4b");
        assert_eq!(s["at"], "2024-01-02T03:04:05.678Z");
        assert_eq!(s["old"], "2024-01-02T03:04:05.678Z");
        assert_eq!(s["price"], "12.50");
        assert_eq!(s["big"], "9007199254740993");
        assert_eq!(s["small"], 5);
        assert_eq!(s["tags"][0], "65a1b2c3d4e5f60718293a4c");
        assert_eq!(s["plain"], json!({"a": 1, "b": 2}));
    }
}
