//! Classification of a bulk response, item by item, by one pure function:
//! [`classify`]. Everything the service does after a response follows from
//! its answer: successes and conflicts are done, retryable items are sent
//! again (only those), blocked ones are sent again until the operator has
//! fixed the index (never dead-lettered), permanent ones go to the
//! dead-letter topic.
//!
//! The line between blocked and permanent: an error that says something
//! about the *index or the cluster* (a write block, a flood-stage disk
//! block, a closed, missing or unauthorized index, the field limit of the
//! mapping, an alias without a write index) is fixed by an operator and
//! every write it refused must still land; only an error about the
//! *document itself* (it does not parse, a value does not fit its field)
//! is permanent. The table, with the Elasticsearch 7.x, 8.x and OpenSearch
//! shapes it was checked on, is in `docs/sync.md` and the tests below
//! (canned responses recorded from real nodes, `sync/tests/fixtures/bulk`).
//!
//! Delivery guarantee of this stage: none needed, a pure function; it never
//! turns an unknown answer into success (unknown means retry).

use serde_json::Value;

/// The outcome of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (`created`, `updated`, `deleted`; a delete of a missing
    /// document, `not_found`, also leaves the wanted state).
    Success,
    /// 409 version conflict: the index already holds this or a newer
    /// version. Counts as success.
    Conflict,
    /// Transient: 429, 5xx, `es_rejected_execution_exception`, transport
    /// errors. `reason` labels the retry metric.
    Retry {
        /// Short label (`429`, `5xx`, `es_rejected_execution_exception`, ...).
        reason: String,
    },
    /// The index (or the cluster) refuses writes for a reason an operator
    /// fixes: retried until it works, the partition waits meanwhile.
    Blocked {
        /// Elasticsearch error type (`cluster_block_exception`, ...).
        error_type: String,
        /// Elasticsearch's reason text.
        reason: String,
    },
    /// HTTP 413: the whole request is over the node's
    /// `http.max_content_length`. The service sends it again in halves
    /// ([`super::service`]); a single item refused so is dead-lettered.
    TooLarge,
    /// Will fail again (mapping or parse errors): dead-letter it.
    Permanent {
        /// Elasticsearch error type, e.g. `document_parsing_exception`.
        error_type: String,
        /// Elasticsearch's reason text.
        reason: String,
    },
}

/// Classifies the response to a bulk request of `n_items` items: HTTP
/// [`classify`] of an answer's body as received: an answer of `n_items`
/// all applied is read without a tree ([`super::answer::all_applied`]),
/// any other is parsed and classified item by item.
pub fn classify_body(status: Option<u16>, body: Option<&[u8]>, n_items: usize) -> Vec<Outcome> {
    if let (Some(200), Some(b)) = (status, body) {
        if super::answer::all_applied(b, n_items) {
            return vec![Outcome::Success; n_items];
        }
    }
    let json = body.and_then(|b| serde_json::from_slice::<Value>(b).ok());
    classify(status, json.as_ref(), n_items)
}

/// `status` and the parsed JSON `body` (`None` if the request failed
/// before an answer, or the body was not JSON). Returns one outcome per
/// item, in request order.
pub fn classify(status: Option<u16>, body: Option<&Value>, n_items: usize) -> Vec<Outcome> {
    let all = |o: Outcome| vec![o; n_items];
    let Some(status) = status else {
        return all(Outcome::Retry {
            reason: "transport".into(),
        });
    };
    match status {
        200 => {}
        429 => {
            return all(Outcome::Retry {
                reason: "429".into(),
            })
        }
        413 => return all(Outcome::TooLarge),
        // Auth and routing problems are fixed by operators, not by
        // dropping data: keep retrying, the partitions wait.
        401 | 403 | 404 => {
            let (error_type, reason) = body.map(error_of).unwrap_or_default();
            return all(Outcome::Blocked {
                error_type: if error_type.is_empty() {
                    format!("http_{status}")
                } else {
                    error_type
                },
                reason,
            });
        }
        408 => {
            return all(Outcome::Retry {
                reason: status.to_string(),
            })
        }
        s if s >= 500 => {
            return all(Outcome::Retry {
                reason: "5xx".into(),
            })
        }
        s => {
            let (error_type, reason) = body.map(error_of).unwrap_or_default();
            return all(Outcome::Permanent {
                error_type: if error_type.is_empty() {
                    format!("http_{s}")
                } else {
                    error_type
                },
                reason,
            });
        }
    }
    let items = body.and_then(|b| b.get("items")).and_then(Value::as_array);
    let Some(items) = items.filter(|i| i.len() == n_items) else {
        return all(Outcome::Retry {
            reason: "malformed_response".into(),
        });
    };
    items.iter().map(classify_item).collect()
}

/// Classifies one entry of `items` (`{"index": {"status": .., ...}}`).
pub fn classify_item(item: &Value) -> Outcome {
    let Some((op, inner)) = item.as_object().and_then(|m| m.iter().next()) else {
        return Outcome::Retry {
            reason: "malformed_response".into(),
        };
    };
    let Some(status) = inner.get("status").and_then(Value::as_u64) else {
        return Outcome::Retry {
            reason: "malformed_response".into(),
        };
    };
    let (error_type, reason) = inner.get("error").map(error_of_object).unwrap_or_default();
    match status {
        200..=299 => Outcome::Success,
        404 if op == "delete"
            && inner.get("result").and_then(Value::as_str) == Some("not_found") =>
        {
            Outcome::Success
        }
        409 => Outcome::Conflict,
        _ if index_level(status, &error_type, &reason) => Outcome::Blocked { error_type, reason },
        429 => Outcome::Retry {
            reason: "429".into(),
        },
        _ if error_type == "es_rejected_execution_exception" => {
            Outcome::Retry { reason: error_type }
        }
        500..=599 => Outcome::Retry {
            reason: if error_type.is_empty() {
                "5xx".into()
            } else {
                error_type
            },
        },
        _ => Outcome::Permanent {
            error_type: if error_type.is_empty() {
                format!("http_{status}")
            } else {
                error_type
            },
            reason,
        },
    }
}

/// Error types that are about the index or the cluster, never about the
/// document (see the module documentation).
const INDEX_LEVEL_TYPES: [&str; 8] = [
    "cluster_block_exception",
    "index_closed_exception",
    "index_not_found_exception",
    "security_exception",
    "invalid_index_name_exception",
    "no_shard_available_action_exception",
    "index_primary_shard_not_allocated_exception",
    "illegal_index_shard_state_exception",
];

/// Reasons of an `illegal_argument_exception` that are about the index:
/// the mapping's field limit (a new field meets it; an operator raises
/// it), an alias with no (or several) write index. (The mapping *depth*
/// limit is not among them: a document nested deeper than the index allows
/// is the document's shape, dead-lettered with its reason.)
const INDEX_LEVEL_REASONS: [&str; 3] = [
    "Limit of total fields",
    "no write index is defined for alias",
    "has more than one index associated with it",
];

/// Whether an item error is an operator-fixable fault of the index (see
/// the module documentation): by type, by an item status of 401 or 403 (no
/// permission), or 404 (no index: a missing document is `not_found` on a
/// delete and handled before), or by the reason of an
/// `illegal_argument_exception` about the index.
pub fn index_level(status: u64, error_type: &str, reason: &str) -> bool {
    INDEX_LEVEL_TYPES.contains(&error_type)
        || matches!(status, 401 | 403 | 404)
        || (error_type == "illegal_argument_exception"
            && INDEX_LEVEL_REASONS.iter().any(|r| reason.contains(r)))
}

/// `(type, reason)` of a top-level error body `{"error": {..}, "status": ..}`.
fn error_of(body: &Value) -> (String, String) {
    body.get("error").map(error_of_object).unwrap_or_default()
}

/// `(type, reason)` of an error object, with the root cause's reason when
/// it adds something (`caused_by`).
fn error_of_object(e: &Value) -> (String, String) {
    if let Some(s) = e.as_str() {
        return ("error".into(), s.to_string());
    }
    let ty = e
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut reason = e
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(cause) = e.get("caused_by") {
        let cty = cause.get("type").and_then(Value::as_str).unwrap_or("");
        let creason = cause.get("reason").and_then(Value::as_str).unwrap_or("");
        if !cty.is_empty() || !creason.is_empty() {
            reason = format!("{reason} (caused by {cty}: {creason})");
        }
    }
    (ty, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A response as Elasticsearch 8 writes it for a mixed bulk.
    fn mixed_response() -> Value {
        json!({
          "errors": true, "took": 3,
          "items": [
            {"index": {"_index": "cards-000001", "_id": "1", "_version": 5, "result": "created",
                       "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": 0,
                       "_primary_term": 1, "status": 201}},
            {"index": {"_index": "cards-000001", "_id": "2", "_version": 9, "result": "updated", "status": 200}},
            {"delete": {"_index": "cards-000001", "_id": "3", "_version": 7, "result": "not_found", "status": 404}},
            {"index": {"_index": "cards-000001", "_id": "4", "status": 409,
                       "error": {"type": "version_conflict_engine_exception",
                                 "reason": "[4]: version conflict, current version [10] is higher or equal to the one provided [3]",
                                 "index_uuid": "x", "shard": "0", "index": "cards-000001"}}},
            {"index": {"_index": "cards-000001", "_id": "5", "status": 400,
                       "error": {"type": "document_parsing_exception",
                                 "reason": "[1:42] failed to parse field [likes] of type [integer] in document with id '5'. Preview of field's value: 'many'",
                                 "caused_by": {"type": "number_format_exception", "reason": "For input string: \"many\""}}}},
            {"index": {"_index": "cards-000001", "_id": "6", "status": 429,
                       "error": {"type": "es_rejected_execution_exception",
                                 "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]"}}},
            {"index": {"_index": "cards-000001", "_id": "7", "status": 503,
                       "error": {"type": "unavailable_shards_exception",
                                 "reason": "[cards-000001][0] primary shard is not active Timeout: [1m]"}}},
            {"index": {"_index": "cards-000001", "_id": "8", "status": 400,
                       "error": {"type": "mapper_parsing_exception", "reason": "object mapping for [author] tried to parse field [author] as object, but found a concrete value"}}},
            {"index": {"_index": "cards-000001", "_id": "9", "status": 500,
                       "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}}
          ]
        })
    }

    #[test]
    fn mixed_bulk_response_is_classified_item_by_item() {
        let out = classify(Some(200), Some(&mixed_response()), 9);
        assert_eq!(out[0], Outcome::Success);
        assert_eq!(out[1], Outcome::Success);
        assert_eq!(
            out[2],
            Outcome::Success,
            "delete of a missing doc is the wanted state"
        );
        assert_eq!(out[3], Outcome::Conflict);
        match &out[4] {
            Outcome::Permanent { error_type, reason } => {
                assert_eq!(error_type, "document_parsing_exception");
                assert!(
                    reason.contains("likes") && reason.contains("number_format_exception"),
                    "{reason}"
                );
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            out[5],
            Outcome::Retry {
                reason: "429".into()
            }
        );
        assert_eq!(
            out[6],
            Outcome::Retry {
                reason: "unavailable_shards_exception".into()
            }
        );
        assert!(
            matches!(&out[7], Outcome::Permanent { error_type, .. } if error_type == "mapper_parsing_exception")
        );
        assert_eq!(
            out[8],
            Outcome::Retry {
                reason: "es_rejected_execution_exception".into()
            }
        );
    }

    #[test]
    fn all_success_response() {
        let body = json!({"errors": false, "took": 1, "items": [
            {"index": {"_id": "1", "status": 201, "result": "created"}},
            {"delete": {"_id": "2", "status": 200, "result": "deleted"}}
        ]});
        assert_eq!(
            classify(Some(200), Some(&body), 2),
            vec![Outcome::Success; 2]
        );
    }

    #[test]
    fn a_document_nested_too_deep_is_permanent() {
        let item = json!({"index": {"status": 400, "error": {"type": "illegal_argument_exception",
            "reason": "Limit of mapping depth [20] has been exceeded due to object field [d.a.a.a]"}}});
        assert!(matches!(classify_item(&item), Outcome::Permanent { .. }));
    }

    #[test]
    fn whole_request_failures() {
        let retry = |r: &str| vec![Outcome::Retry { reason: r.into() }; 2];
        assert_eq!(classify(None, None, 2), retry("transport"));
        let rejected = json!({"error": {"type": "es_rejected_execution_exception", "reason": "queue full"}, "status": 429});
        assert_eq!(classify(Some(429), Some(&rejected), 2), retry("429"));
        let unavailable = json!({"error": {"type": "cluster_block_exception"}, "status": 503});
        assert_eq!(classify(Some(503), Some(&unavailable), 2), retry("5xx"));
        assert_eq!(classify(Some(502), None, 2), retry("5xx"));
        assert_eq!(
            classify(Some(401), None, 2),
            vec![
                Outcome::Blocked {
                    error_type: "http_401".into(),
                    reason: String::new()
                };
                2
            ]
        );
        // Elasticsearch answers 413 with an empty body and closes the connection.
        assert_eq!(classify(Some(413), None, 3), vec![Outcome::TooLarge; 3]);
        let bad = json!({"error": {"type": "illegal_argument_exception", "reason": "Malformed action/metadata line [1]"}, "status": 400});
        assert!(
            matches!(&classify(Some(400), Some(&bad), 1)[0], Outcome::Permanent { error_type, .. } if error_type == "illegal_argument_exception")
        );
    }

    #[test]
    fn unexpected_answers_are_retried_never_success() {
        let body = json!({"errors": false, "items": [{"index": {"status": 201}}]});
        assert_eq!(
            classify(Some(200), Some(&body), 2),
            vec![
                Outcome::Retry {
                    reason: "malformed_response".into()
                };
                2
            ],
            "item count mismatch"
        );
        assert_eq!(
            classify(Some(200), Some(&json!({"took": 1})), 1),
            vec![Outcome::Retry {
                reason: "malformed_response".into()
            }]
        );
        assert_eq!(
            classify_item(&json!({"index": {}})),
            Outcome::Retry {
                reason: "malformed_response".into()
            }
        );
        assert_eq!(
            classify_item(&json!(3)),
            Outcome::Retry {
                reason: "malformed_response".into()
            }
        );
        // A 404 on an index item (index missing, auto-create off) is the
        // index's fault: blocked, never success nor dead-lettered.
        let missing = json!({"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}});
        assert!(matches!(classify_item(&missing), Outcome::Blocked { .. }));
    }

    /// What Elasticsearch keeps of a bulk answer under
    /// [`crate::bulk::service::FILTER_PATH`]: `errors`, and of each item
    /// its operation with `status`, `error` and `result`.
    fn filter_path(body: &Value) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(e) = body.get("errors") {
            out.insert("errors".into(), e.clone());
        }
        if let Some(items) = body.get("items").and_then(Value::as_array) {
            let items = items
                .iter()
                .map(|item| {
                    let m: serde_json::Map<String, Value> = item
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(op, inner)| {
                            let kept: serde_json::Map<String, Value> =
                                ["status", "error", "result"]
                                    .iter()
                                    .filter_map(|k| Some((k.to_string(), inner.get(*k)?.clone())))
                                    .collect();
                            (op.clone(), Value::Object(kept))
                        })
                        .collect();
                    Value::Object(m)
                })
                .collect();
            out.insert("items".into(), Value::Array(items));
        }
        Value::Object(out)
    }

    #[test]
    fn the_mixed_answers_read_alike_whole_filtered_and_as_bytes() {
        let body = mixed_response();
        let want = classify(Some(200), Some(&body), 9);
        for v in [body.clone(), filter_path(&body)] {
            let bytes = serde_json::to_vec(&v).unwrap();
            assert_eq!(classify_body(Some(200), Some(&bytes), 9), want);
        }
        assert_eq!(
            classify_body(Some(200), Some(b"not json"), 2),
            vec![
                Outcome::Retry {
                    reason: "malformed_response".into()
                };
                2
            ]
        );
        assert_eq!(
            classify_body(Some(413), None, 2),
            vec![Outcome::TooLarge; 2]
        );
    }

    /// Every response recorded from a real node (and the 8.x shapes), see
    /// `sync/tests/fixtures/bulk/README.md`.
    #[test]
    fn recorded_responses_are_classified() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bulk");
        let blocked = |o: &Outcome| matches!(o, Outcome::Blocked { .. });
        let mut checked = 0;
        for engine in std::fs::read_dir(&root).unwrap() {
            let dir = engine.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for case in std::fs::read_dir(&dir).unwrap() {
                let path = case.unwrap().path();
                let name = path.file_stem().unwrap().to_str().unwrap().to_string();
                let v: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let status = v["status"].as_u64().map(|s| s as u16);
                let n = v["body"]["items"].as_array().map_or(1, Vec::len);
                let out = classify(status, Some(&v["body"]), n);
                let at = format!("{}/{name}: {out:?}", dir.display());
                // As es-sync reads it: the body asked with
                // FILTER_PATH, as bytes.
                let filtered = serde_json::to_vec(&filter_path(&v["body"])).unwrap();
                assert_eq!(
                    classify_body(status, Some(&filtered), n),
                    out,
                    "{at}: filtered"
                );
                let whole = serde_json::to_vec(&v["body"]).unwrap();
                assert_eq!(classify_body(status, Some(&whole), n), out, "{at}: bytes");
                match name.as_str() {
                    "mixed" => {
                        assert_eq!(out[0], Outcome::Success, "{at}");
                        assert_eq!(out[1], Outcome::Conflict, "{at}");
                        assert!(
                            matches!(&out[2], Outcome::Permanent { error_type, reason }
                                if error_type.ends_with("parsing_exception") && reason.contains("likes")),
                            "{at}"
                        );
                        assert_eq!(out[3], Outcome::Success, "{at}");
                    }
                    _ => assert!(out.iter().all(blocked), "{at}"),
                }
                checked += 1;
            }
        }
        assert!(checked >= 21, "three engines, seven cases each: {checked}");
    }
}
