//! Peer of es-sync: Vector (kafka source -> remap -> elasticsearch sink, a
//! build with only those components), an arm of the sync phase: on the
//! topics `mongo-source` wrote, into fresh indices made from
//! `config/indices/`. Documents/s from the first poll that saw documents
//! indexed to the one that saw all (`indexing.index_total` of the indices'
//! primaries, polled every 100 ms); RSS from `/proc`.

use crate::clients::es::Es;
use crate::ctx::Ctx;
use crate::peers;
use crate::process::{procmon, Child};
use crate::stats::round;
use crate::templates::Batching;
use anyhow::Result;
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

/// Sink settings: es-sync's batch limits (filled in by [`sink_settings`])
/// and Vector's own adaptive request concurrency (ARC), as Vector is run
/// when tuned for throughput; acknowledgements on, so that Kafka offsets
/// are committed after Elasticsearch acknowledged, as es-sync commits.
pub fn sink_settings(b: &Batching) -> Vec<String> {
    vec![
        format!("batch.max_events = {}", b.bulk_max_actions),
        format!("batch.max_bytes = {}", b.bulk_max_bytes),
        format!("batch.timeout_secs = {}", b.bulk_linger_ms as f64 / 1000.0),
        "request.concurrency = \"adaptive\"".to_string(),
        "acknowledgements.enabled = true".to_string(),
    ]
}

fn config(cx: &Ctx, dir: &Path, topics: &[String], group: &str, prefix: &str) -> String {
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
        kafka = cx.o.kafka,
        es = cx.o.es,
        vrl = VRL,
        sink = sink_settings(&cx.batching).join("\n"),
    )
}

/// Documents indexed into `{prefix}-*` (primaries' `index_total`).
async fn indexed(es: &Es, prefix: &str) -> f64 {
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

/// One trial: Vector over `topics` (`n` records) into fresh indices
/// `{prefix}-*`, deleted afterwards.
pub async fn trial(cx: &Ctx, bin: &Path, topics: &[String], n: u64, prefix: &str) -> Result<Value> {
    cx.es.create_indices(&cx.o.repo, prefix).await?;
    let dir = cx.work(&format!("peers-{prefix}"));
    std::fs::create_dir_all(dir.join("data"))?;
    let file = dir.join("vector.toml");
    std::fs::write(
        &file,
        config(cx, &dir, topics, &format!("{prefix}-vector"), prefix),
    )?;
    let mut cmd = cx.pin.command(bin);
    cmd.arg("--config").arg(&file).env("VECTOR_LOG", "warn");
    let log_file = dir.join("vector.log");
    let t0 = Instant::now();
    let mut v = Child::spawn(cmd, String::new(), &log_file)?;
    let before = v.mon.now();
    let servers0 = cx.o.servers.mark();
    let c = peers::count_until(
        "Vector",
        n,
        t0,
        peers::catch_up_timeout(n),
        &mut [&mut v],
        || indexed(&cx.es, prefix),
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
    });
    let after = v.mon.now();
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    let u = procmon::usage(&v.mon.samples(), before, after, n);
    v.stop().await?;
    cx.es.delete_indices(prefix).await;
    let c = c?;
    Ok(json!({
        "docs_per_s": round(c.rate(n), 0),
        "first_documents_after_spawn_s": round(c.first, 2),
        "resources": u.json(),
        "servers_cpu": servers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_toml_naming_the_topics_the_prefixed_indices_and_adaptive_concurrency() {
        let cx = crate::peers::tests::ctx();
        let text = config(
            &cx,
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
            v["sinks"]["es"]["request"]["concurrency"].as_str(),
            Some("adaptive")
        );
        let max = i64::try_from(cx.batching.bulk_max_actions).expect("i64");
        assert_eq!(
            v["sinks"]["es"]["batch"]["max_events"].as_integer(),
            Some(max)
        );
        let vrl = v["transforms"]["doc"]["source"].as_str().expect("vrl");
        assert!(vrl.contains("\"cards\"") && vrl.contains("\"replies\""));
    }
}
