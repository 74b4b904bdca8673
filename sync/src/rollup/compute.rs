//! The pure part of a roll-up: the search that computes it from the
//! children, reading its answer, and the parent's fields.

use super::config::RollupConfig;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};

/// The field of a child holding its parent's Elasticsearch id (in `_sync`,
/// so it is exact whatever the type of the parent's `_id`).
pub const PARENT_SYNC_FIELD: &str = "parent";

/// The roll-up of one parent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rollup {
    /// Children.
    pub count: u64,
    /// Time of the latest child (as the index formats it), if any.
    pub last: Option<Value>,
    /// Text of the latest children, newest first.
    pub latest: Vec<Value>,
}

impl Rollup {
    /// Reads the roll-up fields of a parent's source (absent: empty).
    pub fn read(cfg: &RollupConfig, source: &Map<String, Value>) -> Self {
        Self {
            count: source
                .get(&cfg.count_field)
                .and_then(Value::as_u64)
                .unwrap_or(0),
            last: source
                .get(&cfg.last_field)
                .filter(|v| !v.is_null())
                .cloned(),
            latest: match source.get(&cfg.latest_field) {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// Writes the roll-up fields into a parent's source.
    pub fn apply(&self, cfg: &RollupConfig, source: &mut Map<String, Value>) {
        source.insert(cfg.count_field.clone(), json!(self.count));
        match &self.last {
            Some(t) => source.insert(cfg.last_field.clone(), t.clone()),
            None => source.remove(&cfg.last_field),
        };
        if cfg.latest > 0 {
            source.insert(cfg.latest_field.clone(), Value::Array(self.latest.clone()));
        }
    }

    /// Whether `source` already holds this roll-up.
    pub fn held_by(&self, cfg: &RollupConfig, source: &Map<String, Value>) -> bool {
        source.contains_key(&cfg.count_field) && Self::read(cfg, source) == *self
    }
}

/// The search (on the children) that computes the roll-ups of `parents`
/// (Elasticsearch ids): a count, the latest time and the latest texts per
/// parent, in one request.
pub fn query(cfg: &RollupConfig, parents: &BTreeSet<String>) -> Value {
    let key = format!("_sync.{PARENT_SYNC_FIELD}");
    let mut by = json!({
        "terms": {"field": key, "size": parents.len().max(1)},
        "aggs": {"last": {"max": {"field": cfg.time_field}}}
    });
    if cfg.latest > 0 {
        by["aggs"]["latest"] = json!({"top_hits": {
            "size": cfg.latest,
            "sort": [{cfg.time_field.as_str(): {"order": "desc", "unmapped_type": "date"}}],
            "_source": {"includes": [cfg.text_field]}
        }});
    }
    json!({
        "size": 0,
        "track_total_hits": false,
        "query": {"terms": {key: parents.iter().collect::<Vec<_>>()}},
        "aggs": {"by_parent": by}
    })
}

/// Reads the answer of [`query`]: every parent asked gets its roll-up (an
/// empty one when it has no child).
pub fn parse(
    cfg: &RollupConfig,
    parents: &BTreeSet<String>,
    answer: &Value,
) -> Result<HashMap<String, Rollup>, String> {
    let buckets = answer["aggregations"]["by_parent"]["buckets"]
        .as_array()
        .ok_or_else(|| format!("roll-up search answered without buckets: {answer}"))?;
    let mut out: HashMap<String, Rollup> = parents
        .iter()
        .map(|p| (p.clone(), Rollup::default()))
        .collect();
    for b in buckets {
        let Some(key) = b["key"].as_str() else {
            continue;
        };
        let last = match (&b["last"]["value_as_string"], &b["last"]["value"]) {
            (Value::String(s), _) => Some(Value::String(s.clone())),
            (_, Value::Number(n)) => Some(Value::Number(n.clone())),
            _ => None,
        };
        let latest = b["latest"]["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| h["_source"].get(&cfg.text_field).cloned())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            key.to_string(),
            Rollup {
                count: b["doc_count"].as_u64().unwrap_or(0),
                last,
                latest,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RollupConfig {
        toml::from_str("parent_topic = \"c\"\nchild_topic = \"r\"").unwrap()
    }

    #[test]
    fn query_counts_dates_and_keeps_the_latest_texts() {
        let parents: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let q = query(&cfg(), &parents);
        assert_eq!(q["query"]["terms"]["_sync.parent"], json!(["a", "b"]));
        assert_eq!(q["aggs"]["by_parent"]["terms"]["size"], 2);
        assert_eq!(
            q["aggs"]["by_parent"]["aggs"]["last"]["max"]["field"],
            "created_at"
        );
        assert_eq!(
            q["aggs"]["by_parent"]["aggs"]["latest"]["top_hits"]["size"],
            3
        );
    }

    #[test]
    fn an_answer_gives_every_parent_its_rollup() {
        // The shape Elasticsearch 7.10 answers.
        let answer = json!({"aggregations": {"by_parent": {"buckets": [
            {"key": "a", "doc_count": 2,
             "last": {"value": 1.7e12, "value_as_string": "2023-11-14T22:13:20.000Z"},
             "latest": {"hits": {"hits": [
                {"_source": {"body": "둘째"}}, {"_source": {"body": "첫째"}}]}}}
        ]}}});
        let parents: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let r = parse(&cfg(), &parents, &answer).unwrap();
        assert_eq!(
            r["a"],
            Rollup {
                count: 2,
                last: Some(json!("2023-11-14T22:13:20.000Z")),
                latest: vec![json!("둘째"), json!("첫째")]
            }
        );
        assert_eq!(r["b"], Rollup::default(), "no child: zero, no time");
        assert!(parse(&cfg(), &parents, &json!({"error": "x"})).is_err());
    }

    #[test]
    fn fields_round_trip_through_a_parent_source() {
        let c = cfg();
        let r = Rollup {
            count: 4,
            last: Some(json!("2024-01-01T00:00:00.000Z")),
            latest: vec![json!("x")],
        };
        let mut source = Map::new();
        source.insert("title".into(), json!("t"));
        assert!(!r.held_by(&c, &source));
        r.apply(&c, &mut source);
        assert_eq!(source["reply_count"], 4);
        assert!(r.held_by(&c, &source));
        assert_eq!(Rollup::read(&c, &source), r);
        Rollup::default().apply(&c, &mut source);
        assert_eq!(source["reply_count"], 0);
        assert!(source.get("last_reply_at").is_none());
    }
}
