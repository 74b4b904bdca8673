//! Baseline of es-sync: straight `_bulk`. The documents es-sync wrote, read
//! back once (their `_source` and external version), sent as `index`
//! actions with the same versions into fresh indices made from the same
//! index files, grouped like es-sync groups them (one index per request,
//! `bulk.max_actions` actions or `bulk.max_bytes` bytes per request,
//! `bulk.max_in_flight` requests at a time). Request bodies are built
//! before the clock starts. Rate = documents after the first completed
//! request / seconds from its completion to the last one's, the same count
//! es-sync's rate takes from its documents counter.
//!
//! Runs as a child process (`bench bulk-load`), pinned where es-sync runs;
//! writes its result as JSON to `--out`.

use crate::cli;
use crate::clients::es::{Es, INDEX_FILES};
use crate::ctx::Ctx;
use crate::process::Child;
use crate::stats::{rate, round};
use anyhow::{bail, Context as _, Result};
use elasticsearch::http::Method;
use futures::StreamExt as _;
use serde_json::{json, Value};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `bench bulk-load`.
#[derive(Clone, Debug)]
pub struct Args {
    /// Elasticsearch URL.
    pub es: String,
    /// JSON lines of `{"index", "id", "version", "source"}`.
    pub docs: PathBuf,
    /// Indices are `{prefix}-{index}`.
    pub prefix: String,
    /// Actions per request.
    pub max_actions: usize,
    /// Bytes per request.
    pub max_bytes: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Where the result goes (stdout when absent).
    pub out: Option<PathBuf>,
}

impl Args {
    /// From `--key value` pairs.
    pub fn parse(a: &cli::Args) -> Result<Self> {
        a.only(&[
            "es",
            "docs",
            "prefix",
            "max-actions",
            "max-bytes",
            "in-flight",
            "out",
        ])?;
        let s = Self {
            es: a.req("es")?,
            docs: a.req("docs")?.into(),
            prefix: a.req("prefix")?,
            max_actions: a.req("max-actions")?.parse()?,
            max_bytes: a.req("max-bytes")?.parse()?,
            in_flight: a.req("in-flight")?.parse()?,
            out: a.get("out").map(PathBuf::from),
        };
        if s.max_actions == 0 || s.in_flight == 0 {
            bail!("--max-actions and --in-flight must be at least 1");
        }
        Ok(s)
    }
}

/// A document to send: id, external version, `_source` JSON.
pub type Doc = (String, u64, String);

/// One request body and its action count.
#[derive(Debug, PartialEq)]
pub struct Body {
    /// NDJSON.
    pub bytes: Vec<u8>,
    /// Actions in it.
    pub actions: usize,
}

/// Request bodies of one index's documents, cut at `max_actions` actions
/// or before passing `max_bytes`.
pub fn bodies_of(index: &str, docs: &[Doc], max_actions: usize, max_bytes: usize) -> Vec<Body> {
    let mut out = vec![];
    let mut cur = Body {
        bytes: vec![],
        actions: 0,
    };
    for (id, version, source) in docs {
        let meta = json!({"index": {"_index": index, "_id": id, "version": version, "version_type": "external"}})
            .to_string();
        let len = meta.len() + source.len() + 2;
        if cur.actions > 0 && (cur.actions >= max_actions || cur.bytes.len() + len > max_bytes) {
            out.push(std::mem::replace(
                &mut cur,
                Body {
                    bytes: vec![],
                    actions: 0,
                },
            ));
        }
        cur.bytes.extend_from_slice(meta.as_bytes());
        cur.bytes.push(b'\n');
        cur.bytes.extend_from_slice(source.as_bytes());
        cur.bytes.push(b'\n');
        cur.actions += 1;
    }
    if cur.actions > 0 {
        out.push(cur);
    }
    out
}

/// The send order of several indices' bodies: always the index furthest
/// behind in its share of documents sent, so that all indices are loaded
/// at once, as es-sync loads its partitions.
pub fn interleave(per_index: Vec<Vec<Body>>) -> Vec<Body> {
    let totals: Vec<usize> = per_index
        .iter()
        .map(|b| b.iter().map(|x| x.actions).sum())
        .collect();
    let mut sent = vec![0usize; per_index.len()];
    let mut queues: Vec<std::collections::VecDeque<Body>> =
        per_index.into_iter().map(Into::into).collect();
    let mut out = vec![];
    loop {
        let next = (0..queues.len())
            .filter(|i| !queues[*i].is_empty())
            .min_by(|a, b| {
                let fa = sent[*a] as f64 / totals[*a].max(1) as f64;
                let fb = sent[*b] as f64 / totals[*b].max(1) as f64;
                fa.total_cmp(&fb)
            });
        let Some(i) = next else { break };
        if let Some(b) = queues[i].pop_front() {
            sent[i] += b.actions;
            out.push(b);
        }
    }
    out
}

/// The child: builds the bodies, sends them, writes
/// `{"docs", "first_done_s", "first_done_docs", "last_done_s"}`.
pub async fn main(a: Args) -> Result<()> {
    let es = Es::new(&a.es)?;
    let mut by_index: Vec<(String, Vec<Doc>)> = INDEX_FILES
        .iter()
        .map(|(name, _)| (name.to_string(), vec![]))
        .collect();
    let file = std::fs::File::open(&a.docs).with_context(|| a.docs.display().to_string())?;
    for line in std::io::BufReader::new(file).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        let name = v["index"].as_str().context("index")?;
        let slot = by_index
            .iter_mut()
            .find(|(n, _)| n == name)
            .with_context(|| format!("unknown index {name}"))?;
        slot.1.push((
            v["id"].as_str().context("id")?.to_string(),
            v["version"].as_u64().context("version")?,
            v["source"].to_string(),
        ));
    }
    let per_index = by_index
        .iter()
        .map(|(name, docs)| {
            bodies_of(
                &format!("{}-{name}", a.prefix),
                docs,
                a.max_actions,
                a.max_bytes,
            )
        })
        .collect();
    let bodies = interleave(per_index);
    let t0 = Instant::now();
    let done: Vec<Result<(f64, usize)>> = futures::stream::iter(bodies.into_iter().map(|b| {
        let es = es.clone();
        async move {
            let (s, v) = es
                .call(
                    Method::Post,
                    "/_bulk?filter_path=errors,items.*.error",
                    Some(b.bytes),
                )
                .await?;
            if s >= 300 || v["errors"].as_bool() != Some(false) {
                bail!(
                    "_bulk: HTTP {s}: {}",
                    v.to_string().chars().take(500).collect::<String>()
                );
            }
            Ok((t0.elapsed().as_secs_f64(), b.actions))
        }
    }))
    .buffer_unordered(a.in_flight)
    .collect()
    .await;
    let mut times = vec![];
    for d in done {
        times.push(d?);
    }
    times.sort_by(|x, y| x.0.total_cmp(&y.0));
    let docs: usize = times.iter().map(|t| t.1).sum();
    let (first, first_docs) = times.first().copied().unwrap_or((0.0, 0));
    let last = times.last().map_or(0.0, |t| t.0);
    let out = json!({"docs": docs, "first_done_s": first, "first_done_docs": first_docs, "last_done_s": last, "requests": times.len(), "self": crate::process::procmon::self_report()}).to_string();
    match &a.out {
        Some(p) => std::fs::write(p, out)?,
        None => println!("{out}"),
    }
    Ok(())
}

/// Reads back what es-sync wrote into `{alias_prefix}-cards|replies` as
/// the JSON lines `bench bulk-load` takes; returns the count.
pub async fn read_back(es: &Es, alias_prefix: &str, path: &Path) -> Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut n = 0;
    for (name, _) in INDEX_FILES {
        let index = format!("{alias_prefix}-{name}");
        es.json(Method::Post, &format!("/{index}/_refresh"), None)
            .await?;
        let mut v = es
            .json(
                Method::Post,
                &format!("/{index}/_search?scroll=1m"),
                Some(json!({"size": 5000, "version": true, "query": {"match_all": {}}})),
            )
            .await?;
        loop {
            let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            for h in hits {
                let line = json!({
                    "index": name,
                    "id": h["_id"],
                    "version": h["_version"],
                    "source": h["_source"],
                });
                writeln!(f, "{line}")?;
                n += 1;
            }
            let sid = v["_scroll_id"].as_str().unwrap_or_default().to_string();
            v = es
                .json(
                    Method::Post,
                    "/_search/scroll",
                    Some(json!({"scroll": "1m", "scroll_id": sid})),
                )
                .await?;
        }
    }
    f.flush()?;
    Ok(n)
}

/// One trial: fresh indices `{prefix}-*`, `bench bulk-load` as a pinned
/// child, the indices deleted again.
pub async fn trial(cx: &Ctx, docs_file: &Path, prefix: &str, tag: &str) -> Result<Value> {
    cx.es.create_indices(&cx.o.repo, prefix).await?;
    let out = cx.work(&format!("bulk-load-{tag}.json"));
    let _ = std::fs::remove_file(&out);
    let b = &cx.batching;
    let mut cmd = cx.pin.command(std::env::current_exe()?);
    cmd.arg("bulk-load")
        .args(["--es", &cx.o.es, "--prefix", prefix])
        .arg("--docs")
        .arg(docs_file)
        .args(["--max-actions", &b.bulk_max_actions.to_string()])
        .args(["--max-bytes", &b.bulk_max_bytes.to_string()])
        .args(["--in-flight", &b.bulk_in_flight.to_string()])
        .arg("--out")
        .arg(&out);
    let child = Child::spawn(
        cmd,
        String::new(),
        &cx.work(&format!("bulk-load-{tag}.log")),
    )?;
    let mon = child.mon.clone();
    let before = mon.now();
    let servers0 = cx.o.servers.mark();
    let res = child
        .wait_exit("bulk-load", Duration::from_secs(1800))
        .await;
    let servers = cx.o.servers.share(&servers0, &cx.o.servers.mark());
    cx.es.delete_indices(prefix).await;
    res?;
    let samples = mon.samples();
    let v: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let after = crate::process::procmon::end_sample(&v["self"], &samples, before);
    let docs = v["docs"].as_u64().unwrap_or(0);
    let first_docs = v["first_done_docs"].as_u64().unwrap_or(0);
    let (f, l) = (
        v["first_done_s"].as_f64().unwrap_or(0.0),
        v["last_done_s"].as_f64().unwrap_or(0.0),
    );
    let u = crate::process::procmon::usage(&samples, before, after, docs);
    Ok(json!({
        "docs_per_s": round(rate(docs.saturating_sub(first_docs), l - f), 0),
        "docs": docs,
        "requests": v["requests"],
        "first_done_s": round(f, 3),
        "last_done_s": round(l, 3),
        "resources": u.json(),
        "servers_cpu": servers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize, size: usize) -> Vec<Doc> {
        (0..n)
            .map(|i| {
                (
                    format!("id{i}"),
                    i as u64,
                    format!("{{\"b\":\"{}\"}}", "x".repeat(size)),
                )
            })
            .collect()
    }

    #[test]
    fn bodies_are_cut_at_the_action_limit_and_before_the_byte_limit() {
        let b = bodies_of("p-cards", &docs(2500, 10), 1000, 5 << 20);
        assert_eq!(
            b.iter().map(|x| x.actions).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let first = String::from_utf8(b[0].bytes.clone()).expect("utf8");
        let mut lines = first.lines();
        let meta: Value = serde_json::from_str(lines.next().expect("meta")).expect("json");
        assert_eq!(meta["index"]["_index"], "p-cards");
        assert_eq!(meta["index"]["version_type"], "external");
        assert_eq!(meta["index"]["version"], 0);
        assert_eq!(first.lines().count(), 2000);
        // ~1,100 bytes a document, 4 KiB a request: 3 documents each.
        let small = bodies_of("p-cards", &docs(10, 1000), 1000, 4096);
        assert!(small.iter().all(|x| x.bytes.len() <= 4096));
        assert_eq!(small.iter().map(|x| x.actions).sum::<usize>(), 10);
        // One document larger than the limit still goes, alone.
        let big = bodies_of("p-cards", &docs(2, 5000), 1000, 4096);
        assert_eq!(big.len(), 2);
    }

    #[test]
    fn indices_are_interleaved_by_their_share_sent() {
        let cards = bodies_of("c", &docs(3000, 1), 1000, 1 << 20);
        let replies = bodies_of("r", &docs(1000, 1), 500, 1 << 20);
        let order: Vec<String> = interleave(vec![cards, replies])
            .iter()
            .map(|b| {
                String::from_utf8_lossy(&b.bytes[..30])
                    .contains("\"c\"")
                    .to_string()
            })
            .collect();
        // c r c r c: each index is never more than one request ahead.
        assert_eq!(order, ["true", "false", "true", "false", "true"]);
    }
}
