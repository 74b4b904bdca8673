//! Index bootstrap, before any record is consumed: for every topic's
//! alias, if neither an alias nor an index of that name exists, create the
//! concrete index `{alias}-000001` from the settings/mappings file, with
//! the alias pointing at it (one request, so no half-done state). An
//! existing alias or index is used as it is: its mapping is never changed
//! (a mapping change is a reindex, see `es-sync reindex`).
//!
//! An engine without the nori plugin refuses the shipped index files; the
//! index is then created from their bigram fallback, loudly (see
//! [`crate::analysis`]): a search backend that works, degraded, beats a
//! pipeline that cannot start.
//!
//! Delivery guarantee: none (idempotent set-up, retried on transient errors).

use crate::analysis;
use crate::elastic::{self, EsError};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};
use std::path::Path;

/// Name of the first concrete index behind `alias`.
pub fn first_index_name(alias: &str) -> String {
    format!("{alias}-000001")
}

/// Reads and checks an index file: a JSON object with `settings` and
/// `mappings` objects (and nothing else but `aliases`).
pub fn read_index_file(path: &Path) -> Result<Value, EsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EsError::Refused(format!("cannot read index file {}: {e}", path.display())))?;
    parse_index_file(&text)
        .map_err(|e| EsError::Refused(format!("index file {}: {e}", path.display())))
}

/// Checks index-file text (see [`read_index_file`]).
pub fn parse_index_file(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("must be a JSON object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "settings" | "mappings") {
            return Err(format!("unexpected key `{k}` (only settings and mappings)"));
        }
    }
    if !obj.get("mappings").is_some_and(Value::is_object) {
        return Err("`mappings` object missing".into());
    }
    if !obj.get("settings").is_some_and(Value::is_object) {
        return Err("`settings` object missing".into());
    }
    Ok(v)
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// The alias existed, pointing at these indices (left unchanged).
    AliasExists(Vec<String>),
    /// A concrete index of that name existed (left unchanged).
    IndexExists,
    /// The index was created with the alias on it.
    Created(String),
}

/// Ensures `alias` exists (see the module documentation).
pub async fn ensure(
    es: &Elasticsearch,
    alias: &str,
    index_file: &Value,
) -> Result<Bootstrap, EsError> {
    let indices = elastic::alias_indices(es, alias).await?;
    if !indices.is_empty() {
        tracing::info!(alias, ?indices, "alias exists; mapping left unchanged");
        return Ok(Bootstrap::AliasExists(indices));
    }
    if elastic::index_exists(es, alias).await? {
        tracing::info!(
            index = alias,
            "concrete index exists; mapping left unchanged"
        );
        return Ok(Bootstrap::IndexExists);
    }
    let name = first_index_name(alias);
    let (status, body) = create_index(es, &name, index_file, Some(alias)).await?;
    if status == 400
        && body
            .to_string()
            .contains("resource_already_exists_exception")
    {
        // Another instance starting at the same time created it (with the
        // alias, in the same request): use it.
        let indices = elastic::alias_indices(es, alias).await?;
        if !indices.is_empty() {
            tracing::info!(
                alias,
                ?indices,
                "alias created concurrently; mapping left unchanged"
            );
            return Ok(Bootstrap::AliasExists(indices));
        }
        // A stray index of that name without the alias: never touch its
        // mapping, and do not guess.
        return Err(EsError::Refused(format!(
            "index {name} exists but alias {alias} does not point at it; add the alias by hand \
             (POST _aliases) after checking its mapping"
        )));
    }
    if !(200..300).contains(&status) {
        return Err(EsError::Status {
            what: format!("PUT /{name}"),
            status,
            body: body.to_string(),
        });
    }
    tracing::info!(alias, index = %name, "created index and alias");
    Ok(Bootstrap::Created(name))
}

/// Adds the fields of `index_file` that an existing `alias` lacks (a new
/// version of es-sync brings new fields: a card's roll-up, a reply's
/// `_sync.parent`). Elasticsearch merges new fields into a mapping and
/// refuses to change existing ones: a refusal (a field whose type or
/// analysis changed: that takes a reindex) is returned, and nothing is
/// changed. `_meta` is left as the live index has it (it says which
/// analysis the live index was built with).
pub async fn add_new_fields(
    es: &Elasticsearch,
    alias: &str,
    index_file: &Value,
) -> Result<(), EsError> {
    let Some(props) = index_file["mappings"].get("properties") else {
        return Ok(());
    };
    let body = json!({ "properties": props });
    elastic::call_ok(es, Method::Put, &format!("/{alias}/_mapping"), Some(&body))
        .await
        .map(|_| ())
}

/// Creates `name` from `index_file`, optionally with `alias` as its write
/// alias. When the engine refuses the file for want of nori, creates it
/// from the file's bigram fallback instead (logged at `warn`). Returns the
/// raw answer of the last request.
pub async fn create_index(
    es: &Elasticsearch,
    name: &str,
    index_file: &Value,
    alias: Option<&str>,
) -> Result<(u16, Value), EsError> {
    let (status, body) = put_index(es, name, index_file, alias).await?;
    let Some(reason) = analysis::missing_nori(status, &body) else {
        return Ok((status, body));
    };
    tracing::warn!(
        index = name,
        %reason,
        "the engine has no nori (analysis-nori plugin): creating the index with the cjk bigram \
         analyzer instead; Korean search is degraded until the plugin is installed and the \
         index rebuilt (es-sync reindex)"
    );
    put_index(
        es,
        name,
        &analysis::cjk_fallback(index_file, &reason),
        alias,
    )
    .await
}

async fn put_index(
    es: &Elasticsearch,
    name: &str,
    index_file: &Value,
    alias: Option<&str>,
) -> Result<(u16, Value), EsError> {
    let mut body = index_file.clone();
    if let (Some(alias), Some(obj)) = (alias, body.as_object_mut()) {
        obj.insert(
            "aliases".into(),
            json!({ alias: { "is_write_index": true } }),
        );
    }
    elastic::call(
        es,
        Method::Put,
        &format!("/{name}?wait_for_active_shards=1"),
        Some(&body),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_file_is_checked() {
        assert!(parse_index_file(r#"{"settings": {}, "mappings": {"properties": {}}}"#).is_ok());
        assert!(parse_index_file("[]").unwrap_err().contains("object"));
        assert!(parse_index_file(r#"{"settings": {}}"#)
            .unwrap_err()
            .contains("mappings"));
        assert!(parse_index_file(r#"{"mappings": {}}"#)
            .unwrap_err()
            .contains("settings"));
        assert!(
            parse_index_file(r#"{"settings": {}, "mappings": {}, "aliases": {}}"#)
                .unwrap_err()
                .contains("aliases")
        );
        assert!(parse_index_file("{").unwrap_err().contains("JSON"));
    }

    #[test]
    fn shipped_index_files_are_valid() {
        for f in ["cards.json", "replies.json"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/indices")
                .join(f);
            let v = read_index_file(&p).unwrap();
            let m = &v["mappings"]["properties"];
            assert_eq!(m["_sync"]["properties"]["version"]["type"], "long", "{f}");
            assert_eq!(
                m["_sync"]["properties"]["partition"]["type"], "integer",
                "{f}"
            );
            assert_eq!(m["body"]["analyzer"], "ko_index", "{f}");
            assert_eq!(m["body"]["search_analyzer"], "ko_search", "{f}");
            assert_eq!(m["body"]["fields"]["bigram"]["analyzer"], "cjk", "{f}");
            assert!(v["settings"]["index.gc_deletes"].is_string(), "{f}");
        }
    }

    #[test]
    fn first_index_is_numbered() {
        assert_eq!(first_index_name("cards"), "cards-000001");
    }
}
