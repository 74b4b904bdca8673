//! Replies rolled up into their card (`[rollup]`, optional): each parent
//! document (a card) carries the number of its children (replies), the
//! time of the latest and the text of the latest few, equal to MongoDB at
//! quiescence.
//!
//! **Recomputed, never incremented.** A roll-up is always computed from the
//! children the index holds (one search for many parents,
//! [`compute::query`]), never adjusted by one: a replay from any offset,
//! reordered or repeated deliveries, deleted or moved replies, a card
//! deleted and recreated, a crash at any point and a reindex all end with
//! the right numbers, because the next computation sees the children as
//! they are.
//!
//! When it is computed:
//! - after every bulk request of children: for the parents they point at
//!   now and the parents they pointed at before (read from the index before
//!   the request: a reply moved to another card, or deleted). Children are
//!   written with `refresh=wait_for`, so the count sees them. Their offsets
//!   are done only once the roll-up is written: a crash in between computes
//!   it again on redelivery;
//! - after a parent is written that had no roll-up yet (a new card, a card
//!   recreated, an index built by `reindex`), and after a snapshot copy of
//!   a parent (a re-snapshot, `verify --repair`);
//! - after a parent change found the index already at its version (a
//!   redelivery after a crash that may have come between the parent's
//!   write and its roll-up's; a no-op when the roll-up holds);
//! - for the parents flagged pending, when a request of children looks
//!   redelivered. A deleted child, or one moved to another parent, leaves
//!   nothing in the children's index that names the parent it left; so
//!   before such a request the parents left are flagged
//!   (`_sync.rollup_pending`, [`store::flag_pending`]), the flag is
//!   cleared by the next roll-up written onto the parent (and carried over
//!   by the parent's own writes until then), and a request that looks
//!   redelivered (a delete of a child the index no longer holds, a child
//!   already at the change's version) also recomputes every flagged parent
//!   ([`store::pending`]). A crash between the children's request and the
//!   roll-up thus never leaves a parent counting a child it lost.
//!
//! **Versions stay right.** A parent's own changes keep their order by the
//! version of the change (`_sync.version`, compared before writing), and
//! a write of a parent that exists is a compare-and-set on its sequence
//! number that carries its current roll-up over ([`store`]): a roll-up
//! never brings back an older card body, and a card update never resets
//! the roll-up. Roll-up writes are compare-and-sets too. A delete of a
//! parent stays an external-versioned delete (its tombstone keeps older
//! changes out).
//!
//! Children point at their parent by its Elasticsearch id, kept in
//! `_sync.parent` (exact whatever the type of the parent's `_id`).

pub mod compute;
pub mod config;
pub mod store;

use crate::action::{render_id, Action, SYNC_FIELD};
use crate::config::SyncConfig;
use crate::event::{RawEvent, SourceEvent};
pub use config::RollupConfig;
use serde_json::Value;
use shared::wire::event::{Operation, UpdateDescription};

/// What a queued change means for the roll-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Hint {
    /// Nothing.
    #[default]
    Plain,
    /// A child, pointing at this parent now (its Elasticsearch id) when known.
    Child(Option<String>),
    /// A snapshot copy of a parent (recomputed after it is written).
    ParentSnapshot,
}

/// Marks `action` (of `ev`, of a topic with `role`) for the roll-up: a
/// child's parent goes into its `_sync.parent`; a parent's snapshot copy
/// is noted.
pub fn annotate(plan: &Plan, role: Role, ev: &SourceEvent, action: &mut Action) -> Hint {
    let field = &plan.cfg.parent_field;
    let in_doc = ev.doc.as_ref().map(|d| d.get(field).cloned());
    annotate_with(plan, role, ev.op, in_doc, ev.update.as_ref(), action)
}

/// [`annotate`] for a [`RawEvent`] of a record with value `payload` (a
/// child's document text is read once more, for its parent field only).
pub fn annotate_raw(
    plan: &Plan,
    role: Role,
    ev: &RawEvent,
    payload: &[u8],
    action: &mut Action,
) -> Hint {
    let in_doc = match role {
        Role::Child => ev
            .doc_text(payload)
            .map(|t| crate::event::raw::field_of(t, &plan.cfg.parent_field)),
        Role::Parent => None,
    };
    annotate_with(plan, role, ev.op, in_doc, ev.update.as_ref(), action)
}

/// The common part: `in_doc` is the parent field of the event's document
/// (`Some(None)`: a document without it; `None`: no document).
fn annotate_with(
    plan: &Plan,
    role: Role,
    op: Operation,
    in_doc: Option<Option<Value>>,
    update: Option<&UpdateDescription>,
    action: &mut Action,
) -> Hint {
    match role {
        Role::Parent if op == Operation::Snapshot => Hint::ParentSnapshot,
        Role::Parent => Hint::Plain,
        Role::Child => {
            let field = &plan.cfg.parent_field;
            let parent = in_doc
                .flatten()
                .or_else(|| update.and_then(|u| u.updated_fields.get(field).cloned()))
                .filter(|v| !v.is_null())
                .map(|v| render_id(&v));
            match action {
                Action::IndexDoc { body, .. } => {
                    if let Some(p) = &parent {
                        body.sync.parent = Some(p.clone());
                    }
                }
                Action::Index { source, .. } => set_parent(source.get_mut(SYNC_FIELD), &parent),
                Action::Patch(p) => set_parent(Some(&mut p.sync), &parent),
                _ => {}
            }
            Hint::Child(parent)
        }
    }
}

fn set_parent(sync: Option<&mut Value>, parent: &Option<String>) {
    if let (Some(Value::Object(sync)), Some(parent)) = (sync, parent) {
        sync.insert(
            compute::PARENT_SYNC_FIELD.to_string(),
            Value::String(parent.clone()),
        );
    }
}

/// What a topic is in the roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its documents receive the roll-up (cards).
    Parent,
    /// Its documents are counted (replies).
    Child,
}

/// The roll-up as es-sync runs it: the configuration and the indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `[rollup]`.
    pub cfg: RollupConfig,
    /// Where the parents are written.
    pub parent_index: String,
    /// Where the children are searched.
    pub child_index: String,
}

impl Plan {
    /// The plan of `cfg`, if it has a `[rollup]` (checked by `validate`).
    pub fn of(cfg: &SyncConfig) -> Option<Self> {
        let r = cfg.rollup.clone()?;
        let alias = |topic: &str| cfg.route(topic).map(|t| t.alias.clone());
        Some(Self {
            parent_index: r.parent_index.clone().or_else(|| alias(&r.parent_topic))?,
            child_index: r.child_index.clone().or_else(|| alias(&r.child_topic))?,
            cfg: r,
        })
    }

    /// The role of `topic`.
    pub fn role(&self, topic: &str) -> Option<Role> {
        if topic == self.cfg.parent_topic {
            Some(Role::Parent)
        } else if topic == self.cfg.child_topic {
            Some(Role::Child)
        } else {
            None
        }
    }
}
