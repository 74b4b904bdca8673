//! Korean text analysis of the indices: whether an index file (or a live
//! index) uses the morphological analyzer **nori**, the bigram (`cjk`)
//! fallback for an engine without the `analysis-nori` plugin, and what
//! `/status` says about each alias.
//!
//! The shipped index files (`config/indices/*.json`) analyse text with
//! `nori_tokenizer` and the `nori_*` filters (docs/search.md). An engine
//! without the plugin refuses to create such an index (400, `Unknown
//! tokenizer type [nori_tokenizer]`). Index creation then retries once with
//! [`cjk_fallback`] of the file: every analyzer that needs nori becomes the
//! built-in `cjk` analyzer under the same name, so the mapping and every
//! query keep working, with bigram instead of morphological matching. The
//! fallback is never silent: a `warn` log line at creation and at every
//! start, and `/status` (`indices[].analysis = "cjk_fallback"` with the
//! reason).
//!
//! Versioning: `mappings._meta.analysis` of an index file holds the
//! `revision` and `fingerprint` that `scripts/render-analysis` writes. The
//! live index keeps the `_meta` it was created with, so a live fingerprint
//! other than the shipped one means the shipped analysis (dictionary,
//! synonyms, analyzer chain) is not in use yet: `es-sync reindex` builds
//! the new version and swaps the alias.
//!
//! Delivery guarantee: none (index set-up and observability).

use crate::elastic::{self, EsError};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Which text analysis a live index uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMode {
    /// Its settings define nori components: morphological Korean analysis.
    Nori,
    /// Created by es-sync from the bigram fallback of a nori index file,
    /// because the engine had no nori.
    CjkFallback,
    /// No nori and not a fallback (an index file without nori, or an index
    /// created before the nori mappings).
    WithoutNori,
}

/// What `/status` shows about one alias (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexAnalysis {
    /// The alias (or index name) of the topic.
    pub alias: String,
    /// The concrete index inspected (the alias's first index).
    pub index: String,
    /// Analysis of the live index.
    pub analysis: AnalysisMode,
    /// Why the live index is a fallback (the engine's refusal), if it is.
    pub fallback_reason: Option<String>,
    /// `_meta.analysis.revision` of the live index.
    pub live_revision: Option<u64>,
    /// `_meta.analysis.revision` of the shipped index file.
    pub shipped_revision: Option<u64>,
    /// Whether the live index differs from the shipped file (another
    /// fingerprint, or a fallback or non-nori index where the file asks
    /// for nori): `es-sync reindex` applies the shipped analysis.
    pub reindex_needed: bool,
}

/// Whether a JSON name refers to a nori component (`nori`,
/// `nori_tokenizer`, `nori_part_of_speech`, `nori_readingform`, ...).
fn is_nori_name(s: &str) -> bool {
    s == "nori" || s.starts_with("nori_")
}

/// `settings.analysis` of an index file, or `settings.index.analysis` of
/// a `GET _settings` answer.
fn analysis_of(settings: &Value) -> Option<&Map<String, Value>> {
    settings
        .get("analysis")
        .or_else(|| settings.get("index").and_then(|i| i.get("analysis")))
        .and_then(Value::as_object)
}

/// Whether an index file (or a live index's settings and mappings) uses
/// nori: a nori tokenizer/filter/analyzer type in the analysis settings,
/// a nori filter or tokenizer named in an analyzer chain, or the built-in
/// `nori` analyzer named in the mappings.
pub fn uses_nori(file: &Value) -> bool {
    let in_settings = analysis_of(&file["settings"]).is_some_and(|a| {
        a.values()
            .filter_map(Value::as_object)
            .flat_map(|group| group.values())
            .any(component_uses_nori)
    });
    in_settings || mapping_names_nori(&file["mappings"])
}

/// A tokenizer, filter or analyzer definition that is or names nori.
fn component_uses_nori(def: &Value) -> bool {
    let s = |k: &str| def.get(k).and_then(Value::as_str).is_some_and(is_nori_name);
    let filters = def
        .get("filter")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().filter_map(Value::as_str).any(is_nori_name));
    s("type") || s("tokenizer") || filters
}

fn mapping_names_nori(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (is_analyzer_key(k) && v.as_str().is_some_and(is_nori_name)) || mapping_names_nori(v)
        }),
        Value::Array(a) => a.iter().any(mapping_names_nori),
        _ => false,
    }
}

fn is_analyzer_key(k: &str) -> bool {
    matches!(k, "analyzer" | "search_analyzer" | "search_quote_analyzer")
}

/// The index file rewritten for an engine without nori: nori tokenizers
/// and filters removed; every analyzer that used them (or was of type
/// `nori`) replaced by `{"type": "cjk"}` under the same name; filters no
/// analyzer uses any more removed (a synonym filter would be parsed with
/// the missing tokenizer); the built-in `nori` analyzer named in the
/// mappings replaced by `cjk`; `_meta.analysis.mode = "cjk_fallback"` with
/// `reason`.
pub fn cjk_fallback(file: &Value, reason: &str) -> Value {
    let mut out = file.clone();
    if let Some(analysis) = out["settings"]
        .get_mut("analysis")
        .and_then(Value::as_object_mut)
    {
        let removed_tokenizers = remove_nori(analysis, "tokenizer");
        let removed_filters = remove_nori(analysis, "filter");
        let mut used_filters = BTreeSet::new();
        if let Some(analyzers) = analysis.get_mut("analyzer").and_then(Value::as_object_mut) {
            for def in analyzers.values_mut() {
                let tokenizer = def.get("tokenizer").and_then(Value::as_str);
                let needs_nori = component_uses_nori(def)
                    || tokenizer.is_some_and(|t| removed_tokenizers.contains(t))
                    || def
                        .get("filter")
                        .and_then(Value::as_array)
                        .is_some_and(|f| {
                            f.iter()
                                .filter_map(Value::as_str)
                                .any(|n| removed_filters.contains(n))
                        });
                if needs_nori {
                    *def = json!({ "type": "cjk" });
                } else if let Some(f) = def.get("filter").and_then(Value::as_array) {
                    used_filters.extend(f.iter().filter_map(Value::as_str).map(String::from));
                }
            }
        }
        if let Some(filters) = analysis.get_mut("filter").and_then(Value::as_object_mut) {
            filters.retain(|name, _| used_filters.contains(name));
        }
        analysis.retain(|_, group| !group.as_object().is_some_and(Map::is_empty));
    }
    replace_nori_analyzers(&mut out["mappings"]);
    if let Some(mappings) = out.get_mut("mappings").and_then(Value::as_object_mut) {
        let meta = mappings
            .entry("_meta")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(meta) = meta {
            let a = meta.entry("analysis").or_insert_with(|| json!({}));
            if let Some(a) = a.as_object_mut() {
                a.insert("mode".into(), json!("cjk_fallback"));
                a.insert("fallback_reason".into(), json!(reason));
            }
        }
    }
    out
}

/// Removes the nori entries of `analysis[group]`; returns their names.
fn remove_nori(analysis: &mut Map<String, Value>, group: &str) -> BTreeSet<String> {
    let mut removed = BTreeSet::new();
    if let Some(defs) = analysis.get_mut(group).and_then(Value::as_object_mut) {
        defs.retain(|name, def| {
            let nori = def
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(is_nori_name);
            if nori {
                removed.insert(name.clone());
            }
            !nori
        });
    }
    removed
}

fn replace_nori_analyzers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if is_analyzer_key(k) && v.as_str().is_some_and(is_nori_name) {
                    *v = json!("cjk");
                } else {
                    replace_nori_analyzers(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(replace_nori_analyzers),
        _ => {}
    }
}

/// If a create-index answer is the engine refusing a nori component it
/// does not have, the engine's reason (e.g. `Unknown tokenizer type
/// [nori_tokenizer] for [ko_nori]`).
pub fn missing_nori(status: u16, body: &Value) -> Option<String> {
    if status != 400 {
        return None;
    }
    let reason = body["error"]["reason"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| body.to_string());
    let known = [
        "Unknown tokenizer type [nori",
        "Unknown filter type [nori",
        "Unknown analyzer type [nori",
        "failed to find global tokenizer under [nori",
        "failed to find global filter under [nori",
        "failed to find filter under name [nori",
        "failed to find tokenizer under name [nori",
        "analyzer [nori] has not been configured",
    ];
    let text = body.to_string();
    known.iter().any(|k| text.contains(k)).then_some(reason)
}

/// The `_meta.analysis` object of a mappings object (or of an index file).
fn meta_analysis(mappings: &Value) -> &Value {
    &mappings["_meta"]["analysis"]
}

/// Compares the live index behind `alias` with the shipped index `file`
/// (two GETs: `_settings` and `_mapping` of the alias).
pub async fn inspect(
    es: &Elasticsearch,
    alias: &str,
    file: &Value,
) -> Result<IndexAnalysis, EsError> {
    let settings = elastic::call_ok(es, Method::Get, &format!("/{alias}/_settings"), None).await?;
    let mappings = elastic::call_ok(es, Method::Get, &format!("/{alias}/_mapping"), None).await?;
    let index = settings
        .as_object()
        .and_then(|m| m.keys().min().cloned())
        .unwrap_or_else(|| alias.to_string());
    let live = json!({
        "settings": settings[&index]["settings"],
        "mappings": mappings[&index]["mappings"],
    });
    Ok(compare(alias, &index, &live, file))
}

/// [`inspect`] on already fetched `live` (`{"settings", "mappings"}` of
/// the index as the engine returns them).
pub fn compare(alias: &str, index: &str, live: &Value, file: &Value) -> IndexAnalysis {
    let live_meta = meta_analysis(&live["mappings"]);
    let shipped_meta = meta_analysis(&file["mappings"]);
    let analysis = if uses_nori(live) {
        AnalysisMode::Nori
    } else if live_meta["mode"] == "cjk_fallback" {
        AnalysisMode::CjkFallback
    } else {
        AnalysisMode::WithoutNori
    };
    let fingerprint_differs = shipped_meta["fingerprint"].is_string()
        && live_meta["fingerprint"] != shipped_meta["fingerprint"];
    let reindex_needed = fingerprint_differs || (uses_nori(file) && analysis != AnalysisMode::Nori);
    IndexAnalysis {
        alias: alias.to_string(),
        index: index.to_string(),
        analysis,
        fallback_reason: (analysis == AnalysisMode::CjkFallback)
            .then(|| live_meta["fallback_reason"].as_str().map(String::from))
            .flatten(),
        live_revision: revision(live_meta),
        shipped_revision: revision(shipped_meta),
        reindex_needed,
    }
}

/// A revision as the engine returns it (a number, or a string of one).
fn revision(meta: &Value) -> Option<u64> {
    let r = &meta["revision"];
    r.as_u64()
        .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
}

/// Logs what `a` means for searchers: `warn` when the live index is not
/// the shipped nori analysis, `info` otherwise.
pub fn log(a: &IndexAnalysis) {
    match a.analysis {
        AnalysisMode::CjkFallback => tracing::warn!(
            alias = %a.alias,
            index = %a.index,
            reason = a.fallback_reason.as_deref().unwrap_or(""),
            "Korean analysis degraded: the index uses the cjk bigram fallback because the engine \
             had no nori (install the analysis-nori plugin, then es-sync reindex)"
        ),
        _ if a.reindex_needed => tracing::warn!(
            alias = %a.alias,
            index = %a.index,
            analysis = ?a.analysis,
            live_revision = ?a.live_revision,
            shipped_revision = ?a.shipped_revision,
            "the live index does not use the shipped analysis (dictionary, synonyms or \
             analyzers changed): build a new index version with es-sync reindex"
        ),
        _ => tracing::info!(
            alias = %a.alias,
            index = %a.index,
            analysis = ?a.analysis,
            live_revision = ?a.live_revision,
            "index analysis"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped(name: &str) -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/indices")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn the_shipped_files_use_nori_and_their_fallback_does_not() {
        for f in ["cards.json", "replies.json"] {
            let file = shipped(f);
            assert!(uses_nori(&file), "{f}");
            let fb = cjk_fallback(
                &file,
                "Unknown tokenizer type [nori_tokenizer] for [ko_nori]",
            );
            assert!(!uses_nori(&fb), "{f}");
            assert!(!fb["settings"].to_string().contains("nori"), "{f}: {fb}");
            let analyzers = &fb["settings"]["analysis"]["analyzer"];
            assert_eq!(analyzers["ko_index"], json!({"type": "cjk"}), "{f}");
            assert_eq!(analyzers["ko_search"], json!({"type": "cjk"}), "{f}");
            // The analyzers without nori stay as they were.
            assert_eq!(
                analyzers["ko_prefix"],
                file["settings"]["analysis"]["analyzer"]["ko_prefix"]
            );
            assert!(fb["settings"]["analysis"]["tokenizer"]["ko_edge"].is_object());
            // The synonym filter was used by ko_search only: gone with it.
            assert!(fb["settings"]["analysis"]["filter"].is_null(), "{f}");
            assert_eq!(fb["mappings"]["properties"], file["mappings"]["properties"]);
            assert_eq!(fb["mappings"]["_meta"]["analysis"]["mode"], "cjk_fallback");
            assert_eq!(
                fb["mappings"]["_meta"]["analysis"]["fingerprint"],
                file["mappings"]["_meta"]["analysis"]["fingerprint"]
            );
        }
    }

    #[test]
    fn the_builtin_nori_analyzer_in_a_mapping_falls_back_too() {
        let file = json!({
            "settings": {},
            "mappings": {"properties": {
                "a": {"type": "text", "analyzer": "nori", "fields": {"b": {"type": "text", "search_analyzer": "nori"}}},
                "c": {"type": "text", "analyzer": "standard"}
            }}
        });
        assert!(uses_nori(&file));
        let fb = cjk_fallback(&file, "r");
        assert!(!uses_nori(&fb));
        assert_eq!(fb["mappings"]["properties"]["a"]["analyzer"], "cjk");
        assert_eq!(
            fb["mappings"]["properties"]["a"]["fields"]["b"]["search_analyzer"],
            "cjk"
        );
        assert_eq!(fb["mappings"]["properties"]["c"]["analyzer"], "standard");
        assert!(!uses_nori(
            &json!({"settings": {}, "mappings": {"properties": {"c": {"type": "text", "analyzer": "cjk"}}}})
        ));
    }

    #[test]
    fn refusals_for_a_missing_nori_are_recognised() {
        // Elasticsearch 7.10.2 and OpenSearch 2.19.1 without the plugin.
        let tok = json!({"error": {"root_cause": [{"type": "illegal_argument_exception",
            "reason": "Unknown tokenizer type [nori_tokenizer] for [ko_nori]"}],
            "type": "illegal_argument_exception",
            "reason": "Unknown tokenizer type [nori_tokenizer] for [ko_nori]"}, "status": 400});
        assert_eq!(
            missing_nori(400, &tok).as_deref(),
            Some("Unknown tokenizer type [nori_tokenizer] for [ko_nori]")
        );
        assert_eq!(missing_nori(500, &tok), None);
        let other = json!({"error": {"type": "mapper_parsing_exception",
            "reason": "No handler for type [flattened] declared on field [x]"}});
        assert_eq!(missing_nori(400, &other), None);
        let analyzer = json!({"error": {"type": "mapper_parsing_exception",
            "reason": "Failed to parse mapping [_doc]: analyzer [nori] has not been configured in mappings"}});
        assert!(missing_nori(400, &analyzer).is_some());
    }

    fn entries(file: &str) -> Vec<Value> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/analysis")
            .join(file);
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| json!(l))
            .collect()
    }

    #[test]
    fn the_shipped_index_files_carry_the_shipped_dictionary_and_synonyms() {
        // scripts/render-analysis copies them; this fails when a file was
        // edited and not rendered.
        let dictionary = entries("user_dictionary.txt");
        let synonyms = entries("synonyms.txt");
        assert!(dictionary.iter().any(|e| e == "설악산"));
        for f in ["cards.json", "replies.json"] {
            let a = &shipped(f)["settings"]["analysis"];
            assert_eq!(
                a["tokenizer"]["ko_nori"]["user_dictionary_rules"],
                json!(dictionary),
                "{f}: run scripts/render-analysis"
            );
            assert_eq!(
                a["filter"]["ko_synonyms"]["synonyms"],
                json!(synonyms),
                "{f}: run scripts/render-analysis"
            );
        }
    }

    fn live(tokenizer_type: &str, meta: Value) -> Value {
        // The shape of GET _settings / _mapping: values as strings.
        json!({
            "settings": {"index": {"analysis": {"tokenizer": {"ko_nori": {"type": tokenizer_type}}}}},
            "mappings": {"_meta": {"analysis": meta}}
        })
    }

    #[test]
    fn comparison_with_the_live_index() {
        let file = shipped("cards.json");
        let meta = file["mappings"]["_meta"]["analysis"].clone();
        let same = compare(
            "cards",
            "cards-000001",
            &live("nori_tokenizer", meta.clone()),
            &file,
        );
        assert_eq!(same.analysis, AnalysisMode::Nori);
        assert!(!same.reindex_needed);
        assert_eq!(same.live_revision, same.shipped_revision);
        assert!(same.live_revision.is_some());

        let old = json!({"revision": 0, "fingerprint": "sha256:old"});
        let stale = compare("cards", "cards-000001", &live("nori_tokenizer", old), &file);
        assert!(stale.reindex_needed);
        assert_eq!(stale.live_revision, Some(0));

        let mut fb_meta = meta.clone();
        fb_meta["mode"] = json!("cjk_fallback");
        fb_meta["fallback_reason"] = json!("Unknown tokenizer type [nori_tokenizer]");
        let fb = compare("cards", "cards-000001", &live("standard", fb_meta), &file);
        assert_eq!(fb.analysis, AnalysisMode::CjkFallback);
        assert!(
            fb.reindex_needed,
            "a fallback is never what the file asks for"
        );
        assert_eq!(
            fb.fallback_reason.as_deref(),
            Some("Unknown tokenizer type [nori_tokenizer]")
        );

        let before = compare(
            "cards",
            "cards-000001",
            &live("standard", Value::Null),
            &file,
        );
        assert_eq!(before.analysis, AnalysisMode::WithoutNori);
        assert!(before.reindex_needed);
        assert_eq!(before.live_revision, None);
    }
}
