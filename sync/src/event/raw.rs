//! Decoding a record into a [`RawEvent`]: the event's fields parsed, its
//! documents (`doc`, `before`) left as JSON text where they are in the
//! record, found by their [`Span`]. es-sync reads the document text once
//! more when it writes the bulk request ([`crate::encode`]), so no tree of
//! the document is ever built and the record's value is the one copy a
//! queued record holds.
//!
//! The checks are those of the tree decoding ([`super::decode`] is this
//! decoding with the documents parsed): the same formats, the same
//! refusals with the same [`DecodeError`] kinds. The document text itself
//! is only checked to be JSON here (balanced, valid UTF-8); what only a
//! full parse finds (a lone surrogate escape, a number out of range, more
//! than 128 levels) is found when the request is written, and that record
//! is dead-lettered then as `not_json`.
//!
//! Delivery guarantee: none needed, a pure function.

use super::{connector_update, ejson_date_ms, rfc3339_ms, DecodeError, Format, MAX_ES_VERSION};
use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use shared::wire::event::{
    ClusterTime, Namespace, Operation, OperationType, SnapshotInfo, TxnInfo, UpdateDescription,
    SCHEMA,
};
use shared::wire::version::Version;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a document is in the text an event was decoded from (byte
/// offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A decoded change (or marker) whose documents are still JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// What happened.
    pub op: Operation,
    /// Database and collection.
    pub ns: Namespace,
    /// The document key (`{"_id": ..}` plus shard key), Extended JSON;
    /// `Null` for markers.
    pub key: Value,
    /// The full document's text, when there is one.
    pub doc: Option<Span>,
    /// For updates: what changed.
    pub update: Option<UpdateDescription>,
    /// The pre-image's text, when the producer had one.
    pub before: Option<Span>,
    /// The Elasticsearch external version.
    pub version: Version,
    /// Cluster time of the change.
    pub cluster_time: ClusterTime,
    /// The server's wall-clock time of the change, ms, when known.
    pub wall_time_ms: Option<i64>,
    /// Which format it came in.
    pub format: Format,
    /// The text the spans point into when it is not the record's value:
    /// the change a connector record carries as a JSON string.
    pub inner: Option<Arc<str>>,
}

impl RawEvent {
    /// The text the spans point into (`payload`: the record's value).
    pub fn text<'a>(&'a self, payload: &'a [u8]) -> &'a [u8] {
        match &self.inner {
            Some(s) => s.as_bytes(),
            None => payload,
        }
    }

    /// The document's JSON text.
    pub fn doc_text<'a>(&'a self, payload: &'a [u8]) -> Option<&'a [u8]> {
        let s = self.doc?;
        self.text(payload).get(s.start..s.end)
    }

    /// The pre-image's JSON text.
    pub fn before_text<'a>(&'a self, payload: &'a [u8]) -> Option<&'a [u8]> {
        let s = self.before?;
        self.text(payload).get(s.start..s.end)
    }

    /// When MongoDB committed the change, ms (see
    /// [`super::SourceEvent::commit_time_ms`]).
    pub fn commit_time_ms(&self) -> Option<i64> {
        super::commit_time_ms(self.op, self.wall_time_ms, self.cluster_time)
    }
}

/// Decodes one record value, leaving its documents as text.
pub fn decode_raw(payload: Option<&[u8]>) -> Result<RawEvent, DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let mut found = decode_in(bytes, bytes, 0, false)?;
    let mut inner: Option<Arc<str>> = None;
    loop {
        match found {
            Found::Event(mut ev) => {
                ev.inner = inner;
                return Ok(*ev);
            }
            Found::Text(s, depth) => {
                let text: Arc<str> = s.into();
                found = decode_in(text.as_bytes(), text.as_bytes(), depth, true)?;
                inner = Some(text);
            }
        }
    }
}

/// What one level of a record holds.
enum Found {
    /// The event (spans into the level's base text).
    Event(Box<RawEvent>),
    /// A JSON string holding the event's text, to decode at this depth.
    Text(String, u8),
}

/// A key, borrowed from the text when it has no escapes.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The fields of a JSON object, each as raw text (a repeated key: the
/// last wins, as in a tree).
type Fields<'a> = BTreeMap<Key<'a>, &'a RawValue>;

/// The top-level object of `text`, its values unparsed.
fn fields(text: &[u8]) -> Result<Fields<'_>, serde_json::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Fields<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let out = (&mut de).deserialize_map(V)?;
    de.end()?;
    Ok(out)
}

/// The top-level field `name` of the JSON object `text` (the last one if
/// repeated, as in a tree); `None` if absent, or if `text` is not an
/// object that parses.
pub fn field_of(text: &[u8], name: &str) -> Option<Value> {
    let f = fields(text).ok()?;
    serde_json::from_str(get(&f, name)?.get()).ok()
}

fn get<'a>(f: &Fields<'a>, name: &str) -> Option<&'a RawValue> {
    f.get(&Key(Cow::Borrowed(name))).copied()
}

/// A field's value as `T`: a syntax error is `not_json` (the tree
/// decoding parsed everything first), a wrong type `invalid_event`.
fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, DecodeError> {
    serde_json::from_str(raw.get()).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Invalid(e.to_string()),
        _ => DecodeError::NotJson(e.to_string()),
    })
}

/// A required field as `T`.
fn required<'a, T: Deserialize<'a>>(f: &Fields<'a>, name: &str) -> Result<T, DecodeError> {
    match get(f, name) {
        Some(raw) => parse(raw),
        None => Err(DecodeError::Invalid(format!("missing field `{name}`"))),
    }
}

/// An optional field as `T` (`null` is absent).
fn optional<'a, T: Deserialize<'a>>(f: &Fields<'a>, name: &str) -> Result<Option<T>, DecodeError> {
    match get(f, name) {
        Some(raw) => parse::<Option<T>>(raw),
        None => Ok(None),
    }
}

/// The span of a document field inside `base` (`null` is absent).
fn span(f: &Fields<'_>, name: &str, base: &[u8]) -> Result<Option<Span>, DecodeError> {
    let Some(raw) = get(f, name) else {
        return Ok(None);
    };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let start = text
        .as_ptr()
        .addr()
        .checked_sub(base.as_ptr().addr())
        .filter(|s| base.get(*s..*s + text.len()) == Some(text.as_bytes()))
        .ok_or_else(|| DecodeError::Invalid(format!("`{name}` is not inside the record")))?;
    Ok(Some(Span {
        start,
        end: start + text.len(),
    }))
}

/// Full parse of a value that is not an event (so that what is not JSON
/// is told apart from JSON of another shape, as the tree decoding does).
fn not_an_event(text: &[u8], embedded: bool) -> DecodeError {
    match serde_json::from_slice::<Value>(text) {
        Ok(_) => DecodeError::UnknownFormat,
        Err(e) => not_json(&e, embedded),
    }
}

fn not_json(e: &serde_json::Error, embedded: bool) -> DecodeError {
    if embedded {
        DecodeError::NotJson(format!("embedded string: {e}"))
    } else {
        DecodeError::NotJson(e.to_string())
    }
}

/// One level of a record: `text` (inside `base`, the text spans are
/// relative to) at nesting `depth`; `embedded`: the text came out of a
/// JSON string.
fn decode_in(text: &[u8], base: &[u8], depth: u8, embedded: bool) -> Result<Found, DecodeError> {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'"') if depth < 2 => {
            // JsonConverter without schemas: the change document as a string.
            let s: String = serde_json::from_slice(text).map_err(|e| not_json(&e, embedded))?;
            Ok(Found::Text(s, depth + 1))
        }
        Some(b'{') => {
            let f = fields(text).map_err(|e| not_json(&e, embedded))?;
            let schema: Option<Value> = get(&f, "schema").and_then(|s| parse(s).ok());
            if schema.as_ref().and_then(Value::as_str) == Some(SCHEMA) {
                return native(&f, base).map(|e| Found::Event(Box::new(e)));
            }
            // JsonConverter envelope.
            if depth < 2 && get(&f, "payload").is_some() && get(&f, "schema").is_some() {
                let payload = get(&f, "payload").map_or("null", RawValue::get);
                return decode_in(payload.as_bytes(), base, depth + 1, embedded);
            }
            if get(&f, "operationType").is_some() {
                return connector(&f, base).map(|e| Found::Event(Box::new(e)));
            }
            Err(DecodeError::UnknownFormat)
        }
        _ => Err(not_an_event(text, embedded)),
    }
}

/// A `mongo-source` event (see [`super`]).
fn native(f: &Fields<'_>, base: &[u8]) -> Result<RawEvent, DecodeError> {
    // Check the operation first, for a precise error.
    let op_value: Value = get(f, "op").map(parse).transpose()?.unwrap_or(Value::Null);
    let op_name = op_value.as_str().unwrap_or("");
    if !Operation::ALL.iter().any(|o| o.as_str() == op_name) {
        return Err(DecodeError::UnknownOperation(op_name.to_string()));
    }
    let version_value: Option<Value> = get(f, "version").map(parse).transpose()?;
    if !version_value.as_ref().is_some_and(Value::is_u64) {
        return Err(DecodeError::BadVersion(format!(
            "`version` must be an unsigned integer, got {}",
            version_value.map_or("nothing".to_string(), |v| v.to_string())
        )));
    }
    let _schema: String = required(f, "schema")?;
    let op: Operation = required(f, "op")?;
    let ns: Namespace = required(f, "ns")?;
    let key: Value = required(f, "key")?;
    let doc = span(f, "doc", base)?;
    let update: Option<UpdateDescription> = optional(f, "update")?;
    let before = span(f, "before", base)?;
    let cluster_time: ClusterTime = required(f, "cluster_time")?;
    let wall_time: Option<String> = optional(f, "wall_time")?;
    let own_version: u64 = required(f, "version")?;
    let _txn: Option<TxnInfo> = optional(f, "txn")?;
    let snapshot: Option<SnapshotInfo> = optional(f, "snapshot")?;
    let version = match (op, &snapshot) {
        (Operation::SnapshotEnd, Some(s)) => s.version,
        (Operation::SnapshotEnd, None) => {
            return Err(DecodeError::BadVersion(
                "snapshot_end without `snapshot.version`".into(),
            ))
        }
        _ => own_version,
    };
    if version == 0 || version > MAX_ES_VERSION {
        return Err(DecodeError::BadVersion(format!(
            "{version} is outside 1..2^63-1"
        )));
    }
    let consistent = Version::from_u64(own_version)
        .matches_cluster_time(cluster_time.t, cluster_time.i)
        && snapshot.as_ref().is_none_or(|s| {
            Version::from_u64(s.version).matches_cluster_time(cluster_time.t, cluster_time.i)
        });
    if !consistent {
        return Err(DecodeError::BadVersion(format!(
            "version {own_version} (snapshot version {}) was not made from cluster time {{t: {}, i: {}}}",
            snapshot
                .as_ref()
                .map_or("none".to_string(), |s| s.version.to_string()),
            cluster_time.t,
            cluster_time.i
        )));
    }
    if !op.is_marker() && key.get("_id").is_none_or(Value::is_null) {
        return Err(DecodeError::MissingId);
    }
    Ok(RawEvent {
        op,
        ns,
        key,
        doc,
        update,
        before,
        version: Version::from_u64(version),
        cluster_time,
        wall_time_ms: wall_time.as_deref().and_then(rfc3339_ms),
        format: Format::Native,
        inner: None,
    })
}

/// A MongoDB Kafka Source Connector change stream document (see
/// [`super`]).
fn connector(f: &Fields<'_>, base: &[u8]) -> Result<RawEvent, DecodeError> {
    let value = |name: &str| -> Result<Option<Value>, DecodeError> {
        get(f, name).map(parse::<Value>).transpose()
    };
    let op_value = value("operationType")?.unwrap_or(Value::Null);
    let op_name = op_value.as_str().unwrap_or("");
    let op = match Operation::from_operation_type(op_name) {
        OperationType::Change(op) => op,
        _ => return Err(DecodeError::UnknownOperation(op_name.to_string())),
    };
    let (t, i) = value("clusterTime")?
        .as_ref()
        .and_then(|c| c.get("$timestamp"))
        .and_then(|ts| Some((ts.get("t")?.as_u64()?, ts.get("i")?.as_u64()?)))
        .ok_or_else(|| {
            DecodeError::BadVersion("`clusterTime` must be {\"$timestamp\": {\"t\", \"i\"}}".into())
        })?;
    let t = u32::try_from(t).map_err(|_| DecodeError::BadVersion(format!("t = {t} too large")))?;
    let i = u32::try_from(i).map_err(|_| DecodeError::BadVersion(format!("i = {i} too large")))?;
    // The changes of one transaction share its cluster time; the token's
    // txnOpIndex orders them (ranks past the layout are clamped).
    let rank = match get(f, "txnNumber") {
        Some(_) => value("_id")?
            .as_ref()
            .and_then(|id| id.get("_data"))
            .and_then(Value::as_str)
            .and_then(shared::wire::resume_token::txn_op_index)
            .filter(|(at, _)| *at == (t, i))
            .map_or(0, |(_, n)| u32::try_from(n).unwrap_or(u32::MAX)),
        None => 0,
    };
    let version = Version::saturating(t, i, rank).0;
    let ns = value("ns")?
        .as_ref()
        .and_then(|ns| {
            Some(Namespace {
                db: ns.get("db")?.as_str()?.to_string(),
                coll: ns.get("coll")?.as_str()?.to_string(),
            })
        })
        .ok_or_else(|| DecodeError::Invalid("`ns` must be {\"db\", \"coll\"}".into()))?;
    let key = value("documentKey")?.unwrap_or(Value::Null);
    if key.get("_id").is_none_or(Value::is_null) {
        return Err(DecodeError::MissingId);
    }
    let doc = span(f, "fullDocument", base)?;
    if matches!(op, Operation::Insert | Operation::Replace) && doc.is_none() {
        return Err(DecodeError::Invalid(format!(
            "{op_name} without `fullDocument`"
        )));
    }
    let before = span(f, "fullDocumentBeforeChange", base)?;
    let update = match value("updateDescription")? {
        Some(u) if op == Operation::Update => Some(connector_update(u)?),
        _ => None,
    };
    Ok(RawEvent {
        op,
        ns,
        key,
        doc,
        update,
        before,
        version,
        cluster_time: ClusterTime { t, i },
        wall_time_ms: value("wallTime")?.as_ref().and_then(ejson_date_ms),
        format: Format::Connector,
        inner: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"},"title":"한라산\n"}"#;

    fn native() -> String {
        let v = Version::of_cluster_time(1_700_000_000, 3).as_u64();
        format!(
            r#"{{"schema":"{SCHEMA}","op":"insert","ns":{{"db":"m","coll":"card"}},"key":{{"_id":{{"$oid":"65a1b2c3d4e5f60718293a4b"}}}},"doc": {DOC} ,"cluster_time":{{"t":1700000000,"i":3}},"version":{v}}}"#
        )
    }

    fn change() -> String {
        format!(
            r#"{{"_id":{{"_data":"82"}},"operationType":"insert","clusterTime":{{"$timestamp":{{"t":1700000000,"i":7}}}},"ns":{{"db":"m","coll":"card"}},"documentKey":{{"_id":{{"$oid":"65a1b2c3d4e5f60718293a4b"}}}},"fullDocument":{DOC}}}"#
        )
    }

    #[test]
    fn the_document_stays_where_it_is_in_the_record() {
        let p = native();
        let ev = decode_raw(Some(p.as_bytes())).unwrap();
        assert!(ev.inner.is_none());
        assert_eq!(ev.doc_text(p.as_bytes()), Some(DOC.as_bytes()));
        let p = change();
        let ev = decode_raw(Some(p.as_bytes())).unwrap();
        assert_eq!(ev.doc_text(p.as_bytes()), Some(DOC.as_bytes()));
        // An envelope whose payload is the object itself: still in the record.
        let p = format!(r#"{{"schema":{{"type":"struct"}},"payload":{}}}"#, change());
        let ev = decode_raw(Some(p.as_bytes())).unwrap();
        assert!(ev.inner.is_none());
        assert_eq!(ev.doc_text(p.as_bytes()), Some(DOC.as_bytes()));
    }

    #[test]
    fn a_change_carried_as_a_string_is_read_from_its_text() {
        let s = serde_json::to_string(&change()).unwrap();
        for p in [
            s.clone(),
            format!(r#"{{"schema":{{"type":"string"}},"payload":{s}}}"#),
        ] {
            let ev = decode_raw(Some(p.as_bytes())).unwrap();
            assert_eq!(ev.inner.as_deref(), Some(change().as_str()));
            assert_eq!(ev.doc_text(p.as_bytes()), Some(DOC.as_bytes()));
        }
    }

    #[test]
    fn what_only_a_full_parse_finds_is_left_to_the_writing() {
        // A lone surrogate inside the document: balanced JSON, refused
        // only when parsed (here by decode, in es-sync when the request
        // is written).
        let p = native().replace("한라산", "\\ud800");
        assert!(decode_raw(Some(p.as_bytes())).is_ok());
        assert_eq!(
            super::super::decode(Some(p.as_bytes())).unwrap_err().kind(),
            "not_json"
        );
        // Outside the document it is refused at once.
        let p = native().replace(r#""db":"m""#, r#""db":"\ud800""#);
        assert_eq!(
            decode_raw(Some(p.as_bytes())).unwrap_err().kind(),
            "not_json"
        );
    }

    #[test]
    fn a_top_level_field_is_the_last_of_its_name() {
        let t = br#"{"card_id":1,"x":{"card_id":2},"card_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}"#;
        assert_eq!(
            field_of(t, "card_id"),
            Some(serde_json::json!({"$oid": "65a1b2c3d4e5f60718293a4b"}))
        );
        assert_eq!(field_of(t, "y"), None);
        assert_eq!(field_of(b"[1]", "card_id"), None);
    }
}
