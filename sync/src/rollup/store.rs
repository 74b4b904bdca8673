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

/// A child as the index holds it: the parent it points at now (if any)
/// and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The parent's Elasticsearch id.
    pub parent: Option<String>,
    /// The version of the child's last change.
    pub version: u64,
}

/// The children `ids` of the child index as it holds them (absent: not
/// in the map).
pub async fn children(
    es: &Elasticsearch,
    plan: &Plan,
    ids: &BTreeSet<String>,
    requests: &Requests,
) -> Result<HashMap<String, Child>, EsError> {
    Ok(fetch(es, &plan.child_index, ids, requests, "read_children")
        .await?
        .into_iter()
        .filter_map(|(id, c)| {
            let c = c?;
            let parent = c.source["_sync"][compute::PARENT_SYNC_FIELD]
                .as_str()
                .map(str::to_string);
            Some((
                id,
                Child {
                    parent,
                    version: c.version,
                },
            ))
        })
        .collect())
}

/// The flag (in a parent's `_sync`) that says a change of its children
/// may have reached the index without its roll-up being written yet: set
/// before a request that deletes children or moves them to another parent,
/// cleared by the next roll-up written onto the parent. A delete or a move
/// leaves nothing in the children's index that names the parent it left,
/// so a crash between that request and the roll-up would otherwise leave
/// the parent counting a child it lost; a redelivery finds the flagged
/// parents instead ([`pending`]).
pub const PENDING_SYNC_FIELD: &str = "rollup_pending";

/// Whether a parent's source carries [`PENDING_SYNC_FIELD`].
pub fn is_pending(source: &Map<String, Value>) -> bool {
    source
        .get("_sync")
        .and_then(|s| s.get(PENDING_SYNC_FIELD))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Sets or clears [`PENDING_SYNC_FIELD`] in a parent's source.
pub fn set_pending(source: &mut Map<String, Value>, on: bool) {
    let sync = source
        .entry("_sync")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(sync) = sync {
        if on {
            sync.insert(PENDING_SYNC_FIELD.to_string(), Value::Bool(true));
        } else {
            sync.remove(PENDING_SYNC_FIELD);
        }
    }
}

/// Flags `parents` as pending (one `_bulk` of partial updates, visible to
/// a search after the next refresh); a parent the index does not hold is
/// skipped (its own write computes its roll-up).
pub async fn flag_pending(
    es: &Elasticsearch,
    plan: &Plan,
    parents: &BTreeSet<String>,
    requests: &Requests,
) -> Result<(), EsError> {
    if parents.is_empty() {
        return Ok(());
    }
    let mut body = Vec::new();
    for id in parents {
        let head =
            json!({"update": {"_index": plan.parent_index, "_id": id, "retry_on_conflict": 5}});
        body.extend(head.to_string().into_bytes());
        body.push(b'\n');
        body.extend(
            json!({"doc": {"_sync": {PENDING_SYNC_FIELD: true}}})
                .to_string()
                .into_bytes(),
        );
        body.push(b'\n');
    }
    count(requests, "flag");
    let out = bulk(es, body, "POST /_bulk (roll-up pending flags)").await?;
    let items = out["items"]
        .as_array()
        .filter(|i| i.len() == parents.len())
        .ok_or_else(|| bad("_bulk (roll-up pending flags)", &out))?;
    for item in items {
        match item["update"]["status"].as_u64().unwrap_or(0) {
            200..=299 | 404 => {}
            _ => return Err(bad("_bulk (roll-up pending flags)", item)),
        }
    }
    Ok(())
}

/// Most flagged parents read by one [`pending`] (more are found by the
/// next redelivered request).
const PENDING_PAGE: usize = 10_000;

/// The parents flagged pending (after a refresh of the parents' index, so
/// flags set just before a crash are seen): read when a request of
/// children looks redelivered (a delete of a child the index no longer
/// holds, a child already at the change's version).
pub async fn pending(
    es: &Elasticsearch,
    plan: &Plan,
    requests: &Requests,
) -> Result<BTreeSet<String>, EsError> {
    count(requests, "refresh");
    elastic::call_ok(
        es,
        Method::Post,
        &format!("/{}/_refresh", plan.parent_index),
        None,
    )
    .await?;
    count(requests, "search_pending");
    let answer = elastic::call_ok(
        es,
        Method::Post,
        &format!("/{}/_search", plan.parent_index),
        Some(&json!({
            "size": PENDING_PAGE,
            "_source": false,
            "track_total_hits": false,
            "query": {"term": {format!("_sync.{PENDING_SYNC_FIELD}"): true}}
        })),
    )
    .await?;
    let hits = answer["hits"]["hits"]
        .as_array()
        .ok_or_else(|| bad("_search (roll-up pending flags)", &answer))?;
    Ok(hits
        .iter()
        .filter_map(|h| h["_id"].as_str().map(str::to_string))
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
            let pending = is_pending(&stored.source);
            if r.held_by(&plan.cfg, &stored.source) && !pending {
                continue;
            }
            let mut source = stored.source.clone();
            r.apply(&plan.cfg, &mut source);
            if pending {
                set_pending(&mut source, false);
            }
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
    let out = bulk(es, body, "POST /_bulk (roll-up)").await?;
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

/// Sends an NDJSON `_bulk` body; its answer, or the refusal of the whole
/// request (`what` names it).
async fn bulk(es: &Elasticsearch, body: Vec<u8>, what: &str) -> Result<Value, EsError> {
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
            what: what.into(),
            status,
            body: shorten(out.to_string(), 2000),
        });
    }
    Ok(out)
}
