//! Reading and writing roll-ups in Elasticsearch: the parents as they are
//! (with their sequence numbers), the recomputation, and the writes of a
//! parent's own changes that keep its roll-up.
//!
//! Every write of a parent that exists is a compare-and-set on its
//! sequence number (`if_seq_no`, `if_primary_term`): a roll-up computed on
//! a parent read before another writer changed it is refused (409) and
//! computed again. The parent is read *before* the children are counted,
//! so a count is never older than the parent it is written onto.

use super::compute::{self, Rollup};
use super::Plan;
use crate::elastic::{self, shorten, EsError};
use crate::metrics::RequestLabels;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};

/// Rounds of compare-and-set before giving up (the caller retries later).
const MAX_ROUNDS: usize = 20;

/// A parent as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Sequence number and primary term, for a compare-and-set.
    pub seq_no: i64,
    /// Primary term.
    pub primary_term: i64,
    /// The version of the change it holds (`_sync.version`).
    pub version: u64,
    /// Its source.
    pub source: Map<String, Value>,
}

/// The roll-up's own requests, counted by kind
/// (`es_sync_rollup_requests_total`).
pub type Requests = Family<RequestLabels, Counter>;

/// One more request of `kind`.
fn count(requests: &Requests, kind: &str) {
    requests
        .get_or_create(&RequestLabels {
            request: kind.to_string(),
        })
        .inc();
}

/// Reads `ids` from `index` (realtime): `None` for those not there.
/// Counted as a request of `kind`.
pub async fn fetch(
    es: &Elasticsearch,
    index: &str,
    ids: &BTreeSet<String>,
    requests: &Requests,
    kind: &str,
) -> Result<HashMap<String, Option<Stored>>, EsError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    count(requests, kind);
    let body = json!({"docs": ids.iter().map(|id| json!({"_index": index, "_id": id})).collect::<Vec<_>>()});
    let out = elastic::call_ok(es, Method::Post, "/_mget?realtime=true", Some(&body)).await?;
    let docs = out["docs"].as_array().ok_or_else(|| bad("_mget", &out))?;
    let mut map = HashMap::new();
    for d in docs {
        if let Some(e) = d.get("error") {
            return Err(bad("_mget", e));
        }
        let id = d["_id"].as_str().unwrap_or_default().to_string();
        let stored = match (d["found"].as_bool(), &d["_source"]) {
            (Some(true), Value::Object(source)) => Some(Stored {
                seq_no: d["_seq_no"].as_i64().unwrap_or(-1),
                primary_term: d["_primary_term"].as_i64().unwrap_or(0),
                version: source["_sync"]["version"]
                    .as_u64()
                    .or_else(|| d["_version"].as_u64())
                    .unwrap_or(0),
                source: source.clone(),
            }),
            _ => None,
        };
        map.insert(id, stored);
    }
    Ok(map)
}

fn bad(what: &str, v: &Value) -> EsError {
    EsError::Status {
        what: what.into(),
        status: 200,
        body: shorten(format!("unexpected answer: {v}"), 2000),
    }
}

/// The parents the children `ids` of the child index point at now.
pub async fn parents_of(
    es: &Elasticsearch,
    plan: &Plan,
    ids: &BTreeSet<String>,
    requests: &Requests,
) -> Result<BTreeSet<String>, EsError> {
    Ok(fetch(es, &plan.child_index, ids, requests, "read_children")
        .await?
        .into_values()
        .flatten()
        .filter_map(|c| {
            c.source["_sync"][compute::PARENT_SYNC_FIELD]
                .as_str()
                .map(str::to_string)
        })
        .collect())
}

/// The NDJSON lines of a compare-and-set write of `source`.
pub fn cas_lines(index: &str, id: &str, s: &Stored, source: &Map<String, Value>) -> Vec<u8> {
    let head = json!({"index": {"_index": index, "_id": id,
        "if_seq_no": s.seq_no, "if_primary_term": s.primary_term}});
    let mut out = head.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(Value::Object(source.clone()).to_string().as_bytes());
    out.push(b'\n');
    out
}

/// Recomputes the roll-ups of `parents` and writes those that changed;
/// returns how many were written.
pub async fn recompute(
    es: &Elasticsearch,
    plan: &Plan,
    parents: &BTreeSet<String>,
    requests: &Requests,
) -> Result<usize, EsError> {
    let mut todo = parents.clone();
    let mut written = 0;
    for _ in 0..MAX_ROUNDS {
        if todo.is_empty() {
            return Ok(written);
        }
        // The parents first: a count made after them is at least as new.
        let current = fetch(es, &plan.parent_index, &todo, requests, "read_parents").await?;
        count(requests, "search");
        let answer = elastic::call_ok(
            es,
            Method::Post,
            &format!("/{}/_search", plan.child_index),
            Some(&compute::query(&plan.cfg, &todo)),
        )
        .await?;
        let rollups = compute::parse(&plan.cfg, &todo, &answer).map_err(EsError::Refused)?;
        let mut body = Vec::new();
        let mut sent = Vec::new();
        for id in &todo {
            let (Some(Some(stored)), Some(r)) = (current.get(id), rollups.get(id)) else {
                continue; // a parent not indexed (yet): its own write recomputes it
            };
            if r.held_by(&plan.cfg, &stored.source) {
                continue;
            }
            let mut source = stored.source.clone();
            r.apply(&plan.cfg, &mut source);
            body.extend(cas_lines(&plan.parent_index, id, stored, &source));
            sent.push(id.clone());
        }
        if sent.is_empty() {
            return Ok(written);
        }
        let conflicts = send(es, body, &sent, requests).await?;
        written += sent.len() - conflicts.len();
        todo = conflicts;
    }
    Err(EsError::Refused(format!(
        "roll-up of {} parents still conflicting after {MAX_ROUNDS} rounds",
        todo.len()
    )))
}

/// Sends compare-and-set writes of `ids` (in order); returns those refused
/// by a conflict (changed meanwhile). Any other refusal is an error.
pub async fn send(
    es: &Elasticsearch,
    body: Vec<u8>,
    ids: &[String],
    requests: &Requests,
) -> Result<BTreeSet<String>, EsError> {
    count(requests, "write");
    let resp = es
        .send(
            Method::Post,
            "/_bulk",
            elasticsearch::http::headers::HeaderMap::new(),
            None::<&()>,
            Some(body),
            None,
        )
        .await
        .map_err(|e| EsError::Transport(e.to_string()))?;
    let status = resp.status_code().as_u16();
    let out: Value = resp
        .json()
        .await
        .map_err(|e| EsError::Transport(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(EsError::Status {
            what: "POST /_bulk (roll-up)".into(),
            status,
            body: shorten(out.to_string(), 2000),
        });
    }
    let items = out["items"]
        .as_array()
        .filter(|i| i.len() == ids.len())
        .ok_or_else(|| bad("_bulk", &out))?;
    let mut conflicts = BTreeSet::new();
    for (id, item) in ids.iter().zip(items) {
        let status = item["index"]["status"].as_u64().unwrap_or(0);
        match status {
            200..=299 => {}
            409 => {
                conflicts.insert(id.clone());
            }
            _ => return Err(bad("_bulk (roll-up)", item)),
        }
    }
    Ok(conflicts)
}

/// The roll-up a parent's source holds (to carry it onto the parent's next
/// version), and whether it holds one at all.
pub fn carried(plan: &Plan, source: &Map<String, Value>) -> Option<Rollup> {
    source
        .contains_key(&plan.cfg.count_field)
        .then(|| Rollup::read(&plan.cfg, source))
}
