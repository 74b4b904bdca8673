//! The roll-up as MongoDB says it should be, for `verify`: per parent, the
//! number of its children, the latest child time and the latest texts,
//! computed with one aggregation on the children's collection.

use crate::action::render_id;
use crate::rollup::compute::Rollup;
use crate::rollup::RollupConfig;
use futures::TryStreamExt as _;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{Map, Value};
use shared::ejson::{bson_to_json, to_search_json};
use std::collections::HashMap;

/// The children's collection and the roll-up's fields.
pub struct RollupCheck {
    /// `[rollup]`.
    pub cfg: RollupConfig,
    /// The children (replies).
    pub children: mongodb::Collection<Document>,
}

impl RollupCheck {
    /// The roll-up of each parent `_id` of `ids`, by the parent's
    /// Elasticsearch id (parents without children get an empty one).
    pub async fn expected(&self, ids: &[Bson]) -> anyhow::Result<HashMap<String, Rollup>> {
        let field = &self.cfg.parent_field;
        let time = format!("${}", self.cfg.time_field);
        let pipeline = vec![
            doc! { "$match": { field.as_str(): { "$in": ids.to_vec() } } },
            doc! { "$sort": { self.cfg.time_field.as_str(): -1 } },
            doc! { "$group": {
                "_id": format!("${field}"),
                "count": { "$sum": 1 },
                "last": { "$max": time },
                "latest": { "$push": format!("${}", self.cfg.text_field) },
            }},
        ];
        let groups: Vec<Document> = self
            .children
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        let mut out: HashMap<String, Rollup> = ids
            .iter()
            .map(|id| (render_id(&bson_to_json(id)), Rollup::default()))
            .collect();
        for g in groups {
            let Some(id) = g.get("_id") else { continue };
            let count = match g.get("count") {
                Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            };
            let last = g
                .get("last")
                .filter(|b| !matches!(b, Bson::Null))
                .map(|b| to_search_json(&bson_to_json(b)));
            let latest = match g.get("latest") {
                Some(Bson::Array(a)) => a
                    .iter()
                    .take(self.cfg.latest)
                    .map(|b| to_search_json(&bson_to_json(b)))
                    .collect(),
                _ => Vec::new(),
            };
            out.insert(
                render_id(&bson_to_json(id)),
                Rollup {
                    count,
                    last,
                    latest,
                },
            );
        }
        Ok(out)
    }

    /// Whether the indexed parent holds `expected` (its body without the
    /// roll-up) and the roll-up `r`. The latest texts are compared as a
    /// set: children with the same time come in either order.
    pub fn holds(&self, expected: &Map<String, Value>, r: &Rollup, indexed: &Value) -> bool {
        let Some(obj) = indexed.as_object() else {
            return false;
        };
        let mut copy = obj.clone();
        copy.remove(crate::config::SYNC_FIELD);
        let got_latest = copy.remove(&self.cfg.latest_field);
        let mut want = expected.clone();
        let mut sorted = r.clone();
        sorted.latest.clear();
        sorted.apply(&self.cfg, &mut want);
        want.remove(&self.cfg.latest_field);
        if copy != want {
            return false;
        }
        if self.cfg.latest == 0 {
            return true;
        }
        let mut a: Vec<String> = match got_latest {
            Some(Value::Array(v)) => v.iter().map(Value::to_string).collect(),
            _ => Vec::new(),
        };
        let mut b: Vec<String> = r.latest.iter().map(Value::to_string).collect();
        a.sort();
        b.sort();
        a == b
    }
}
