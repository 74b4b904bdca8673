#!/usr/bin/env python3
"""Renders the PNG plots of a bench result (called by scripts/bench after
report.py) into the run's folder and appends a "Plots" section linking them
to docs/benchmarks.md.

    plots.py RESULT.json docs/benchmarks.md bench/results/<date>/

Plots (each from the trial with the median rate of its arm):
- es-sync throughput over time, with the backpressure pause
  (`es_sync_consumer_paused`, shaded) and the mean bulks in flight between
  samples (`es_sync_bulk_in_flight`), and mongo-source's throughput;
- RSS over time of both binaries (every trial, the median one bold);
- the latency CDF of every rate (its runs pooled);
- peak RSS against the number of documents (scale).
Needs matplotlib (scripts/bench installs a pinned one into a cached venv)."""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res_path, md_path, out_dir = sys.argv[1:4]
r = json.load(open(res_path))
os.makedirs(out_dir, exist_ok=True)
rel = os.path.relpath(out_dir, os.path.dirname(os.path.abspath(md_path)))
made = []


def rates(t, c):
    """Cumulative samples -> (t, per-second rate) between consecutive samples."""
    ts, rs = [], []
    for i in range(1, len(t)):
        if t[i] > t[i - 1]:
            ts.append(t[i])
            rs.append((c[i] - c[i - 1]) / (t[i] - t[i - 1]))
    return ts, rs


def median_trial(phase, arm, key):
    """The trial of `arm` with the median `key`, or None."""
    trials = [t for t in (phase or {}).get("trials", []) if isinstance(t.get(arm), dict) and key in t[arm]]
    if not trials:
        return None
    trials.sort(key=lambda t: t[arm][key])
    return trials[len(trials) // 2][arm]


def save(fig, name, caption):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    made.append((caption, name))


# Throughput over time: es-sync with pause and bulks in flight.
y = median_trial(r.get("sync"), "ours", "docs_per_s")
if y and y.get("series", {}).get("t"):
    s = y["series"]
    t, rate = rates(s["t"], s["docs"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, rate, color="tab:blue", lw=1, label="es-sync documents done/s")
    for i in range(1, len(s["t"])):
        if s["paused"][i] >= 0.5:
            ax.axvspan(s["t"][i - 1], s["t"][i], color="tab:red", alpha=0.15, lw=0)
    ax.set_xlabel("seconds since es-sync was spawned")
    ax.set_ylabel("documents/s")
    ax2 = ax.twinx()
    ft, fm = [], []
    for i in range(1, len(s["t"])):
        dc = s["in_flight_count"][i] - s["in_flight_count"][i - 1]
        if dc > 0:
            ft.append(s["t"][i])
            fm.append((s["in_flight_sum"][i] - s["in_flight_sum"][i - 1]) / dc)
    ax2.plot(ft, fm, ".", color="tab:green", ms=3, label="bulks in flight when one starts (mean)")
    ax2.set_ylabel("bulks in flight")
    ax2.set_ylim(0, max([r.get("batching", {}).get("bulk_in_flight", 4)] + fm) + 0.5)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2 + [], loc="lower center", fontsize=8)
    ax.set_title(f"es-sync catch-up (median trial, {y['docs_per_s']:,.0f} docs/s); red: consumer paused")
    ax.grid(alpha=0.3)
    save(fig, "es-sync-throughput.png", "es-sync throughput over time, with pauses and bulks in flight")

src_series = []
for key, label in (("source", "Python SecantusDB"), ("source_rust_secantus", "Rust SecantusDB")):
    o = median_trial(r.get(key), "ours", "events_per_s")
    if o and o.get("series", {}).get("t"):
        src_series.append((label, o))
if src_series:
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, o in src_series:
        t, rate = rates(o["series"]["t"], o["series"]["events"])
        ax.plot(t, rate, lw=1, label=f"mongo-source events committed/s, {label} ({o['events_per_s']:,.0f}/s)")
    ax.set_xlabel("seconds since mongo-source was spawned")
    ax.set_ylabel("events/s")
    ax.set_title("mongo-source catch-up (median trial)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "mongo-source-throughput.png", "mongo-source throughput over time")

# RSS over time.
panels = [("es-sync", r.get("sync"), "docs_per_s"), ("mongo-source", r.get("source"), "events_per_s")]
panels = [(n, p, k) for n, p, k in panels if isinstance(p, dict) and p.get("trials")]
if panels:
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, phase, key) in zip(axes[0], panels):
        med = median_trial(phase, "ours", key)
        for t in phase["trials"]:
            pts = t.get("ours", {}).get("rss_mib") or []
            if pts:
                bold = t["ours"] is med
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.8 if bold else 0.7,
                        alpha=1 if bold else 0.4, color="tab:purple")
        ax.axhline(40, color="grey", ls="--", lw=1, label="target 40 MiB")
        ax.set_xlabel("seconds into the trial")
        ax.set_ylabel("RSS MiB")
        ax.set_title(f"{name} RSS while catching up (all trials; median bold)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, "rss.png", "RSS over time")

# Latency CDF.
lat = [x for x in (r.get("latency") or {}).get("rates", []) if x.get("latency_cdf_ms")]
if lat:
    fig, ax = plt.subplots(figsize=(8, 4))
    for x in lat:
        cdf = x["latency_cdf_ms"]
        ach = x.get("achieved_per_s", {}).get("median", 0)
        ax.plot(cdf, [p / 100 for p in range(len(cdf))],
                label=f"{x['target_per_s']} changes/s (achieved {ach:,.0f}, {x['runs']} runs)")
    refresh = (r.get("latency") or {}).get("refresh_interval", "1s")
    ax.set_xlabel(f"MongoDB commit to searchable, ms (index refresh {refresh})")
    ax.set_ylabel("fraction of changes")
    ax.set_title("End-to-end latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "latency-cdf.png", "End-to-end latency CDF")

# Memory vs documents.
docs = [p for p in (r.get("scale") or {}).get("documents", []) if "error" not in p and p.get("es_sync")]
if len(docs) >= 2:
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [p["documents"] for p in docs]
    ax.plot(xs, [p["mongo_source"]["resources"]["peak_rss_mib"] for p in docs], "o-", label="mongo-source peak RSS")
    ax.plot(xs, [p["es_sync"]["resources"]["peak_rss_mib"] for p in docs], "o-", label="es-sync peak RSS")
    ax.axhline(40, color="grey", ls="--", label="target 40 MiB")
    ax.set_xscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("MiB")
    ax.set_title("Memory vs documents (scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "scale-memory.png", "Memory vs documents")

md = ["## Plots", ""]
for title, f in made:
    md.append(f"![{title}]({rel}/{f})")
    md.append("")
if not made:
    md.append("No plot data in this run.")
with open(md_path, "a") as fh:
    fh.write("\n".join(md) + "\n")
print(f"plots: {', '.join(f for _, f in made) or 'none'}", file=sys.stderr)
