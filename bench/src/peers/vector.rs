//! Peer: Vector (kafka source -> remap -> elasticsearch sink, a build with
//! only those components) vs `es-sync`, on the topics `mongo-source` wrote
//! in phase 1, into fresh indices made from `config/indices/`. Documents/s
//! from the first poll that saw documents indexed to the one that saw all
//! (`indexing.index_total` of the indices' primaries, polled every 100 ms);
//! RSS from `/proc`.

use crate::peers::{self, ratio};
use crate::{es, log, procmon, round, usage_json, Opts};
use anyhow::{Context as _, Result};
use elasticsearch::http::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// The VRL program: the event's document as plain JSON (relaxed Extended
/// JSON `$date` and `$oid` unwrapped, as es-sync's `to_search_json` does for
/// the workload's types), without `_id`, with a `_sync` object like
/// es-sync's; index, id and external version go in fields the sink reads and
/// leaves out of the body.
const VRL: &str = r#"
ev = .
coll = string!(ev.ns.coll)
doc = object!(parse_json!(replace(encode_json(ev.doc), r'\{"\$(?:date|oid)":("[^"]*")\}', "$1")))
id = doc._id
del(doc._id)
doc._sync = {"version": ev.version, "op": ev.op, "ns": string!(ev.ns.db) + "." + coll, "partition": ev.partition, "cluster_time": ev.cluster_time}
doc._vid = id
doc._vver = ev.version
doc._vidx = if coll == "card" { "cards" } else { "replies" }
. = doc
"#;

/// Sink settings chosen to match es-sync's shipped bulk defaults (1000
/// actions, 5 MiB, 4 in flight, 50 ms linger) and its delivery (offsets
/// committed after Elasticsearch acknowledged).
const SINK_SETTINGS: &[&str] = &[
    "batch.max_events = 1000",
    "batch.max_bytes = 5242880",
    "batch.timeout_secs = 0.05",
    "request.concurrency = 4",
    "acknowledgements.enabled = true",
];

fn config(o: &Opts, dir: &Path, topics: &[String], group: &str, prefix: &str) -> String {
    let topics = topics
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"data_dir = "{data}"

[sources.kafka]
type = "kafka"
bootstrap_servers = "{kafka}"
group_id = "{group}"
topics = [{topics}]
auto_offset_reset = "beginning"
decoding.codec = "json"
librdkafka_options."isolation.level" = "read_committed"

[transforms.doc]
type = "remap"
inputs = ["kafka"]
source = '''{vrl}'''

[sinks.es]
type = "elasticsearch"
inputs = ["doc"]
endpoints = ["{es}"]
api_version = "v7"
mode = "bulk"
bulk.action = "index"
bulk.index = "{prefix}-{{{{ _vidx }}}}"
bulk.version = "{{{{ _vver }}}}"
bulk.version_type = "external"
id_key = "_vid"
encoding.except_fields = ["_vid", "_vver", "_vidx"]
{sink}
"#,
        data = dir.join("data").display(),
        kafka = o.kafka,
        es = o.es,
        vrl = VRL,
        sink = SINK_SETTINGS.join("\n"),
    )
}

/// Documents indexed into `{prefix}-*` (primaries' `index_total`).
async fn indexed(es: &es::Es, prefix: &str) -> f64 {
    match es
        .call(Method::Get, &format!("/{prefix}-*/_stats/indexing"), None)
        .await
    {
        Ok((200, v)) => v["_all"]["primaries"]["indexing"]["index_total"]
            .as_f64()
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Runs Vector on phase 1's topics (`src`) and compares with phase 2 (`sync`).
pub async fn run(o: &Opts, bin: &Path, src: &Value, sync: &Value) -> Result<Value> {
    let db = src["names"]["db"]
        .as_str()
        .context("phase 1 has no names")?;
    let base = src["names"]["prefix"].as_str().context("phase 1 prefix")?;
    let topics: Vec<String> = ["card", "reply"]
        .iter()
        .map(|c| format!("{base}.{db}.{c}"))
        .collect();
    let prefix = format!("{base}v");
    let es = es::Es::new(&o.es)?;
    peers::create_indices(o, &es, &prefix).await?;
    let dir = o.work.join(format!("peers-{prefix}"));
    std::fs::create_dir_all(dir.join("data"))?;
    let file = dir.join("vector.toml");
    let group = format!("{prefix}-vector");
    std::fs::write(&file, config(o, &dir, &topics, &group, &prefix))?;
    let n = o.docs;
    log(&format!(
        "[peers] Vector on {} ({n} records)",
        topics.join(", ")
    ));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config").arg(&file).env("VECTOR_LOG", "warn");
    let t0 = Instant::now();
    let mut v = peers::spawn(cmd, String::new(), &dir.join("vector.log"))?;
    let before = v.mon.now();
    let log_file = dir.join("vector.log");
    let c = peers::count_until(
        "Vector",
        n,
        t0,
        peers::catch_up_timeout(n),
        &mut [&mut v],
        || indexed(&es, &prefix),
    )
    .await
    .map_err(|e| {
        let last_error = std::fs::read_to_string(&log_file)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| l.contains("ERROR"))
                    .map(String::from)
            })
            .unwrap_or_else(|| "none".into());
        anyhow::anyhow!("{e:#}; last error in {}: {last_error}", log_file.display())
    })?;
    let after = v.mon.now();
    let u = procmon::usage(&v.mon.samples(), before, after, n);
    v.stop().await?;
    let peer = c.rate(n);
    let ours = sync["es_sync"]["docs_per_s"].as_f64().unwrap_or(0.0);
    let ours_rss = sync["es_sync"]["resources"]["steady_rss_mib"]
        .as_f64()
        .unwrap_or(0.0);
    log(&format!(
        "[peers] Vector: {peer:.0} docs/s (first {:.2} s after spawn), RSS steady {:.1} MiB; es-sync {ours:.0} docs/s, {ours_rss:.1} MiB",
        c.first, u.steady_rss_mib
    ));
    Ok(json!({
        "status": "run",
        "documents": n,
        "docs_per_s": round(peer, 0),
        "first_documents_after_spawn_s": round(c.first, 2),
        "resources": usage_json(&u),
        "sink_settings": SINK_SETTINGS,
        "es_sync_docs_per_s": ours,
        "es_sync_steady_rss_mib": ours_rss,
        "ratio_docs_per_s": ratio(ours, peer),
        "ratio_steady_rss": ratio(ours_rss, u.steady_rss_mib),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_toml_naming_the_topics_and_the_prefixed_indices() {
        let o = crate::peers::tests::opts();
        let text = config(
            &o,
            Path::new("/d"),
            &["a.db.card".into(), "a.db.reply".into()],
            "g",
            "px",
        );
        let v: toml::Value = toml::from_str(&text).expect("TOML");
        let topics = v["sources"]["kafka"]["topics"].as_array().expect("topics");
        assert_eq!(topics.len(), 2);
        // Vector refuses a template field without a literal prefix.
        assert_eq!(
            v["sinks"]["es"]["bulk"]["index"].as_str(),
            Some("px-{{ _vidx }}")
        );
        assert_eq!(
            v["sinks"]["es"]["request"]["concurrency"].as_integer(),
            Some(4)
        );
        let vrl = v["transforms"]["doc"]["source"].as_str().expect("vrl");
        assert!(vrl.contains("\"cards\"") && vrl.contains("\"replies\""));
    }
}
