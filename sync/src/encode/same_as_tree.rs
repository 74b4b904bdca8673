//! The streaming path against the tree path, on many generated shapes:
//! every Extended JSON wrapper in its relaxed and canonical form (the
//! MongoDB Kafka Connector writes the canonical one), wrappers that are not
//! (a second key, a wrong type), escapes, numbers of every kind, nesting,
//! repeated keys, projections; and whole records of both producers, in
//! each of the connector's three framings. Equal means the same text for a
//! value, and equal JSON values for a document (whose field order differs:
//! Elasticsearch and `verify` compare values).

use super::doc::{DocBody, DocText, SyncInfo};
use super::stream::{write_value, StreamError};
use crate::action::{self, Action};
use crate::bulk::request::encode;
use crate::config::{ProjectionConfig, TopicConfig};
use crate::event::{self, Span};
use crate::record::RawRecord;
use serde::de::{self, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};
use shared::ejson::to_search_json;
use shared::wire::event::{ClusterTime, Operation, SCHEMA};
use shared::wire::version::Version;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// xorshift64*: a deterministic generator (no dependency, same cases on
/// every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const STRINGS: &[&str] = &[
    r#""""#,
    r#""plain""#,
    r#""한라산 단풍이 들었다""#,
    r#""line\nbreak""#,
    r#""tab\tand \"quotes\"""#,
    r#""\u00e9t\u00e9""#,
    r#""\ud83d\ude00 emoji""#,
    r#""\/slash""#,
    r#""nul \u0000 byte""#,
    r#""back\\slash""#,
    r#""2024-01-02T03:04:05.678Z""#,
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-17",
    "3.25",
    "1e5",
    "1E-3",
    "-0.0",
    "1.0",
    "2.5e300",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "0.1",
    "123456789.123456789",
];

/// Extended JSON wrappers, relaxed and canonical (the connector's), and
/// look-alikes the tree path keeps as objects.
const WRAPPERS: &[&str] = &[
    r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#,
    r#"{"$date":"2024-01-02T03:04:05.678Z"}"#,
    r#"{"$date":"2024-01-02T03:04:05Z"}"#,
    r#"{"$date":{"$numberLong":"1704164645678"}}"#,
    r#"{"$date":{"$numberLong":"1704164645000"}}"#,
    r#"{"$date":{"$numberLong":"-62135596800001"}}"#,
    r#"{"$date":{"$numberLong":"253402300800000"}}"#,
    r#"{"$date":{"$numberLong":"x"}}"#,
    r#"{"$date":1704164645678}"#,
    r#"{"$date":-1000}"#,
    r#"{"$date":1.5}"#,
    r#"{"$numberLong":"42"}"#,
    r#"{"$numberLong":"-9007199254740992"}"#,
    r#"{"$numberLong":"9007199254740993"}"#,
    r#"{"$numberLong":"x"}"#,
    r#"{"$numberInt":"7"}"#,
    r#"{"$numberInt":"x"}"#,
    r#"{"$numberDouble":"1.5"}"#,
    r#"{"$numberDouble":"-0.0"}"#,
    r#"{"$numberDouble":"NaN"}"#,
    r#"{"$numberDouble":"-Infinity"}"#,
    r#"{"$numberDecimal":"12.50"}"#,
    r#"{"$numberDecimal":"NaN"}"#,
    r#"{"$binary":{"base64":"AQID","subType":"00"}}"#,
    r#"{"$binary":{"subType":"04"}}"#,
    r#"{"$binary":"AQID"}"#,
    r#"{"$timestamp":{"t":1700000000,"i":1}}"#,
    r#"{"$regularExpression":{"pattern":"^a\\d","options":"i"}}"#,
    r#"{"$symbol":"s"}"#,
    r#"{"$code":"f()"}"#,
    r#"{"$minKey":1}"#,
    r#"{"$maxKey":1}"#,
    r#"{"$undefined":true}"#,
    r#"{"$oid":5}"#,
    r#"{"$oid":"with \n escape"}"#,
    r#"{"$oid":"a","x":1}"#,
    r#"{"x":1,"$oid":"a"}"#,
    r#"{"$date":{"$numberLong":"1","extra":2}}"#,
    r#"{"$dbPointer":{"$ref":"c","$id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}}"#,
    r#"{"$x":{"$oid":"65a1b2c3d4e5f60718293a4b"}}"#,
    r#"{"$oid":{"$oid":"65a1b2c3d4e5f60718293a4b"}}"#,
    r#"{"$numberLong":"1","$numberLong":"2"}"#,
    r#"{"\u0024oid":"escaped key"}"#,
];

const KEYS: &[&str] = &[
    "a", "b", "title", "body", "_id", "$x", "k\\u00e9", "한글", "", "n", "at", "tags",
];

fn gen_value(r: &mut Rng, depth: u32, out: &mut String) {
    let choice = if depth >= 4 { r.below(4) } else { r.below(8) };
    match choice {
        0 => out.push_str(r.pick(STRINGS)),
        1 => out.push_str(r.pick(NUMBERS)),
        2 => out.push_str(r.pick(&["true", "false", "null"])),
        3 => out.push_str(r.pick(WRAPPERS)),
        4 | 5 => gen_object(r, depth + 1, out, 5),
        6 => {
            out.push('[');
            for i in 0..r.below(4) {
                if i > 0 {
                    out.push(',');
                }
                gen_value(r, depth + 1, out);
            }
            out.push(']');
        }
        _ => out.push_str(r.pick(WRAPPERS)),
    }
}

fn gen_object(r: &mut Rng, depth: u32, out: &mut String, max_keys: usize) {
    out.push('{');
    for i in 0..r.below(max_keys + 1) {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(r.pick(KEYS));
        out.push_str("\":");
        gen_value(r, depth, out);
    }
    out.push('}');
}

/// A document: an object with an `_id` (somewhere) and mixed fields.
fn gen_document(r: &mut Rng) -> String {
    let mut out = String::from("{");
    let id_at = r.below(4);
    let n = 1 + r.below(7);
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        if i == id_at {
            out.push_str(r#""_id":"#);
            out.push_str(r.pick(&[
                r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#,
                r#"{"$numberInt":"5"}"#,
                r#""slug""#,
                "7",
            ]));
            continue;
        }
        let key = r.pick(&[
            "title",
            "body",
            "likes",
            "at",
            "author",
            "tags",
            "n",
            "_sync",
            "x y",
            "_truncated",
        ]);
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        gen_value(r, 1, &mut out);
    }
    out.push('}');
    out
}

/// Whether any object in `text` repeats a key (independent of the code
/// under test).
fn repeats_a_key(text: &str) -> bool {
    struct V<'a>(&'a mut bool);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("json")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k) {
                    *self.0 = true;
                }
                m.next_value_seed(S(self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(S(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    struct S<'a>(&'a mut bool);
    impl<'de> de::DeserializeSeed<'de> for S<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(V(self.0))
        }
    }
    let mut found = false;
    let _ = serde_json::Deserializer::from_str(text).deserialize_any(V(&mut found));
    found
}

#[test]
fn values_stream_as_the_tree_path_writes_them() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut streamed, mut fell_back) = (0, 0);
    for case in 0..20_000 {
        let mut text = String::new();
        gen_value(&mut r, 0, &mut text);
        let tree = serde_json::from_str::<Value>(&text).map(|v| to_search_json(&v));
        let mut out = Vec::new();
        match (write_value(text.as_bytes(), &mut out), tree) {
            (Ok(()), Ok(want)) => {
                // Byte for byte: no field is moved at this level.
                let want = serde_json::to_string(&want).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), want, "case {case}: {text}");
                streamed += 1;
            }
            (Err(StreamError::Fallback), Ok(_)) => {
                assert!(repeats_a_key(&text), "case {case}: fell back on {text}");
                fell_back += 1;
            }
            (Err(StreamError::Json(_)), Err(_)) => {}
            (got, want) => panic!("case {case}: {text}: streamed {got:?}, tree {want:?}"),
        }
    }
    assert!(streamed > 15_000 && fell_back > 0, "{streamed} {fell_back}");
}

#[test]
fn bad_json_fails_both_ways() {
    for text in [
        r#"{"a":"\ud800"}"#,
        r#"{"$date":"\udc00"}"#,
        "[1e400]",
        r#"{"$numberLong":1e999}"#,
        &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        &format!("{}{}", r#"{"$x":"#.repeat(200), "}".repeat(200)),
    ] {
        let mut out = Vec::new();
        assert!(
            matches!(
                write_value(text.as_bytes(), &mut out),
                Err(StreamError::Json(_))
            ),
            "{text}"
        );
        assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
    }
}

fn projection(r: &mut Rng) -> ProjectionConfig {
    match r.below(5) {
        0 => ProjectionConfig {
            include: vec!["title".into(), "likes".into(), "_id".into()],
            ..Default::default()
        },
        1 => ProjectionConfig {
            exclude: vec!["body".into(), "tags".into()],
            ..Default::default()
        },
        2 => ProjectionConfig {
            rename: BTreeMap::from([("title".into(), "subject".into())]),
            ..Default::default()
        },
        3 => ProjectionConfig {
            // Two keys meet: the tree path merges them.
            rename: BTreeMap::from([("n".into(), "likes".into())]),
            exclude: vec!["at".into()],
            ..Default::default()
        },
        _ => ProjectionConfig::default(),
    }
}

fn sync(parent: Option<&str>) -> SyncInfo {
    SyncInfo {
        version: 7,
        op: Operation::Insert,
        ns: "mountain.card".into(),
        partition: 2,
        cluster_time: ClusterTime {
            t: 1_700_000_000,
            i: 3,
        },
        parent: parent.map(String::from),
    }
}

fn body_of(text: &str, p: ProjectionConfig, parent: Option<&str>) -> DocBody {
    let record = RawRecord {
        payload: Some(text.as_bytes().to_vec()),
        ..Default::default()
    };
    DocBody {
        text: DocText::Record(
            Arc::new(record),
            Span {
                start: 0,
                end: text.len(),
            },
        ),
        sync: sync(parent),
        projection: Arc::new(p),
    }
}

#[test]
fn documents_stream_as_the_tree_path_writes_them() {
    let mut r = Rng(0xD1B5_4A32_D192_ED03);
    let mut streamed = 0;
    for case in 0..10_000 {
        let text = gen_document(&mut r);
        let p = projection(&mut r);
        let parent = (r.below(3) == 0).then_some("65a1b2c3d4e5f60718293a4b");
        let body = body_of(&text, p.clone(), parent);
        // The tree path as es-sync ran it before: action::document_body
        // plus `_sync` (with the roll-up's parent).
        let tree = serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| action::document_body(&v, &p).map_err(|e| e.to_string()))
            .map(|mut m| {
                m.insert("_sync".into(), sync(parent).to_value());
                Value::Object(m)
            });
        let mut out = b"head\n".to_vec();
        match (body.write_source(&mut out), tree) {
            (Ok(()), Ok(want)) => {
                assert_eq!(out.last(), Some(&b'\n'), "case {case}");
                let got: Value = serde_json::from_slice(&out[5..])
                    .unwrap_or_else(|e| panic!("case {case}: {text}: bad JSON: {e}"));
                // Both read back from their text (serde_json's float
                // parsing is not exact, the same text reads the same).
                let want: Value =
                    serde_json::from_slice(&serde_json::to_vec(&want).unwrap()).unwrap();
                assert_eq!(got, want, "case {case}: {text} {p:?}");
                streamed += 1;
            }
            (Err(_), Err(_)) => assert_eq!(out, b"head\n", "left as it was"),
            (got, want) => panic!("case {case}: {text} {p:?}: streamed {got:?}, tree {want:?}"),
        }
    }
    assert!(streamed > 9_000, "{streamed}");
    // Shapes the tree path refuses or merges: the same answer.
    for (text, ok) in [
        (r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#, false),
        (r#"{"_id":1,"_sync":{"x":1},"a":2}"#, true),
        (r#"{"a":1,"a":2}"#, true),
        (r#"[1]"#, false),
        (r#"{"a":"\ud800"}"#, false),
    ] {
        let body = body_of(text, ProjectionConfig::default(), None);
        let mut out = Vec::new();
        assert_eq!(body.write_source(&mut out).is_ok(), ok, "{text}");
        if ok {
            let got: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(Value::Object(body.source_tree().unwrap()), got, "{text}");
        }
    }
}

fn route() -> TopicConfig {
    TopicConfig {
        topic: "live.mountain.card".into(),
        alias: "cards".into(),
        index_file: "x.json".into(),
        id_field: "_id".into(),
        projection: ProjectionConfig::default(),
    }
}

/// A record's lines by the tree path (decode, build, encode) and by the
/// raw path es-sync runs (decode_raw, build_raw, encode), as values.
fn both_ways(payload: &[u8]) -> (Result<Vec<Value>, String>, Result<Vec<Value>, String>) {
    let lines = |a: Action| -> Result<Vec<Value>, String> {
        let bytes = match a {
            Action::Skip | Action::SnapshotEnd { .. } | Action::Patch(_) => {
                return Ok(vec![json!(format!("{a:?}"))])
            }
            a => encode(&a).ok_or("not written")?,
        };
        std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())?
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
            .collect()
    };
    let r = route();
    let tree = event::decode(Some(payload))
        .map_err(|e| e.kind().to_string())
        .and_then(|ev| action::build(&ev, &r, "cards", 1).map_err(|e| e.kind().to_string()))
        .and_then(lines);
    let record = Arc::new(RawRecord {
        payload: Some(payload.to_vec()),
        ..Default::default()
    });
    let p = Arc::new(r.projection.clone());
    let raw = event::decode_raw(Some(payload))
        .map_err(|e| e.kind().to_string())
        .and_then(|ev| {
            action::build_raw(
                &ev,
                &record,
                &r,
                &p,
                "cards",
                1,
                &mut action::NsNames::default(),
            )
            .map_err(|e| e.kind().to_string())
        })
        .and_then(lines);
    (tree, raw)
}

/// `_id`s of every BSON type a MongoDB document can carry, in Extended
/// JSON (both producers' forms).
const IDS: &[&str] = &[
    r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#,
    r#""slug-한글""#,
    r#""65a1b2c3d4e5f60718293a4b""#,
    r#""5""#,
    "5",
    "-2",
    "1.5",
    r#"{"$numberInt":"5"}"#,
    r#"{"$numberLong":"9007199254740993"}"#,
    r#"{"$numberDouble":"1.5"}"#,
    r#"{"$numberDecimal":"12.50"}"#,
    r#"{"$date":{"$numberLong":"1704164645678"}}"#,
    r#"{"$date":"2024-01-02T03:04:05.678Z"}"#,
    r#"{"$binary":{"base64":"AAECAwQFBgcICQoLDA0ODw==","subType":"04"}}"#,
    r#"{"$uuid":"00010203-0405-0607-0809-0a0b0c0d0e0f"}"#,
    r#"{"a":1,"b":{"$oid":"65a1b2c3d4e5f60718293a4b"}}"#,
    "true",
    r#""quote \" and \\ back""#,
];

#[test]
fn records_of_both_producers_give_the_same_lines_both_ways() {
    let mut r = Rng(0x1234_5678_9ABC_DEF1);
    let version = Version::of_cluster_time(1_700_000_000, 3).as_u64();
    let mut written = 0;
    for case in 0..3_000 {
        let doc = gen_document(&mut r);
        let id = r.pick(IDS);
        let op = r.pick(&["insert", "update", "replace", "snapshot", "delete"]);
        // A change inside a transaction: its txn (native), its txnNumber
        // and lsid (connector).
        let in_txn = op != "snapshot" && r.below(3) == 0;
        let native = format!(
            r#"{{"schema":"{SCHEMA}","op":"{op}","ns":{{"db":"mountain","coll":"card"}},"key":{{"_id":{id}}},"doc":{doc},"cluster_time":{{"t":1700000000,"i":3}},"wall_time":"2023-11-14T22:13:20.456Z","version":{version}{snap}{txn}}}"#,
            snap = if op == "snapshot" {
                format!(r#","snapshot":{{"id":"s","version":{version}}}"#)
            } else {
                String::new()
            },
            txn = if in_txn {
                r#","txn":{"lsid":{"id":{"$binary":{"base64":"AAECAwQFBgcICQoLDA0ODw==","subType":"04"}}},"txn_number":4,"rank":0}"#
            } else {
                ""
            }
        );
        let cop = if op == "snapshot" { "insert" } else { op };
        let change = format!(
            r#"{{"_id":{{"_data":"8265"}},"operationType":"{cop}","clusterTime":{{"$timestamp":{{"t":1700000000,"i":7}}}},"wallTime":{{"$date":{{"$numberLong":"1700000000456"}}}},"ns":{{"db":"mountain","coll":"card"}},"documentKey":{{"_id":{id}}},"fullDocument":{doc}{txn}}}"#,
            txn = if in_txn {
                r#","txnNumber":{"$numberLong":"4"},"lsid":{"id":{"$binary":{"base64":"AAECAwQFBgcICQoLDA0ODw==","subType":"04"}},"uid":{"$binary":{"base64":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","subType":"00"}}}"#
            } else {
                ""
            }
        );
        let as_string = serde_json::to_string(&change).unwrap();
        let envelope = format!(r#"{{"schema":{{"type":"string"}},"payload":{as_string}}}"#);
        let object_envelope = format!(r#"{{"schema":{{"type":"struct"}},"payload":{change}}}"#);
        for payload in [&native, &change, &as_string, &envelope, &object_envelope] {
            let (tree, raw) = both_ways(payload.as_bytes());
            assert_eq!(raw, tree, "case {case}: {payload}");
            written += usize::from(tree.is_ok());
        }
    }
    assert!(written > 14_000, "{written} of 15000 records written");
    // Updates that carry only their delta (the connector's default) are
    // patches either way.
    let patch = r#"{"_id":{"_data":"8265"},"operationType":"update","clusterTime":{"$timestamp":{"t":1700000000,"i":7}},"ns":{"db":"mountain","coll":"card"},"documentKey":{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}},"updateDescription":{"updatedFields":{"title":"x"},"removedFields":[]},"fullDocumentBeforeChange":{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"},"title":"y"}}"#;
    let (tree, raw) = both_ways(patch.as_bytes());
    assert_eq!(raw, tree);
    assert!(tree.is_ok());
    // Delta updates of every `_id` type, with removed fields, truncated
    // arrays, no pre-image, inside a transaction or not.
    for (n, id) in IDS.iter().enumerate() {
        let txn = if n % 2 == 0 {
            r#","txnNumber":{"$numberLong":"9"},"lsid":{"id":{"$binary":{"base64":"AAECAwQFBgcICQoLDA0ODw==","subType":"04"}}}"#
        } else {
            ""
        };
        let delta = format!(
            r#"{{"_id":{{"_data":"8265"}},"operationType":"update","clusterTime":{{"$timestamp":{{"t":1700000000,"i":7}}}},"ns":{{"db":"mountain","coll":"card"}},"documentKey":{{"_id":{id}}},"updateDescription":{{"updatedFields":{{"title":"한라산 \ud83d\ude00","n":{{"$numberLong":"42"}},"at":{{"$date":{{"$numberLong":"1704164645678"}}}}}},"removedFields":["body"],"truncatedArrays":[{{"field":"tags","newSize":1}}]}}{txn}}}"#
        );
        for payload in [
            delta.clone(),
            serde_json::to_string(&delta).unwrap(),
            format!(r#"{{"schema":{{"type":"struct"}},"payload":{delta}}}"#),
        ] {
            let (tree, raw) = both_ways(payload.as_bytes());
            assert_eq!(raw, tree, "{payload}");
            assert!(tree.is_ok(), "{payload}: {tree:?}");
        }
    }
}
