//! Peer: Monstache (MongoDB change streams straight into Elasticsearch) vs
//! `mongo-source` + `es-sync` end to end, on the same servers:
//!
//! - catch-up, interleaved (ours, Monstache, ours, ...): the source phase's
//!   documents from its start time into fresh indices made from
//!   `config/indices/`; documents/s from the first poll that saw documents
//!   done to the one that saw all (Monstache: `Succeeded` of its `/stats`;
//!   ours, both binaries started together: es-sync's
//!   `es_sync_documents_total`), polled every 100 ms;
//! - latency: commit to searchable at the fixed rates of the latency phase,
//!   by the same runs as ours, one run per rate.
//!
//! Both flush on the same interval: Monstache's `elasticsearch-max-seconds`
//! takes whole seconds (0 means its default, 1 s), so it runs with 1 s and
//! es-sync, in this comparison, with `bulk.linger_ms = 1000`. Its other
//! bulk limits are es-sync's: actions (`elasticsearch-max-docs`), bytes
//! (`elasticsearch-max-bytes`) and connections (`elasticsearch-max-conns`
//! = requests in flight).

use crate::clients::{http, kafka};
use crate::ctx::Ctx;
use crate::log::{log, unix_now};
use crate::ours;
use crate::peers;
use crate::phases::latency::{self, Target};
use crate::phases::source::Seeded;
use crate::phases::{compare, failed, resources, servers_cpu};
use crate::process::{procmon, Child};
use crate::stats::round;
use crate::templates::start_at;
use anyhow::{Context as _, Result};
use e2e_tests::workload::Workload;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Monstache's flush interval (its smallest), and es-sync's linger in this
/// comparison.
pub const FLUSH_MS: u64 = 1000;

/// Settings besides names and addresses: the stats endpoint, and es-sync's
/// bulk limits.
pub fn settings(cx: &Ctx) -> Vec<String> {
    let b = &cx.batching;
    vec![
        "stats = true".into(),
        "enable-http-server = true".into(),
        format!("elasticsearch-max-docs = {}", b.bulk_max_actions),
        format!("elasticsearch-max-bytes = {}", b.bulk_max_bytes),
        format!("elasticsearch-max-conns = {}", b.bulk_in_flight),
        format!("elasticsearch-max-seconds = {}", FLUSH_MS / 1000),
    ]
}

fn config(
    cx: &Ctx,
    uri: &str,
    db: &str,
    prefix: &str,
    http: &str,
    resume_ts: Option<u32>,
) -> String {
    let resume = resume_ts
        .map(|t| format!("resume-from-timestamp = {t}\n"))
        .unwrap_or_default();
    format!(
        "mongo-url = \"{uri}\"\nelasticsearch-urls = [\"{es}\"]\n\
         change-stream-namespaces = [\"{db}.card\", \"{db}.reply\"]\n{resume}\
         http-server-addr = \"{http}\"\n{settings}\n\n\
         [[mapping]]\nnamespace = \"{db}.card\"\nindex = \"{prefix}-cards\"\n\n\
         [[mapping]]\nnamespace = \"{db}.reply\"\nindex = \"{prefix}-replies\"\n",
        es = cx.o.es,
        settings = settings(cx).join("\n"),
    )
}

fn start(cx: &Ctx, bin: &Path, name: &str, text: &str, http: String) -> Result<Child> {
    let dir = cx.work("peers-monstache");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text)?;
    let mut cmd = cx.pin.command(bin);
    cmd.arg("-f").arg(&file);
    Child::spawn(cmd, http, &dir.join(format!("{name}.log")))
}

/// Documents done according to Monstache's `/stats` (`Succeeded`).
pub async fn succeeded(admin: &str) -> f64 {
    match http::get(admin, "/stats").await {
        Ok((200, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["Succeeded"].as_f64())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// One Monstache catch-up of `db` into `{prefix}-*`.
async fn monstache_trial(cx: &Ctx, bin: &Path, db: &Seeded, prefix: &str) -> Result<Value> {
    let n = db.docs;
    cx.es.create_indices(&cx.o.repo, prefix).await?;
    let http = cx.ports.addr()?;
    let text = config(cx, &db.uri, &db.names.db, prefix, &http, Some(db.ts));
    let t0 = Instant::now();
    let servers0 = cx.o.servers.mark();
    let mut m = start(cx, bin, prefix, &text, http)?;
    let before = m.mon.now();
    let admin = m.admin.clone();
    let c = peers::count_until(
        "monstache",
        n,
        t0,
        peers::catch_up_timeout(n),
        &mut [&mut m],
        || succeeded(&admin),
    )
    .await;
    let after = m.mon.now();
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    let u = procmon::usage(&m.mon.samples(), before, after, n);
    m.stop().await?;
    cx.es.delete_indices(prefix).await;
    let c = c?;
    Ok(json!({
        "docs_per_s": round(c.rate(n), 0),
        "first_documents_after_spawn_s": round(c.first, 2),
        "resources": u.json(),
        "servers_cpu": servers,
    }))
}

/// One catch-up of ours: both binaries started together from `db`'s start
/// time into fresh topics `{prefix}.*` and aliases `{prefix}-*`.
async fn ours_trial(cx: &Ctx, db: &Seeded, prefix: &str) -> Result<Value> {
    let n = db.docs;
    let names = db.names.with_prefix(prefix.to_string());
    kafka::create_topics(&cx.o.kafka, &names.topics(), cx.o.partitions).await?;
    let t0 = Instant::now();
    let servers0 = cx.o.servers.mark();
    let mut s = ours::spawn_source(cx, &db.uri, &names, start_at(db.ts), "exactly_once", prefix)?;
    let y = ours::spawn_sync(
        cx,
        &names,
        &format!("{prefix}-g"),
        prefix,
        prefix,
        Some(FLUSH_MS),
    )?;
    let (s0, y0) = (s.mon.now(), y.mon.now());
    let c = {
        let yref = &y;
        let count = || yref.metric("es_sync_documents_total");
        peers::count_until(
            "mongo-source + es-sync",
            n,
            t0,
            peers::catch_up_timeout(n),
            &mut [&mut s],
            count,
        )
        .await
    };
    let (s1, y1) = (s.mon.now(), y.mon.now());
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    let su = procmon::usage(&s.mon.samples(), s0, s1, n);
    let yu = procmon::usage(&y.mon.samples(), y0, y1, n);
    s.stop().await?;
    y.stop().await?;
    cx.es.delete_indices(prefix).await;
    let c = c?;
    Ok(json!({
        "docs_per_s": round(c.rate(n), 0),
        "first_documents_after_spawn_s": round(c.first, 2),
        "mongo_source": su.json(),
        "es_sync": yu.json(),
        "resources": {
            "steady_rss_mib": round(su.steady_rss_mib + yu.steady_rss_mib, 1),
            "peak_rss_mib": round(su.peak_rss_mib + yu.peak_rss_mib, 1),
            "cpu_s_per_1k_events": round(su.cpu_s_per_1k + yu.cpu_s_per_1k, 3),
            "cpu_share": round(su.cpu_share + yu.cpu_share, 3),
        },
        "servers_cpu": servers,
    }))
}

/// Runs both measures on the source phase's database `db`; `lat` is the
/// latency phase of this run (ours, for the side by side).
pub async fn run(cx: &Ctx, bin: &Path, db: &Seeded, lat: &Value) -> Result<Value> {
    log(&format!(
        "[peers] monstache vs ours, catch-up of {} from {} ({} documents), {} trials",
        db.names.db, db.ts, db.docs, cx.o.trials
    ));
    let base = format!("{}m", db.names.prefix);
    let _ = monstache_trial(cx, bin, db, &format!("{base}mw")).await?;
    let _ = ours_trial(cx, db, &format!("{base}ow")).await?;
    let mut trials = vec![];
    for i in 0..cx.o.trials {
        let mut row = json!({});
        cx.es
            .wait_merges(std::time::Duration::from_secs(60))
            .await?;
        row["ours"] = ours_trial(cx, db, &format!("{base}o{i}")).await?;
        cx.es
            .wait_merges(std::time::Duration::from_secs(60))
            .await?;
        row["monstache"] = monstache_trial(cx, bin, db, &format!("{base}m{i}"))
            .await
            .unwrap_or_else(|e| failed(&e));
        log(&format!(
            "[peers] trial {i}: ours {} docs/s, monstache {}",
            row["ours"]["docs_per_s"], row["monstache"]["docs_per_s"]
        ));
        trials.push(row);
    }
    let latency = latency_runs(cx, bin, lat)
        .await
        .unwrap_or_else(|e| failed(&e));
    Ok(json!({
        "status": "run",
        "settings": settings(cx),
        "es_sync_linger_ms": FLUSH_MS,
        "catch_up": {
            "documents": db.docs,
            "vs_monstache": compare(&trials, "ours", "monstache", "docs_per_s"),
            "ours_resources": resources(&trials, "ours"),
            "monstache_resources": resources(&trials, "monstache"),
            "servers_cpu": {"ours": servers_cpu(&trials, "ours"), "monstache": servers_cpu(&trials, "monstache")},
            "trials": trials,
        },
        "latency": latency,
    }))
}

/// Monstache at the fixed rates of the latency phase (`lat`), one run per
/// rate, on a new database, from now, on the latency phase's server.
async fn latency_runs(cx: &Ctx, bin: &Path, lat: &Value) -> Result<Value> {
    let uri = lat["server"]
        .as_str()
        .context("the latency phase did not run")?
        .to_string();
    let tag = format!("{}pm", unix_now());
    let (db, prefix) = (format!("bench_{tag}"), format!("b{tag}"));
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let mdb = client.database(&db);
    for c in ["card", "reply"] {
        mdb.collection::<Document>(c)
            .insert_one(doc! {"_id": format!("warm-{c}")})
            .await?;
    }
    cx.es.create_indices(&cx.o.repo, &prefix).await?;
    let http = cx.ports.addr()?;
    let m = start(
        cx,
        bin,
        "latency",
        &config(cx, &uri, &db, &prefix, &http, None),
        http,
    )?;
    let alias = format!("{prefix}-cards");
    let cards = mdb.collection::<Document>("card");
    let mut w = Workload::new(cx.o.seed + 2);
    let flowing = latency::wait_flowing(&cx.es, &alias, &cards, &mut w).await?;
    log(&format!("[peers] monstache flowing after {flowing:.1} s"));
    let target = Target {
        alias: &alias,
        cards: &cards,
        procs: vec![("monstache", &m)],
        track: Arc::default(),
    };
    let mut runs = vec![];
    let mut tick = 0i64;
    latency::warm_up(cx, &target, &mut w, &mut tick).await?;
    for &r in &cx.o.rates {
        runs.push(latency::run_at_rate(cx, &target, &mut w, r, cx.o.rate_secs, &mut tick).await?);
    }
    drop(target);
    m.stop().await?;
    cx.es.delete_indices(&prefix).await;
    Ok(json!({"rates": latency::pool(&cx.o.rates, &runs)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_each_collection_flushes_like_es_sync_and_resumes_only_when_asked() {
        let cx = peers::tests::ctx();
        let text = config(&cx, "mongodb://m", "db1", "p", "127.0.0.1:9", Some(17));
        let v: toml::Value = toml::from_str(&text).expect("TOML");
        assert_eq!(v["resume-from-timestamp"].as_integer(), Some(17));
        assert_eq!(v["stats"].as_bool(), Some(true));
        assert_eq!(v["elasticsearch-max-seconds"].as_integer(), Some(1));
        let docs = i64::try_from(cx.batching.bulk_max_actions).expect("i64");
        assert_eq!(v["elasticsearch-max-docs"].as_integer(), Some(docs));
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
        let live = config(&cx, "mongodb://m", "db1", "p", "127.0.0.1:9", None);
        let v: toml::Value = toml::from_str(&live).expect("TOML");
        assert!(v.get("resume-from-timestamp").is_none());
    }
}
