//! [`shared::ejson::to_search_json`] in one streaming pass: the JSON text
//! of a document is read once and its search form written straight into
//! the request buffer, without building a tree.
//!
//! Same semantics as the tree path, value for value: every value is parsed
//! by `serde_json` (the same checks: strings, numbers, nesting) and written
//! back as `serde_json` writes it; an object whose only key is an Extended
//! JSON wrapper (`$oid`, `$date`, `$numberLong`, ...) is rewritten by the
//! tree function itself on that small object. What the tree path would
//! merge rather than write twice (a key repeated in one object: the last
//! value wins there) is left to the tree path: the pass stops with
//! [`StreamError::Fallback`] and the caller runs the tree path on the same
//! text. Field order is the document's (the tree path moves the last field
//! into the place of a removed `_id`; Elasticsearch and `verify` compare
//! values, not order).
//!
//! Delivery guarantee: none needed, a pure function.

use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};
use shared::ejson::to_search_json;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Why the streaming pass did not write a document.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Not JSON the tree path would parse (the parser's message).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A shape the tree path merges (a repeated key, a document `_sync`, a
    /// document that is one Extended JSON wrapper): run the tree path.
    #[error("left to the tree path")]
    Fallback,
}

/// The top level of a document: what is left out, renamed, appended.
pub struct TopLevel<'p> {
    /// Keys left out (`_id` and the projection's exclusions).
    pub skip: &'p dyn Fn(&str) -> bool,
    /// The name a kept key gets.
    pub rename: &'p dyn Fn(&str) -> Option<&'p str>,
    /// Written after the document's own fields, with its key (`"_sync":{..}`).
    pub append: &'p dyn Fn(&mut Vec<u8>),
    /// The key `append` writes: a document field of that name (after
    /// renames) is left to the tree path.
    pub reserved: &'p str,
    /// Whether `rename` renames anything (two keys may then meet).
    pub renames: bool,
}

/// Writes the search form of the JSON object `text` into `out`, its top
/// level shaped by `top`. On an error `out` may hold part of it: the
/// caller truncates.
pub fn write_document(
    text: &[u8],
    top: &TopLevel<'_>,
    out: &mut Vec<u8>,
) -> Result<(), StreamError> {
    let mut w = Writer {
        out,
        discard: 0,
        keys: Vec::new(),
        sets: Vec::new(),
        fallback: false,
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let r = (&mut de).deserialize_any(DocVisitor { w: &mut w, top });
    let fallback = w.fallback;
    match r {
        Err(_) if fallback => Err(StreamError::Fallback),
        Err(e) => Err(StreamError::Json(e)),
        Ok(()) => {
            de.end()?;
            Ok(())
        }
    }
}

/// Writes the search form of any JSON value `text` into `out`.
pub fn write_value(text: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
    let mut w = Writer {
        out,
        discard: 0,
        keys: Vec::new(),
        sets: Vec::new(),
        fallback: false,
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let r = ValueSeed(&mut w).deserialize(&mut de);
    let fallback = w.fallback;
    match r {
        Err(_) if fallback => Err(StreamError::Fallback),
        Err(e) => Err(StreamError::Json(e)),
        Ok(()) => {
            de.end()?;
            Ok(())
        }
    }
}

/// Objects with more keys than this check repeats with a set.
const LINEAR_KEYS: usize = 24;

/// The output and the state of one pass.
struct Writer<'o, 'de> {
    out: &'o mut Vec<u8>,
    /// While > 0, values are parsed (checked) but not written.
    discard: u32,
    /// The keys of the objects being written, innermost last.
    keys: Vec<Cow<'de, str>>,
    /// For objects with many keys: where their keys start, and a set of them.
    sets: Vec<(usize, HashSet<Cow<'de, str>>)>,
    /// Set before failing with a marker error: the tree path must run.
    fallback: bool,
}

impl<'de> Writer<'_, 'de> {
    fn put(&mut self, b: &[u8]) {
        if self.discard == 0 {
            self.out.extend_from_slice(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.discard == 0 {
            self.out.push(b);
        }
    }

    /// A string as `serde_json` writes it.
    fn string(&mut self, s: &str, has_escapes: bool) {
        if self.discard > 0 {
            return;
        }
        if has_escapes {
            // Vec<u8> as io::Write cannot fail.
            let _ = serde_json::to_writer(&mut *self.out, s);
        } else {
            // Text read without escapes has no byte serde_json escapes (a
            // quote, a backslash or a control character would have needed
            // one).
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        }
    }

    /// A value of the tree path, as `serde_json` writes it.
    fn tree(&mut self, v: &Value) {
        if self.discard == 0 {
            let _ = serde_json::to_writer(&mut *self.out, v);
        }
    }

    fn fallback<E: de::Error>(&mut self) -> E {
        self.fallback = true;
        E::custom("left to the tree path")
    }

    /// Notes `key` in the object whose keys start at `from`; a repeat
    /// means fallback.
    fn key<E: de::Error>(&mut self, from: usize, key: Cow<'de, str>) -> Result<(), E> {
        let seen = &self.keys[from..];
        let repeat = if seen.len() < LINEAR_KEYS {
            seen.contains(&key)
        } else {
            if self.sets.last().map(|(f, _)| *f) != Some(from) {
                let set = seen.iter().cloned().collect();
                self.sets.push((from, set));
            }
            match self.sets.last_mut() {
                Some((_, set)) => !set.insert(key.clone()),
                None => true,
            }
        };
        if repeat {
            return Err(self.fallback());
        }
        self.keys.push(key);
        Ok(())
    }

    /// The object whose keys start at `from` ended.
    fn end_object(&mut self, from: usize) {
        self.keys.truncate(from);
        if self.sets.last().is_some_and(|(f, _)| *f == from) {
            self.sets.pop();
        }
    }
}

/// Extended JSON wrappers whose string value is the search value itself.
const STRING_WRAPPERS: [&str; 5] = ["$oid", "$date", "$numberDecimal", "$symbol", "$code"];

/// Keys the tree path may rewrite when alone in an object (every wrapper
/// begins with `$`; which ones and how is the tree function's business).
fn is_wrapper_key(k: &str) -> bool {
    k.starts_with('$')
}

/// A key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>, bool);

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s), false))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string()), true))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s), true))
            }
        }
        d.deserialize_str(V)
    }
}

/// Writes one value (any JSON) in search form.
struct ValueSeed<'w, 'o, 'de>(&'w mut Writer<'o, 'de>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor<'w, 'o, 'de>(&'w mut Writer<'o, 'de>);

impl<'de> Visitor<'de> for ValueVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.put(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if self.0.discard == 0 {
            let _ = serde_json::to_writer(&mut *self.0.out, &v);
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        if self.0.discard == 0 {
            let _ = serde_json::to_writer(&mut *self.0.out, &v);
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if self.0.discard == 0 {
            // As Value::Number writes it (ryu; never non-finite from a parse).
            let _ = serde_json::to_writer(&mut *self.0.out, &v);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.put(b"null");
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.0.string(v, false);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.string(v, true);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let w = self.0;
        w.byte(b'[');
        let mut first = true;
        loop {
            if !first {
                // Written before knowing whether an element follows: taken
                // back at the end.
                w.byte(b',');
            }
            if seq.next_element_seed(ValueSeed(w))?.is_none() {
                if !first && w.discard == 0 {
                    w.out.pop();
                }
                break;
            }
            first = false;
        }
        w.byte(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let w = self.0;
        let from = w.keys.len();
        let r = object(w, &mut map, from);
        w.end_object(from);
        r
    }
}

/// The rest of an object after `{` was read: a lone wrapper is rewritten
/// by the tree function, any other object written key by key.
fn object<'de, A: MapAccess<'de>>(
    w: &mut Writer<'_, 'de>,
    map: &mut A,
    from: usize,
) -> Result<(), A::Error> {
    let Some(Key(first, escaped)) = map.next_key_seed(KeySeed)? else {
        w.put(b"{}");
        return Ok(());
    };
    if is_wrapper_key(&first) {
        // Read whole (a string borrowed, anything else as a small tree):
        // what to write depends on whether another key follows.
        let value: First<'de> = map.next_value_seed(FirstSeed)?;
        let Some(Key(second, second_escaped)) = map.next_key_seed(KeySeed)? else {
            lone_wrapper(w, &first, value);
            return Ok(());
        };
        w.byte(b'{');
        w.string(&first, escaped);
        w.byte(b':');
        match value {
            First::Str(s) => w.string(s, false),
            First::Tree(v) => w.tree(&to_search_json(&v)),
        }
        w.key(from, first)?;
        w.byte(b',');
        w.string(&second, second_escaped);
        w.byte(b':');
        w.key(from, second)?;
        map.next_value_seed(ValueSeed(w))?;
    } else {
        w.byte(b'{');
        w.string(&first, escaped);
        w.byte(b':');
        w.key(from, first)?;
        map.next_value_seed(ValueSeed(w))?;
    }
    while let Some(Key(k, escaped)) = map.next_key_seed(KeySeed)? {
        w.byte(b',');
        w.string(&k, escaped);
        w.byte(b':');
        w.key(from, k)?;
        map.next_value_seed(ValueSeed(w))?;
    }
    w.byte(b'}');
    Ok(())
}

/// `{key: value}` alone in its object: what the tree function makes of it.
fn lone_wrapper(w: &mut Writer<'_, '_>, key: &str, value: First<'_>) {
    let value = match value {
        // The string itself (read without escapes: written as read).
        First::Str(s) if STRING_WRAPPERS.contains(&key) => return w.string(s, false),
        First::Str(s) => Value::String(s.to_string()),
        First::Tree(v) => v,
    };
    let mut m = Map::new();
    m.insert(key.to_string(), value);
    w.tree(&to_search_json(&Value::Object(m)));
}

/// The value of a `$` key: a string without escapes borrowed, anything
/// else as a tree (parsed by the same deserializer: the same checks).
enum First<'de> {
    Str(&'de str),
    Tree(Value),
}

struct FirstSeed;

impl<'de> DeserializeSeed<'de> for FirstSeed {
    type Value = First<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<First<'de>, D::Error> {
        d.deserialize_any(FirstVisitor)
    }
}

struct FirstVisitor;

impl<'de> Visitor<'de> for FirstVisitor {
    type Value = First<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<First<'de>, E> {
        Ok(First::Tree(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<First<'de>, E> {
        Ok(First::Tree(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<First<'de>, E> {
        Ok(First::Tree(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<First<'de>, E> {
        Ok(First::Tree(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<First<'de>, E> {
        Ok(First::Tree(Value::Null))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<First<'de>, E> {
        Ok(First::Str(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<First<'de>, E> {
        Ok(First::Tree(Value::String(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<First<'de>, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(First::Tree)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<First<'de>, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(First::Tree)
    }
}

/// The document: an object whose top level [`TopLevel`] shapes.
struct DocVisitor<'w, 'o, 'de, 't, 'p> {
    w: &'w mut Writer<'o, 'de>,
    top: &'t TopLevel<'p>,
}

impl<'de> Visitor<'de> for DocVisitor<'_, '_, 'de, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (w, top) = (self.w, self.top);
        w.byte(b'{');
        let mut written = 0usize;
        let mut names: Vec<Cow<'_, str>> = Vec::new();
        let mut wrapper_first = false;
        let mut n = 0usize;
        while let Some(Key(k, escaped)) = map.next_key_seed(KeySeed)? {
            n += 1;
            if n == 1 && is_wrapper_key(&k) {
                wrapper_first = true;
            }
            w.key(0, k.clone())?;
            if (top.skip)(&k) {
                w.discard += 1;
                let r = map.next_value_seed(ValueSeed(w));
                w.discard -= 1;
                r?;
                continue;
            }
            let (name, name_escaped): (Cow<'_, str>, bool) = match (top.rename)(&k) {
                Some(to) => (Cow::Owned(to.to_string()), true),
                None => (k, escaped),
            };
            if name == top.reserved || (top.renames && names.contains(&name)) {
                return Err(w.fallback());
            }
            if written > 0 {
                w.byte(b',');
            }
            w.string(&name, name_escaped);
            w.byte(b':');
            map.next_value_seed(ValueSeed(w))?;
            if top.renames {
                names.push(name);
            }
            written += 1;
        }
        if wrapper_first && n == 1 {
            // The whole document is one wrapper: the tree path refuses it.
            return Err(w.fallback());
        }
        if w.discard == 0 {
            if written > 0 {
                w.out.push(b',');
            }
            (top.append)(w.out);
        }
        w.byte(b'}');
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(self.w.fallback())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.w.fallback())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.w.fallback())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.w.fallback())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.w.fallback())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.w.fallback())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.w.fallback())
    }
}
