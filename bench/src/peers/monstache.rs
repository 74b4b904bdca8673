//! Peer: Monstache (MongoDB change streams straight into Elasticsearch) vs
//! `mongo-source` + `es-sync` end to end, on the same servers:
//!
//! - catch-up: phase 1's documents from phase 1's start time into fresh
//!   indices made from `config/indices/`; documents/s from the first poll
//!   that saw documents done to the one that saw all (Monstache: `Succeeded`
//!   of its `/stats`; ours, both binaries started together: es-sync's
//!   `es_sync_documents_total`), polled every 100 ms;
//! - latency: commit to searchable at the fixed rates of phase 3, by the same
//!   `latency_run` as ours.

use crate::latency::{latency_run, wait_flowing};
use crate::peers::{self, ratio};
use crate::{
    es, free_port, kafka, log, procmon, round, source_toml, sync_toml, usage_json, Child, Names,
    Opts,
};
use anyhow::{Context as _, Result};
use e2e_tests::workload;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Monstache settings that differ from its defaults (besides names); bulk
/// settings are its shipped defaults (4 connections, no document limit,
/// 8 MiB, flushed every second), as es-sync runs with its own.
const SETTINGS: &[&str] = &["stats = true", "enable-http-server = true"];

fn config(o: &Opts, db: &str, prefix: &str, http: &str, resume_ts: Option<u64>) -> String {
    let resume = resume_ts
        .map(|t| format!("resume-from-timestamp = {t}\n"))
        .unwrap_or_default();
    format!(
        "mongo-url = \"{mongo}\"\nelasticsearch-urls = [\"{es}\"]\n\
         change-stream-namespaces = [\"{db}.card\", \"{db}.reply\"]\n{resume}\
         http-server-addr = \"{http}\"\n{settings}\n\n\
         [[mapping]]\nnamespace = \"{db}.card\"\nindex = \"{prefix}-cards\"\n\n\
         [[mapping]]\nnamespace = \"{db}.reply\"\nindex = \"{prefix}-replies\"\n",
        mongo = o.mongo_uri,
        es = o.es,
        settings = SETTINGS.join("\n"),
    )
}

/// The `http-server-addr` of a config written by `config`.
fn http_addr(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("http-server-addr = "))
        .map(|v| v.trim_matches('"').to_string())
}

async fn start(o: &Opts, bin: &Path, name: &str, text: &str) -> Result<Child> {
    let dir = o.work.join("peers-monstache");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text)?;
    let http = http_addr(text).context("http-server-addr")?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-f").arg(&file);
    peers::spawn(cmd, http, &dir.join(format!("{name}.log")))
}

/// Documents done according to Monstache's `/stats` (`Succeeded`).
async fn succeeded(admin: &str) -> f64 {
    match es::http_get(admin, "/stats").await {
        Ok((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["Succeeded"].as_f64())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Runs both measures; `src` and `lat` are phases 1 and 3 of this run.
pub async fn run(o: &Opts, bin: &Path, src: &Value, lat: &Value) -> Result<Value> {
    let db = src["names"]["db"]
        .as_str()
        .context("phase 1 has no names")?;
    let base = src["names"]["prefix"].as_str().context("phase 1 prefix")?;
    let ts = src["start_ts"]
        .as_u64()
        .context("phase 1 has no start_ts")?;
    let es = es::Es::new(&o.es)?;
    let n = o.docs;
    let timeout = peers::catch_up_timeout(n);

    // Catch-up, Monstache.
    let prefix = format!("{base}m");
    peers::create_indices(o, &es, &prefix).await?;
    let http = format!("127.0.0.1:{}", free_port()?);
    log(&format!(
        "[peers] monstache catch-up of {db} from {ts} ({n} documents)"
    ));
    let t0 = Instant::now();
    let mut m = start(o, bin, "catch-up", &config(o, db, &prefix, &http, Some(ts))).await?;
    let before = m.mon.now();
    let admin = m.admin.clone();
    let c = peers::count_until("monstache", n, t0, timeout, &mut [&mut m], || {
        succeeded(&admin)
    })
    .await?;
    let after = m.mon.now();
    let mu = procmon::usage(&m.mon.samples(), before, after, n);
    m.stop().await?;
    let peer_rate = c.rate(n);
    log(&format!(
        "[peers] monstache: {peer_rate:.0} docs/s (first {:.2} s after spawn), RSS steady {:.1} MiB",
        c.first, mu.steady_rss_mib
    ));

    // Catch-up, ours: both binaries from the same start time.
    let names = Names {
        db: db.to_string(),
        prefix: format!("{base}o"),
    };
    kafka::create_topics(&o.kafka, &names.topics(), 3).await?;
    let (sadmin, yadmin) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let scfg = o.work.join(format!("mongo-source-{}.toml", names.prefix));
    let start_at = format!("mode = \"timestamp\"\ntimestamp = {ts}");
    std::fs::write(
        &scfg,
        source_toml(o, &o.mongo_uri, &names, &sadmin, &start_at),
    )?;
    let ycfg = o.work.join(format!("es-sync-{}.toml", names.prefix));
    let group = format!("{}-sync", names.prefix);
    std::fs::write(&ycfg, sync_toml(o, &names, &group, &yadmin))?;
    let t0 = Instant::now();
    let log_of = |b: &str| o.work.join(format!("{b}-{}.log", names.prefix));
    let mut s = Child::spawn(
        &o.bin_dir.join("mongo-source"),
        &scfg,
        sadmin,
        &log_of("mongo-source"),
    )
    .await?;
    let y = Child::spawn(
        &o.bin_dir.join("es-sync"),
        &ycfg,
        yadmin,
        &log_of("es-sync"),
    )
    .await?;
    let (s0, y0) = (s.mon.now(), y.mon.now());
    let oc = {
        let yref = &y;
        let count = || yref.metric("es_sync_documents_total");
        // `count` borrows `y`; the exit check watches mongo-source.
        peers::count_until(
            "mongo-source + es-sync",
            n,
            t0,
            timeout,
            &mut [&mut s],
            count,
        )
        .await?
    };
    let (s1, y1) = (s.mon.now(), y.mon.now());
    let su = procmon::usage(&s.mon.samples(), s0, s1, n);
    let yu = procmon::usage(&y.mon.samples(), y0, y1, n);
    s.stop().await?;
    y.stop().await?;
    let ours_rate = oc.rate(n);
    log(&format!(
        "[peers] ours end to end: {ours_rate:.0} docs/s, RSS steady source {:.1} + sync {:.1} MiB",
        su.steady_rss_mib, yu.steady_rss_mib
    ));

    let latency = latency_runs(o, bin, lat).await?;
    Ok(json!({
        "status": "run",
        "settings": SETTINGS,
        "catch_up": {
            "documents": n,
            "monstache": {
                "docs_per_s": round(peer_rate, 0),
                "first_documents_after_spawn_s": round(c.first, 2),
                "resources": usage_json(&mu),
            },
            "ours": {
                "docs_per_s": round(ours_rate, 0),
                "first_documents_after_spawn_s": round(oc.first, 2),
                "mongo_source": usage_json(&su),
                "es_sync": usage_json(&yu),
                "steady_rss_mib_sum": round(su.steady_rss_mib + yu.steady_rss_mib, 1),
            },
            "ratio_docs_per_s": ratio(ours_rate, peer_rate),
            "ratio_steady_rss": ratio(su.steady_rss_mib + yu.steady_rss_mib, mu.steady_rss_mib),
        },
        "latency": latency,
    }))
}

/// Monstache at the fixed rates of phase 3 (`lat`), new database, from now.
async fn latency_runs(o: &Opts, bin: &Path, lat: &Value) -> Result<Value> {
    let tag = format!("{}pm", crate::unix_now());
    let (db, prefix) = (format!("bench_{tag}"), format!("b{tag}"));
    let client = mongodb::Client::with_uri_str(&o.mongo_uri).await?;
    let mdb = client.database(&db);
    // The collections exist before the streams open.
    for c in ["card", "reply"] {
        mdb.collection::<Document>(c)
            .insert_one(doc! {"_id": format!("warm-{c}")})
            .await?;
    }
    let es = es::Es::new(&o.es)?;
    peers::create_indices(o, &es, &prefix).await?;
    let http = format!("127.0.0.1:{}", free_port()?);
    let m = start(o, bin, "latency", &config(o, &db, &prefix, &http, None)).await?;
    let alias = format!("{prefix}-cards");
    let cards = mdb.collection::<Document>("card");
    let mut w = workload::Workload::new(o.seed + 2);
    let flowing = wait_flowing(&es, &alias, &cards, &mut w).await?;
    log(&format!("[peers] monstache flowing after {flowing:.1} s"));
    let mut runs = vec![];
    for &r in &o.rates {
        // Monstache is both "source" and "sink": one process.
        let mut v = latency_run(o, &es, &alias, &cards, &mut w, r, &m, &m).await?;
        let changes = v["changes"].as_u64().unwrap_or(0);
        let mut res = v["mongo_source"].take();
        let cpu = res["cpu_s"].as_f64().unwrap_or(0.0);
        res["events"] = json!(changes);
        res["cpu_s_per_1k_events"] = json!(if changes > 0 {
            round(cpu * 1000.0 / changes as f64, 3)
        } else {
            0.0
        });
        if let Some(obj) = v.as_object_mut() {
            obj.remove("mongo_source");
            obj.remove("es_sync");
        }
        v["monstache"] = res;
        let ours = lat["runs"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["target_per_s"].as_u64() == Some(r)))
            .map(|x| x["latency_ms"].clone())
            .unwrap_or(Value::Null);
        v["ours_latency_ms"] = ours;
        runs.push(v);
    }
    m.stop().await?;
    Ok(json!({"runs": runs}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_each_collection_to_its_index_and_resumes_only_when_asked() {
        let text = config(&peers::tests::opts(), "db1", "p", "127.0.0.1:9", Some(17));
        let v: toml::Value = toml::from_str(&text).expect("TOML");
        assert_eq!(v["resume-from-timestamp"].as_integer(), Some(17));
        assert_eq!(v["stats"].as_bool(), Some(true));
        assert_eq!(v["enable-http-server"].as_bool(), Some(true));
        let maps = v["mapping"].as_array().expect("mappings");
        let pairs: Vec<(&str, &str)> = maps
            .iter()
            .map(|m| {
                (
                    m["namespace"].as_str().unwrap_or_default(),
                    m["index"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(pairs, [("db1.card", "p-cards"), ("db1.reply", "p-replies")]);
        assert_eq!(http_addr(&text).as_deref(), Some("127.0.0.1:9"));
        let live = config(&peers::tests::opts(), "db1", "p", "127.0.0.1:9", None);
        let v: toml::Value = toml::from_str(&live).expect("TOML");
        assert!(v.get("resume-from-timestamp").is_none());
    }
}
