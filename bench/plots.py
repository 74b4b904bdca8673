#!/usr/bin/env python3
"""Renders the PNG plots of a bench result (called by scripts/bench after
report.py) and appends a "Plots" and a "Scale" section to docs/benchmarks.md.

    plots.py RESULT.json docs/benchmarks.md docs/bench/

Plots: throughput over time of mongo-source (committed events) and es-sync
(documents done) in measures 1 and 2, and the latency CDF of every rate of
measure 3. Needs matplotlib (scripts/bench installs a pinned one into a
cached venv)."""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res_path, md_path, out_dir = sys.argv[1:4]
r = json.load(open(res_path))
os.makedirs(out_dir, exist_ok=True)
rel = os.path.relpath(out_dir, os.path.dirname(md_path))
made = []


def rate_series(points):
    """[t, cumulative] -> (t, per-second rate) between consecutive samples."""
    ts, rs = [], []
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if t1 > t0:
            ts.append(t1)
            rs.append((c1 - c0) / (t1 - t0))
    return ts, rs


def finish(fig, ax, xlabel, ylabel, title, caption, name):
    """Labels, grid and legend, then saves the figure as `name` for the page."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    made.append((caption, name))


series = []
for key, label in [("source", "mongo-source (Python SecantusDB)"),
                   ("source_rust_secantus", "mongo-source (Rust SecantusDB)")]:
    pts = (r.get(key) or {}).get("mongo_source", {}).get("series")
    if pts:
        series.append((label + ", events committed/s", pts))
pts = (r.get("sync") or {}).get("es_sync", {}).get("series")
if pts:
    series.append(("es-sync, documents done/s", pts))
if series:
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, pts in series:
        t, v = rate_series(pts)
        ax.plot(t, v, label=label)
    finish(fig, ax, "seconds since the binary was spawned", "per second",
           "Throughput over time (measures 1 and 2)", "Throughput over time", "throughput.png")

runs = (r.get("latency") or {}).get("runs") or []
runs = [x for x in runs if x.get("latency_cdf_ms")]
if runs:
    fig, ax = plt.subplots(figsize=(8, 4))
    for x in runs:
        cdf = x["latency_cdf_ms"]
        ax.plot(cdf, [p / 100 for p in range(len(cdf))],
                label=f"{x['target_per_s']} changes/s (achieved {x['achieved_per_s']:.0f})")
    refresh = (r.get("latency") or {}).get("refresh_interval", "1s")
    finish(fig, ax, f"MongoDB commit to searchable, ms (index refresh {refresh})", "fraction of changes",
           "End-to-end latency CDF (measure 3)", "End-to-end latency CDF", "latency-cdf.png")

scale = r.get("scale") or {}
md = ["", "## 5. Scale", ""]
if scale:
    md.append(f"Server: `{scale.get('server', '')}`; our binaries only (no baselines), "
              "each point on a fresh database and fresh indices.")
    md += ["", "| documents | mongo-source events/s | peak / steady RSS MiB | es-sync docs/s | peak / steady RSS MiB |",
           "|---:|---:|---:|---:|---:|"]
    for p in scale.get("documents", []):
        if "error" in p:
            md.append(f"| {p['documents']:,} | failed: {p['error'][:120]} | | | |")
            continue
        s, y = p["mongo_source"], p["es_sync"]
        md.append(f"| {p['documents']:,} | {s['events_per_s']:,.0f} | {s['resources']['peak_rss_mib']} / {s['resources']['steady_rss_mib']} "
                  f"| {y['docs_per_s']:,.0f} | {y['resources']['peak_rss_mib']} / {y['resources']['steady_rss_mib']} |")
    md += ["", "| partitions = es-sync instances | documents | mongo-source events/s | es-sync group docs/s | highest es-sync peak RSS MiB |",
           "|---:|---:|---:|---:|---:|"]
    for p in scale.get("partitions", []):
        if "error" in p:
            md.append(f"| {p['partitions']} | | failed: {p['error'][:120]} | | |")
            continue
        md.append(f"| {p['partitions']} | {p['documents']:,} | {p['mongo_source']['events_per_s']:,.0f} "
                  f"| {p['es_sync']['docs_per_s']:,.0f} | {p['es_sync']['highest_peak_rss_mib']} |")
    docs = [p for p in scale.get("documents", []) if "error" not in p]
    if len(docs) >= 2:
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = [p["documents"] for p in docs]
        ax.plot(xs, [p["mongo_source"]["resources"]["peak_rss_mib"] for p in docs], "o-", label="mongo-source peak RSS")
        ax.plot(xs, [p["es_sync"]["resources"]["peak_rss_mib"] for p in docs], "o-", label="es-sync peak RSS")
        ax.axhline(64, color="grey", ls="--", label="target 64 MiB")
        ax.set_xscale("log")
        finish(fig, ax, "documents", "MiB", "Memory vs documents (measure 5)", "Memory vs documents",
               "scale-memory.png")
else:
    md.append("Not run.")
md += ["", "## Plots", ""]
for title, f in made:
    md.append(f"![{title}]({rel}/{f})")
    md.append("")
if not made:
    md.append("No plot data in this run.")
with open(md_path, "a") as fh:
    fh.write("\n".join(md) + "\n")
print(f"plots: {', '.join(f for _, f in made) or 'none'}", file=sys.stderr)
