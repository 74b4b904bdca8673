//! Sync phase: `es-sync` against straight `_bulk` (and Vector, when
//! installed) on the topics the source phase's warm-up round wrote.
//!
//! An unmeasured es-sync pass first warms the node and leaves the documents
//! the `_bulk` baseline sends (read back once). Every trial indexes all
//! records into fresh indices, deleted afterwards; before each trial the
//! bench waits until the node runs no merge, so that no trial shares the
//! node with the merging of the one before. es-sync's counters are sampled
//! every 100 ms: documents done (throughput, stalls), the backpressure
//! pause, the bulks in flight.

use crate::baseline;
use crate::clients::metrics::{self, ES_SYNC_COLUMNS};
use crate::ctx::Ctx;
use crate::log::log;
use crate::ours;
use crate::peers::vector;
use crate::phases::watch::{trial_timeout, Watch};
use crate::phases::{column_at, compare, failed, merge, resources, servers_cpu};
use crate::stats::{fraction_set, histogram_mean, rate, round, stalls, summary_json};
use crate::templates::Names;
use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest wait for merges to finish between trials.
const MERGE_WAIT: Duration = Duration::from_secs(60);

/// The names of the topics a source phase left for this one.
pub fn names_of(src: &Value) -> Result<Names> {
    Ok(Names {
        db: src["names"]["db"]
            .as_str()
            .context("no source names")?
            .to_string(),
        prefix: src["names"]["prefix"]
            .as_str()
            .context("no source prefix")?
            .to_string(),
    })
}

/// The phase over the topics of `src` (`n` records).
pub async fn run(cx: &Ctx, src: &Value, tag: &str) -> Result<Value> {
    let names = names_of(src)?;
    let n = src["documents"].as_u64().context("no source documents")?;
    // Warm-up: an unmeasured es-sync pass (a cold node ran the first pass
    // at a third of its warm rate); its documents feed the baseline.
    let warm_alias = format!("{}-{tag}w", names.prefix);
    let warm = trial(cx, &names, n, &warm_alias, &format!("{tag}w"), None).await?;
    let docs_file = cx.work(&format!("bulk-docs-{tag}.jsonl"));
    let read = baseline::bulk::read_back(&cx.es, &warm_alias, &docs_file).await?;
    cx.es.delete_indices(&warm_alias).await;
    if read < n {
        bail!("read back {read} of {n} documents from {warm_alias}");
    }
    let warm_bulk = baseline::bulk::trial(
        cx,
        &docs_file,
        &format!("{}-{tag}bw", names.prefix),
        &format!("{tag}bw"),
    )
    .await?;
    log(&format!(
        "[{tag}] warm-up: es-sync {} docs/s, _bulk {} docs/s",
        warm["docs_per_s"], warm_bulk["docs_per_s"]
    ));
    let vector_bin = cx.o.peers.vector_bin.clone();
    let mut trials = vec![];
    let mut merge_waits = vec![];
    for i in 0..cx.o.trials {
        let mut row = json!({});
        merge_waits.push(cx.es.wait_merges(MERGE_WAIT).await?);
        let alias = format!("{}-{tag}t{i}", names.prefix);
        row["ours"] = trial(cx, &names, n, &alias, &format!("{tag}t{i}"), None).await?;
        cx.es.delete_indices(&alias).await;
        merge_waits.push(cx.es.wait_merges(MERGE_WAIT).await?);
        let prefix = format!("{}-{tag}b{i}", names.prefix);
        row["bulk"] = baseline::bulk::trial(cx, &docs_file, &prefix, &format!("{tag}b{i}"))
            .await
            .unwrap_or_else(|e| failed(&e));
        if let Some(bin) = &vector_bin {
            merge_waits.push(cx.es.wait_merges(MERGE_WAIT).await?);
            let prefix = format!("{}-{tag}v{i}", names.prefix);
            row["vector"] = vector::trial(cx, bin, &names.topics(), n, &prefix)
                .await
                .unwrap_or_else(|e| failed(&e));
        }
        log(&format!(
            "[{tag}] trial {i}: es-sync {} docs/s (stalled {} of intervals, paused {}, {} bulks in flight), _bulk {}, Vector {}",
            row["ours"]["docs_per_s"],
            row["ours"]["stalls"]["fraction"],
            row["ours"]["paused_fraction"],
            row["ours"]["bulk_in_flight_mean"],
            row["bulk"]["docs_per_s"],
            row["vector"]["docs_per_s"]
        ));
        trials.push(row);
    }
    let mut profile = Value::Null;
    if let Some(dir) = &cx.o.profile_dir {
        cx.es.wait_merges(MERGE_WAIT).await?;
        let alias = format!("{}-{tag}p", names.prefix);
        let p = trial(cx, &names, n, &alias, &format!("{tag}p"), Some(dir)).await;
        cx.es.delete_indices(&alias).await;
        profile = p?["profile"].take();
    }
    let mut out = json!({
        "documents": n,
        "topics": names.topics(),
        "warmup": {"ours": warm, "bulk": warm_bulk},
        "vs_bulk": compare(&trials, "ours", "bulk", "docs_per_s"),
        "ours_resources": resources(&trials, "ours"),
        "bulk_resources": resources(&trials, "bulk"),
        "servers_cpu": {"ours": servers_cpu(&trials, "ours"), "bulk": servers_cpu(&trials, "bulk"), "vector": servers_cpu(&trials, "vector")},
        "stalled_fraction": summary_json(&column_at(&trials, "ours", &["stalls", "fraction"]), 3),
        "paused_fraction": summary_json(&column_at(&trials, "ours", &["paused_fraction"]), 3),
        "bulk_in_flight_mean": summary_json(&column_at(&trials, "ours", &["bulk_in_flight_mean"]), 2),
        "merge_wait_s": summary_json(&merge_waits, 1),
        "profile": profile,
    });
    if vector_bin.is_some() {
        out["vs_vector"] = compare(&trials, "ours", "vector", "docs_per_s");
        out["vector_resources"] = resources(&trials, "vector");
        out["vector_settings"] = json!(vector::sink_settings(&cx.batching));
    }
    out["trials"] = json!(trials);
    Ok(out)
}

/// One es-sync trial: a new group over the topics of `names` (`n` records)
/// into fresh aliases `{alias}-*` (the caller deletes them). With
/// `profile`, perf records it into that directory.
pub async fn trial(
    cx: &Ctx,
    names: &Names,
    n: u64,
    alias: &str,
    tag: &str,
    profile: Option<&Path>,
) -> Result<Value> {
    trial_with(cx, names, n, alias, tag, profile, false).await
}

/// [`trial`], with the shipped `[rollup]` when `rollup` is set (its
/// profile is then named `es-sync-rollup`).
pub async fn trial_with(
    cx: &Ctx,
    names: &Names,
    n: u64,
    alias: &str,
    tag: &str,
    profile: Option<&Path>,
    rollup: bool,
) -> Result<Value> {
    let t_spawn = Instant::now();
    let mut child =
        ours::spawn_sync_with(cx, names, &format!("{alias}-g"), alias, tag, None, rollup)?;
    let label = if rollup { "es-sync-rollup" } else { "es-sync" };
    let watch = Watch::start(
        cx,
        &child,
        t_spawn,
        ES_SYNC_COLUMNS,
        Duration::from_millis(100),
        profile.map(|dir| (dir, label.to_string())),
    )?;
    let timeout = trial_timeout(n);
    while watch.sampler().latest("docs") < n as f64 {
        child.check_alive("es-sync")?;
        if t_spawn.elapsed() > timeout {
            bail!(
                "es-sync: {} of {n} after {timeout:?}",
                watch.sampler().latest("docs")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = watch.finish(cx, &child, n).await?;
    let requests = request_counts(&child.admin).await;
    child.stop().await?;
    let samples = &w.samples;
    let docs = samples.column("docs");
    let figures = catch_up_figures(
        &docs,
        &samples.column("paused"),
        &samples.column("in_flight_sum"),
        &samples.column("in_flight_count"),
        n,
    );
    let mut out = json!({
        "docs_per_s": round(figures.rate, 0),
        "docs_per_s_incl_startup": round(rate(n, figures.done), 0),
        "first_documents_after_spawn_s": round(figures.first, 2),
        "stalls": stalls(&docs).json(),
        "paused_fraction": round(figures.paused_fraction, 3),
        "bulk_in_flight_mean": figures.in_flight_mean.map(|m| round(m, 2)),
        "series": samples.json(),
        "requests": requests,
    });
    merge(&mut out, w.json);
    Ok(out)
}

/// es-sync's requests to Elasticsearch at the end of a trial: bulks of
/// records, the roll-up's own requests, and the records done per index
/// (from its `/metrics`; `null` if it did not answer).
async fn request_counts(admin: &str) -> Value {
    let Some(text) = metrics::scrape(admin).await else {
        return Value::Null;
    };
    let mut per_index = serde_json::Map::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("es_sync_documents_total{") else {
            continue;
        };
        let index = rest
            .split_once("index=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(i, _)| i.to_string());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(index), Some(value)) = (index, value) {
            let sum = per_index.get(&index).and_then(Value::as_f64).unwrap_or(0.0) + value;
            per_index.insert(index, json!(sum));
        }
    }
    json!({
        "bulks": metrics::metric_sum(&text, "es_sync_bulk_in_flight_count"),
        "rollup": metrics::metric_sum(&text, "es_sync_rollup_requests_total"),
        "rollups_written": metrics::metric_sum(&text, "es_sync_rollups_total"),
        "documents_per_index": per_index,
    })
}

/// What a catch-up's sampled counters say.
#[derive(Debug, PartialEq)]
pub struct CatchUp {
    /// First sample with documents done, seconds.
    pub first: f64,
    /// First sample with all `n` done, seconds.
    pub done: f64,
    /// Documents/s from `first` to `done` (those seen at `first` left out).
    pub rate: f64,
    /// Share of the samples in `[first, done]` with the consumer paused.
    pub paused_fraction: f64,
    /// Mean bulks in flight when a bulk started, over `[first, done]`.
    pub in_flight_mean: Option<f64>,
}

/// The figures of a catch-up from its `[t, value]` columns.
pub fn catch_up_figures(
    docs: &[[f64; 2]],
    paused: &[[f64; 2]],
    in_flight_sum: &[[f64; 2]],
    in_flight_count: &[[f64; 2]],
    n: u64,
) -> CatchUp {
    let first = docs
        .iter()
        .find(|p| p[1] > 0.0)
        .copied()
        .unwrap_or([0.0, 0.0]);
    let done = docs
        .iter()
        .find(|p| p[1] >= n as f64)
        .copied()
        .unwrap_or_else(|| docs.last().copied().unwrap_or([0.0, 0.0]));
    let in_window = |col: &[[f64; 2]]| -> Vec<[f64; 2]> {
        col.iter()
            .filter(|p| p[0] >= first[0] && p[0] <= done[0])
            .copied()
            .collect()
    };
    let paused: Vec<f64> = in_window(paused).iter().map(|p| p[1]).collect();
    let (sums, counts) = (in_window(in_flight_sum), in_window(in_flight_count));
    let in_flight_mean = match (sums.first(), sums.last(), counts.first(), counts.last()) {
        (Some(s0), Some(s1), Some(c0), Some(c1)) => {
            // From the sample before the window (bulks started before the
            // first documents were done count too).
            let before = |col: &[[f64; 2]], at: [f64; 2]| {
                col.iter()
                    .rev()
                    .find(|p| p[0] < first[0])
                    .copied()
                    .unwrap_or(at)
            };
            let (s0, c0) = (before(in_flight_sum, *s0), before(in_flight_count, *c0));
            histogram_mean(s0[1], c0[1], s1[1], c1[1])
        }
        _ => None,
    };
    CatchUp {
        first: first[0],
        done: done[0],
        rate: rate((n as f64 - first[1]).max(0.0) as u64, done[0] - first[0]),
        paused_fraction: fraction_set(&paused),
        in_flight_mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_figures_take_the_window_from_first_documents_to_all() {
        let docs = [
            [0.0, 0.0],
            [0.1, 0.0],
            [0.2, 100.0],
            [0.3, 100.0],
            [0.4, 600.0],
            [0.5, 1100.0],
            [0.6, 1100.0],
        ];
        let paused = [
            [0.0, 0.0],
            [0.1, 0.0],
            [0.2, 0.0],
            [0.3, 1.0],
            [0.4, 0.0],
            [0.5, 0.0],
            [0.6, 1.0],
        ];
        let sum = [
            [0.0, 0.0],
            [0.1, 2.0],
            [0.2, 4.0],
            [0.3, 4.0],
            [0.4, 10.0],
            [0.5, 13.0],
            [0.6, 13.0],
        ];
        let count = [
            [0.0, 0.0],
            [0.1, 1.0],
            [0.2, 2.0],
            [0.3, 2.0],
            [0.4, 4.0],
            [0.5, 5.0],
            [0.6, 5.0],
        ];
        let f = catch_up_figures(&docs, &paused, &sum, &count, 1100);
        assert_eq!((f.first, f.done), (0.2, 0.5));
        // 1,000 documents after the first sample's 100, in 0.3 s.
        assert!((f.rate - 1000.0 / 0.3).abs() < 1e-6, "{}", f.rate);
        // Samples 0.2..0.5: paused in one of four.
        assert_eq!(f.paused_fraction, 0.25);
        // From the sample before the window (0.1: sum 2, count 1) to 0.5
        // (13, 5): 11 / 4.
        assert_eq!(f.in_flight_mean, Some(2.75));
    }

    #[test]
    fn a_catch_up_without_samples_is_all_zero() {
        let f = catch_up_figures(&[], &[], &[], &[], 10);
        assert_eq!(f.rate, 0.0);
        assert_eq!(f.in_flight_mean, None);
    }
}
