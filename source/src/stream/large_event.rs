//! Change events over MongoDB's 16 MB BSON limit.
//!
//! A change event carries `fullDocument` (with `updateLookup`) and
//! `updateDescription` side by side, so an update of a 10 MB document that
//! sets a 10 MB field makes a 20 MB event. The server cannot return it: the
//! cursor fails with `BSONObjectTooLarge` (code 10334), and a stream that
//! simply retries would fail on the same event forever.
//!
//! Two defences, both driven from [`super::changes`]:
//!
//! - **Split** (MongoDB 7.0+, 6.0.9+, [`split_supported`]): the stream ends
//!   with `$changeStreamSplitLargeEvent`; the server cuts such an event into
//!   fragments (`splitEvent: {fragment, of}`) that [`Fragments`] puts back
//!   together into one event. The writer's size check then sends it to the
//!   dead-letter topic as a pointer if it is over the Kafka limit. While an
//!   event is incomplete, the position that may be committed is the one
//!   before its first fragment ([`Fragments::resume_before`]), so a restart
//!   reads every fragment again.
//! - **Skip** (servers without the stage, or an event that cannot be split):
//!   on error 10334 the stream is reopened from the last committed token
//!   reading one event per batch ([`Mode::OneByOne`]), which commits every
//!   event before the large one and so places the position right before it
//!   when the error comes again; then it is reopened once more with a
//!   `$project` that drops the large fields ([`Mode::SkipOne`]), the one
//!   event read so becomes a dead-letter pointer ([`too_large_pointer`],
//!   reason `event_too_large`, naming the document key), and the stream goes
//!   on normally after it.

use crate::kafka::record::Record;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use shared::wire::event::ChangeEvent;
use shared::wire::source_dlq::{Reason, SourcePointer};

/// `BSONObjectTooLarge`: a change event over 16 MB.
pub const TOO_LARGE_CODE: i32 = 10334;
/// "Unrecognized pipeline stage name".
pub const UNKNOWN_STAGE_CODE: i32 = 40324;
/// The dead-letter reason of an event the server could not return.
pub const REASON: &str = "event_too_large"; // Reason::EventTooLarge

/// Whether a server of `version` (`buildInfo.version`, e.g. `7.0.2`)
/// supports `$changeStreamSplitLargeEvent`: 7.0 and later, and 6.0 from
/// 6.0.9 on.
pub fn split_supported(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    let patch = parts.next().flatten().unwrap_or(0);
    major > 6 || (major == 6 && minor == 0 && patch >= 9) || (major == 6 && minor > 0)
}

/// The stage that makes the server split large events; it must be last.
pub fn split_stage() -> Document {
    doc! { "$changeStreamSplitLargeEvent": {} }
}

/// The stage that drops the fields that make an event large.
pub fn drop_large_fields_stage() -> Document {
    doc! { "$project": {
        "fullDocument": 0,
        "updateDescription": 0,
        "fullDocumentBeforeChange": 0,
    } }
}

fn command_error(e: &mongodb::error::Error) -> Option<&mongodb::error::CommandError> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c),
        _ => None,
    }
}

/// Whether `e` says a change event was over the BSON size limit.
pub fn is_too_large(e: &mongodb::error::Error) -> bool {
    command_error(e)
        .is_some_and(|c| c.code == TOO_LARGE_CODE || c.code_name == "BSONObjectTooLarge")
}

/// Whether `e` says the server does not know `$changeStreamSplitLargeEvent`.
pub fn is_split_unsupported(e: &mongodb::error::Error) -> bool {
    command_error(e).is_some_and(|c| {
        (c.code == UNKNOWN_STAGE_CODE || c.message.contains("Unrecognized pipeline stage"))
            && c.message.contains("$changeStreamSplitLargeEvent")
    })
}

/// How the stream is read with respect to large events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Normal batches.
    Normal,
    /// One event per batch, after a 10334: every event before the large
    /// one is committed on its own.
    OneByOne,
    /// The position is right before the large event: read it without its
    /// large fields and dead-letter it.
    SkipOne,
}

impl Mode {
    /// The mode after the cursor failed with 10334 in this mode.
    pub fn after_too_large(self) -> Self {
        match self {
            Self::Normal => Self::OneByOne,
            Self::OneByOne | Self::SkipOne => Self::SkipOne,
        }
    }

    /// Events to read in this mode before going back to normal: in
    /// `OneByOne`, one cursor batch's worth (`max_events`), since the large
    /// event was in the batch that failed; if the error did not come back
    /// by then, it was something else.
    pub fn event_budget(self, max_events: usize) -> Option<usize> {
        match self {
            Self::Normal => None,
            Self::OneByOne => Some(max_events.saturating_add(1)),
            Self::SkipOne => Some(1),
        }
    }
}

/// An event whose fragments are being put back together.
struct Partial {
    event: Document,
    next: i32,
    of: i32,
}

/// Reassembles events split by `$changeStreamSplitLargeEvent`.
#[derive(Default)]
pub struct Fragments {
    partial: Option<Partial>,
    /// The resume token (Extended JSON) before the first fragment of the
    /// event being reassembled: the only safe position while it is
    /// incomplete.
    pub resume_before: Option<serde_json::Value>,
}

impl Fragments {
    /// Whether an event is incomplete.
    pub fn pending(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes one change-stream document. Returns the whole event when
    /// `ev` is not a fragment or is the last one, `None` while fragments
    /// are missing. `before` is the resume token before `ev` (kept when
    /// `ev` is a first fragment). Fragments out of sequence are an error
    /// (the caller reopens from its committed position, before the first
    /// fragment).
    pub fn push(
        &mut self,
        mut ev: Document,
        before: impl FnOnce() -> Option<serde_json::Value>,
    ) -> Result<Option<Document>, String> {
        let Some(split) = ev.remove("splitEvent") else {
            if self.partial.take().is_some() {
                return Err(
                    "a change event arrived before the last fragment of a split one".into(),
                );
            }
            return Ok(Some(ev));
        };
        let (fragment, of) = match &split {
            Bson::Document(s) => (int(s.get("fragment")), int(s.get("of"))),
            _ => (None, None),
        };
        let (Some(fragment), Some(of)) = (fragment, of) else {
            self.partial = None;
            return Err(format!("malformed splitEvent {split}"));
        };
        if fragment == 1 {
            if self.partial.take().is_some() {
                return Err("a split change event restarted before its last fragment".into());
            }
            if of == 1 {
                return Ok(Some(ev));
            }
            self.resume_before = before();
            self.partial = Some(Partial {
                event: ev,
                next: 2,
                of,
            });
            return Ok(None);
        }
        let Some(mut p) = self.partial.take() else {
            return Err(format!(
                "fragment {fragment} of {of} of a split change event without its first"
            ));
        };
        if p.next != fragment || p.of != of {
            return Err(format!(
                "fragment {fragment} of {of} where fragment {} of {} was expected",
                p.next, p.of
            ));
        }
        for (k, v) in ev {
            // Each fragment has its own `_id`: the last one's resumes after
            // the whole event.
            if k == "_id" || !p.event.contains_key(&k) {
                p.event.insert(k, v);
            }
        }
        if fragment == of {
            return Ok(Some(p.event));
        }
        p.next += 1;
        self.partial = Some(p);
        Ok(None)
    }
}

fn int(b: Option<&Bson>) -> Option<i32> {
    match b? {
        Bson::Int32(n) => Some(*n),
        Bson::Int64(n) => i32::try_from(*n).ok(),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i32),
        _ => None,
    }
}

/// The dead-letter pointer of `ev` (decoded without its large fields),
/// which the server could not return.
pub fn too_large_pointer(
    dlq_topic: &str,
    event_topic: &str,
    key: &str,
    ev: &ChangeEvent,
    split: bool,
) -> Record {
    let why = if split {
        "the server could not split it"
    } else {
        "the server does not split events ($changeStreamSplitLargeEvent needs MongoDB 7.0 or 6.0.9)"
    };
    let message = format!(
        "change event for key {key} is over MongoDB's 16 MB BSON limit \
         (BSONObjectTooLarge, code {TOO_LARGE_CODE}) and {why}; \
         fullDocument and updateDescription dropped; re-read the document from MongoDB"
    );
    let p = SourcePointer::new(Reason::EventTooLarge, message, event_topic, &ev.ns)
        .of_event(Some(key), ev);
    Record::pointer(dlq_topic, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{decode, Decoded};
    use mongodb::bson::Timestamp;
    use serde_json::json;
    use shared::wire::event::Namespace;

    #[test]
    fn split_support_by_version() {
        for v in [
            "7.0.0",
            "7.0.2",
            "8.2.11",
            "6.0.9",
            "6.0.15",
            "6.3.1",
            "10.0.0-rc1",
        ] {
            assert!(split_supported(v), "{v}");
        }
        for v in ["6.0.8", "6.0.0", "5.0.26", "4.4.29", "", "garbage", "6"] {
            assert!(!split_supported(v), "{v}");
        }
    }

    fn fragment(token: &str, k: i32, of: i32, fields: Document) -> Document {
        let mut d = doc! { "_id": { "_data": token }, "splitEvent": { "fragment": k, "of": of } };
        d.extend(fields);
        d
    }

    fn ts() -> Timestamp {
        Timestamp {
            time: 1_700_000_000,
            increment: 3,
        }
    }

    #[test]
    fn fragments_are_put_back_together_with_the_last_token() {
        let mut f = Fragments::default();
        let meta = doc! {
            "operationType": "update", "clusterTime": ts(),
            "ns": { "db": "mountain", "coll": "card" }, "documentKey": { "_id": "big" },
        };
        let first = f
            .push(fragment("t1", 1, 3, meta), || Some(json!({"_data": "t0"})))
            .unwrap();
        assert!(first.is_none() && f.pending());
        assert_eq!(f.resume_before, Some(json!({"_data": "t0"})));
        let second = f
            .push(
                fragment(
                    "t2",
                    2,
                    3,
                    doc! { "fullDocument": { "_id": "big", "a": "x" } },
                ),
                || panic!("only asked for a first fragment"),
            )
            .unwrap();
        assert!(second.is_none());
        let whole = f
            .push(
                fragment(
                    "t3",
                    3,
                    3,
                    doc! { "updateDescription": { "updatedFields": { "a": "x" }, "removedFields": [] } },
                ),
                || None,
            )
            .unwrap()
            .expect("complete");
        assert!(!f.pending());
        assert_eq!(whole.get_document("_id").unwrap(), &doc! { "_data": "t3" });
        assert!(!whole.contains_key("splitEvent"));
        let ns = Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        };
        let Decoded::Change { key, event } = decode(&whole, &ns).unwrap() else {
            panic!("{whole}")
        };
        assert_eq!(key, r#""big""#);
        assert_eq!(event.doc.unwrap()["a"], "x");
        assert_eq!(event.update.unwrap().updated_fields["a"], "x");
    }

    #[test]
    fn whole_events_pass_and_single_fragments_are_whole() {
        let mut f = Fragments::default();
        let plain = doc! { "_id": { "_data": "t" }, "operationType": "insert" };
        assert_eq!(f.push(plain.clone(), || None).unwrap(), Some(plain));
        // SecantusDB marks every event `fragment 1 of 1` once the stage is there.
        let one = f
            .push(
                fragment("t", 1, 1, doc! { "operationType": "insert" }),
                || panic!("not kept"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(one.get_str("operationType").unwrap(), "insert");
        assert!(!one.contains_key("splitEvent") && !f.pending());
    }

    #[test]
    fn fragments_out_of_sequence_are_refused() {
        let mut f = Fragments::default();
        assert!(f.push(fragment("t2", 2, 3, doc! {}), || None).is_err());
        f.push(fragment("t1", 1, 3, doc! {}), || None).unwrap();
        assert!(f.push(fragment("t3", 3, 3, doc! {}), || None).is_err());
        assert!(!f.pending(), "the partial event is dropped");
        f.push(fragment("t1", 1, 2, doc! {}), || None).unwrap();
        let plain = doc! { "_id": { "_data": "t" }, "operationType": "insert" };
        assert!(f.push(plain, || None).is_err());
        let bad = doc! { "_id": 1, "splitEvent": "x" };
        assert!(f.push(bad, || None).is_err());
    }

    fn command_error(code: i32, name: &str, msg: &str) -> mongodb::error::Error {
        let c: mongodb::error::CommandError = mongodb::bson::from_document(doc! {
            "code": code, "codeName": name, "errmsg": msg,
        })
        .unwrap();
        mongodb::error::Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn server_errors_are_recognised() {
        let too_large = command_error(
            10334,
            "BSONObjectTooLarge",
            "Executor error during getMore :: caused by :: BSONObj size: 20971800 (0x1400118) is invalid. Size must be between 0 and 16793600(16MB)",
        );
        assert!(is_too_large(&too_large) && !is_split_unsupported(&too_large));
        let unknown = command_error(
            40324,
            "Location40324",
            "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'",
        );
        assert!(is_split_unsupported(&unknown) && !is_too_large(&unknown));
        let other_stage = command_error(
            40324,
            "Location40324",
            "Unrecognized pipeline stage name: '$foo'",
        );
        assert!(!is_split_unsupported(&other_stage));
        let lost = command_error(286, "ChangeStreamHistoryLost", "gone");
        assert!(!is_too_large(&lost) && !is_split_unsupported(&lost));
    }

    #[test]
    fn the_modes_narrow_down_to_the_large_event_then_return() {
        let m = Mode::Normal.after_too_large();
        assert_eq!(m, Mode::OneByOne);
        assert_eq!(m.event_budget(1000), Some(1001));
        let m = m.after_too_large();
        assert_eq!(m, Mode::SkipOne);
        assert_eq!(m.event_budget(1000), Some(1));
        assert_eq!(Mode::Normal.event_budget(1000), None);
    }

    #[test]
    fn pointer_names_the_key_and_the_reason() {
        let raw = doc! {
            "_id": { "_data": "t" }, "operationType": "update", "clusterTime": ts(),
            "ns": { "db": "mountain", "coll": "card" }, "documentKey": { "_id": "big" },
        };
        let ns = Namespace {
            db: "mountain".into(),
            coll: "card".into(),
        };
        let Decoded::Change { key, event } = decode(&raw, &ns).unwrap() else {
            panic!()
        };
        let r = too_large_pointer("live.dlq", "live.mountain.card", &key, &event, false);
        assert_eq!(r.topic, "live.dlq");
        assert_eq!(r.key.as_deref(), Some(r#""big""#));
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(v["reason"], REASON);
        assert_eq!(v["key"], r#""big""#);
        assert_eq!(v["op"], "update");
        assert!(v["message"].as_str().unwrap().contains("10334"), "{v}");
        assert!(r.headers.contains(&("reason", REASON.into())));
    }
}
