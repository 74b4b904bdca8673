//! Classification of a bulk response, item by item, by one pure function:
//! [`classify`]. Everything the service does after a response follows from
//! its answer: successes and conflicts are done, retryable items are sent
//! again (only those), permanent ones go to the dead-letter topic.
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
        // dropping data: keep retrying (and alerting through the metric).
        401 | 403 | 404 | 408 => {
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
    fn whole_request_failures() {
        let retry = |r: &str| vec![Outcome::Retry { reason: r.into() }; 2];
        assert_eq!(classify(None, None, 2), retry("transport"));
        let rejected = json!({"error": {"type": "es_rejected_execution_exception", "reason": "queue full"}, "status": 429});
        assert_eq!(classify(Some(429), Some(&rejected), 2), retry("429"));
        let unavailable = json!({"error": {"type": "cluster_block_exception"}, "status": 503});
        assert_eq!(classify(Some(503), Some(&unavailable), 2), retry("5xx"));
        assert_eq!(classify(Some(502), None, 2), retry("5xx"));
        assert_eq!(classify(Some(401), None, 2), retry("401"));
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
        // A 404 on an index item (index missing, auto-create off) is permanent, not success.
        let missing = json!({"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}});
        assert!(matches!(classify_item(&missing), Outcome::Permanent { .. }));
    }
}
