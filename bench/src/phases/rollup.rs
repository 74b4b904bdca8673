//! Roll-up phase: what `[rollup]` (replies rolled up into their card,
//! `sync/src/rollup/`) costs es-sync, on the same topics as the sync phase
//! (3 cards : 1 reply, every reply pointing at a card).
//!
//! es-sync runs interleaved without and with the shipped `[rollup]` (the
//! plain arm first), each trial into fresh indices after the node's merges
//! ended; the rate is counted as in the sync phase (every record's final
//! outcome, from the first to the last). With the roll-up, replies are
//! written with `refresh=wait_for` and each request of replies is followed
//! by a search and a write of its cards' roll-ups; cards are written as
//! compare-and-sets carrying their roll-up.

use crate::ctx::Ctx;
use crate::log::log;
use crate::phases::sync::{names_of, trial_with};
use crate::phases::{column_at, compare, failed, resources, servers_cpu};
use crate::stats::summary_json;
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::time::Duration;

/// Longest wait for merges to finish between trials.
const MERGE_WAIT: Duration = Duration::from_secs(60);

/// The phase over the topics of `src`.
pub async fn run(cx: &Ctx, src: &Value, tag: &str) -> Result<Value> {
    let names = names_of(src)?;
    let n = src["documents"].as_u64().context("no source documents")?;
    // Warm-up (unmeasured): one pass of each.
    for (k, rollup) in [("wp", false), ("wr", true)] {
        cx.es.wait_merges(MERGE_WAIT).await?;
        let alias = format!("{}-{tag}{k}", names.prefix);
        let r = trial_with(cx, &names, n, &alias, &format!("{tag}{k}"), None, rollup).await;
        cx.es.delete_indices(&alias).await;
        r?;
    }
    let mut trials = vec![];
    for i in 0..cx.o.trials {
        let mut row = json!({});
        for (arm, rollup) in [("plain", false), ("rollup", true)] {
            cx.es.wait_merges(MERGE_WAIT).await?;
            let alias = format!("{}-{tag}{}{i}", names.prefix, &arm[..1]);
            row[arm] = trial_with(
                cx,
                &names,
                n,
                &alias,
                &format!("{tag}{arm}{i}"),
                None,
                rollup,
            )
            .await
            .unwrap_or_else(|e| failed(&e));
            per_reply(&mut row[arm], &alias);
            cx.es.delete_indices(&alias).await;
        }
        log(&format!(
            "[{tag}] trial {i}: es-sync {} docs/s plain, {} docs/s with [rollup]",
            row["plain"]["docs_per_s"], row["rollup"]["docs_per_s"]
        ));
        trials.push(row);
    }
    let mut profile = Value::Null;
    if let Some(dir) = &cx.o.profile_dir {
        cx.es.wait_merges(MERGE_WAIT).await?;
        let alias = format!("{}-{tag}p", names.prefix);
        let p = trial_with(cx, &names, n, &alias, &format!("{tag}p"), Some(dir), true).await;
        cx.es.delete_indices(&alias).await;
        profile = p?["profile"].take();
    }
    let mut out = json!({
        "documents": n,
        "topics": names.topics(),
        "vs_plain": compare(&trials, "rollup", "plain", "docs_per_s"),
        "rollup_resources": resources(&trials, "rollup"),
        "plain_resources": resources(&trials, "plain"),
        "servers_cpu": {"plain": servers_cpu(&trials, "plain"), "rollup": servers_cpu(&trials, "rollup")},
        "rollup_requests_per_reply": summary_json(&column_at(&trials, "rollup", &["requests", "rollup_per_reply"]), 3),
        "bulks_per_record": {
            "rollup": summary_json(&column_at(&trials, "rollup", &["requests", "bulks_per_record"]), 4),
            "plain": summary_json(&column_at(&trials, "plain", &["requests", "bulks_per_record"]), 4),
        },
        "stalled_fraction": summary_json(&column_at(&trials, "rollup", &["stalls", "fraction"]), 3),
        "profile": profile,
    });
    out["trials"] = json!(trials);
    Ok(out)
}

/// Adds to a trial's `requests` the roll-up's requests per reply and the
/// bulks per record (replies = the records done on `{alias}-replies`).
fn per_reply(trial: &mut Value, alias: &str) {
    let r = &trial["requests"];
    let replies = r["documents_per_index"][format!("{alias}-replies")].as_f64();
    let records: f64 = r["documents_per_index"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0);
    let (Some(rollup), Some(bulks)) = (r["rollup"].as_f64(), r["bulks"].as_f64()) else {
        return;
    };
    if let Some(replies) = replies.filter(|&x| x > 0.0) {
        trial["requests"]["rollup_per_reply"] = json!(rollup / replies);
    }
    if records > 0.0 {
        trial["requests"]["bulks_per_record"] = json!(bulks / records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_reply_and_per_record() {
        let mut t = json!({"requests": {"bulks": 30.0, "rollup": 40.0,
            "documents_per_index": {"a-cards": 7500.0, "a-replies": 2500.0}}});
        per_reply(&mut t, "a");
        assert_eq!(t["requests"]["rollup_per_reply"], json!(0.016));
        assert_eq!(t["requests"]["bulks_per_record"], json!(0.003));
        // A failed trial (no counts) gets neither.
        let mut f = json!({"error": "x"});
        per_reply(&mut f, "a");
        assert!(f["requests"]["rollup_per_reply"].is_null());
    }
}
