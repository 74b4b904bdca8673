//! Reading a bulk answer without building a tree when nothing failed: the
//! common case, an answer (`filter_path` of [`super::service::FILTER_PATH`])
//! like `{"errors":false,"items":[{"index":{"result":"created","status":201}},..]}`.
//!
//! [`all_applied`] says yes only for an answer that says `errors: false`
//! *and* whose every item is one the tree classification
//! ([`super::retry::classify_item`]) calls a success: one operation, a
//! `status` in 200..=299, or a `delete` answered 404 `not_found`, and no
//! `error`. Anything else (a failure, a shape it does not know, a count
//! that does not match) goes to the tree classification, so an unknown
//! answer is never taken for success.
//!
//! Delivery guarantee: none needed, a pure function.

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Whether `body` answers `n` items all applied (see the module
/// documentation).
pub fn all_applied(body: &[u8], n: usize) -> bool {
    let mut de = serde_json::Deserializer::from_slice(body);
    matches!((&mut de).deserialize_map(Answer), Ok(Some(count)) if count == n) && de.end().is_ok()
}

/// The answer: `Some(items)` when `errors` is false and every item applied.
struct Answer;

impl<'de> Visitor<'de> for Answer {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bulk answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<usize>, A::Error> {
        let (mut errors, mut items) = (None, None);
        while let Some(k) = map.next_key::<&str>()? {
            match k {
                "errors" => errors = Some(map.next_value::<bool>()?),
                "items" => items = map.next_value_seed(Items)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match (errors, items) {
            (Some(false), Some(n)) => Some(n),
            _ => None,
        })
    }
}

/// The `items` array: `Some(count)` when every item applied.
struct Items;

impl<'de> de::DeserializeSeed<'de> for Items {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bulk items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<usize>, A::Error> {
        let (mut n, mut all) = (0usize, true);
        while let Some(ok) = seq.next_element_seed(ItemSeed)? {
            n += 1;
            all &= ok;
        }
        Ok(all.then_some(n))
    }
}

/// One item `{"<op>": {"status": .., ...}}`: whether it applied.
struct ItemSeed;

impl<'de> de::DeserializeSeed<'de> for ItemSeed {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bulk item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut ops = 0;
        let mut ok = true;
        while let Some(op) = map.next_key::<&str>()? {
            ops += 1;
            let r: Outcome = map.next_value()?;
            ok &= match r.status {
                Some(200..=299) => !r.error,
                Some(404) => op == "delete" && r.not_found && !r.error,
                _ => false,
            };
        }
        Ok(ok && ops == 1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// What of one item's answer matters here.
#[derive(Default)]
struct Outcome {
    status: Option<u64>,
    error: bool,
    not_found: bool,
}

impl<'de> de::Deserialize<'de> for Outcome {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Outcome;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an item's answer")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outcome, A::Error> {
                let mut o = Outcome::default();
                while let Some(k) = map.next_key::<&str>()? {
                    match k {
                        // Not a number (or `result` not a plain string): an
                        // error here, and the tree classification decides.
                        "status" => o.status = Some(map.next_value::<u64>()?),
                        "error" => {
                            map.next_value::<IgnoredAny>()?;
                            o.error = true;
                        }
                        "result" => o.not_found = map.next_value::<&str>()? == "not_found",
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(o)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outcome, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Outcome::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Outcome, E> {
                Ok(Outcome::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_failures_is_read_without_a_tree() {
        let ok = br#"{"errors":false,"items":[{"index":{"result":"created","status":201}},{"index":{"status":200,"result":"updated"}},{"delete":{"result":"not_found","status":404}},{"delete":{"status":200}}]}"#;
        assert!(all_applied(ok, 4));
        assert!(!all_applied(ok, 3), "a count that does not match");
        // Unfiltered answers (the whole item) read the same.
        let full = br#"{"took":3,"errors":false,"items":[{"index":{"_index":"c","_id":"1","_version":5,"result":"created","_shards":{"total":1},"_seq_no":0,"status":201}}]}"#;
        assert!(all_applied(full, 1));
    }

    #[test]
    fn anything_else_goes_to_the_tree_classification() {
        for (body, n) in [
            (
                &br#"{"errors":true,"items":[{"index":{"status":201}}]}"#[..],
                1,
            ),
            (br#"{"items":[{"index":{"status":201}}]}"#, 1),
            (br#"{"errors":false}"#, 0),
            (
                br#"{"errors":false,"items":[{"index":{"status":409,"error":{"type":"x"}}}]}"#,
                1,
            ),
            (
                br#"{"errors":false,"items":[{"index":{"status":201,"error":{"type":"x"}}}]}"#,
                1,
            ),
            (
                br#"{"errors":false,"items":[{"index":{"status":404,"result":"not_found"}}]}"#,
                1,
            ),
            (
                br#"{"errors":false,"items":[{"delete":{"status":404}}]}"#,
                1,
            ),
            (br#"{"errors":false,"items":[{"index":{}}]}"#, 1),
            (
                br#"{"errors":false,"items":[{"index":{"status":"201"}}]}"#,
                1,
            ),
            (
                br#"{"errors":false,"items":[{"index":{"status":201},"delete":{"status":200}}]}"#,
                1,
            ),
            (br#"{"errors":false,"items":[{}]}"#, 1),
            (br#"{"errors":false,"items":[3]}"#, 1),
            (br#"{"errors":false,"items":{}}"#, 0),
            (br#"{"errors":false,"items":[{"index":{"status":201}}]"#, 1),
            (
                br#"{"errors":false,"items":[{"index":{"status":201}}]} x"#,
                1,
            ),
            (b"", 0),
            (b"[]", 0),
        ] {
            assert!(!all_applied(body, n), "{}", String::from_utf8_lossy(body));
        }
    }
}
