"""Checks of bench/report.py that need no benchmark run (run by scripts/test):
a page rewritten from a recorded result keeps its hand-kept section, and a
page without one gets none.

    python3 bench/test_report.py
"""

import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KEPT = "<!-- kept: begin -->\n## Hand-kept\n\nfigure 42\n<!-- kept: end -->"


def render(page_before, result=None):
    result = result or sorted(glob.glob(os.path.join(HERE, "results", "*Z.json")))[-1]
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "benchmarks.md")
        if page_before is not None:
            open(page, "w").write(page_before)
        subprocess.run([sys.executable, os.path.join(HERE, "report.py"), result,
                        os.path.join(d, "out.json"), page], check=True)
        return open(page).read()


def main():
    kept = render("# Benchmarks\n\nold generated text\n\n" + KEPT + "\n\n## Plots\n")
    assert KEPT in kept, "the hand-kept section was dropped"
    assert "old generated text" not in kept, "the generated part was not rewritten"
    assert "<!-- kept" not in render(None), "a section appeared from nowhere"
    print("bench/report.py: hand-kept sections carried over")
    check_bounds()
    check_profile_shares()


def check_bounds():
    """A missed target's row says what bounds it, from the run's own figures
    (a full run of 2026-12-07 that missed them)."""
    page = render(None, os.path.join(HERE, "results", "2026-12-07T185351Z.json"))
    rows = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    def row(start):
        return next(v for k, v in rows.items() if k.startswith(start))
    assert "114% of what the node indexed from straight `_bulk` (9,086 docs/s" in row("| es-sync ≥ 1.5× Monstache"), \
        row("| es-sync ≥ 1.5× Monstache")
    assert "172% of straight `_bulk`" in row("| es-sync ≥ 2× Vector")
    assert "servers' core busy 99% (elasticsearch 53%" in row("| p99 commit → searchable ≤ refresh + 300 ms (1,300 ms) at 1,000/s")
    assert row("| es-sync ≥ 90% of `_bulk`").endswith("| met |  |"), "a met target names no bound"
    print("bench/report.py: each missed target says what bounds it")


# A flat perf report as the bench writes it (`--percent-limit 0.5`).
REPORT = """# Samples: 2K  of event 'cpu-clock'
#
     20.00%  libc.so.6          [.] malloc                                                    -      -
     10.00%  libc.so.6          [.] _int_free
      5.00%  libc.so.6          [.] __memmove_avx512_unaligned_erms                          -      -
      7.50%  [kernel.kallsyms]  [k] finish_task_switch.isra.0
      6.00%  es-sync            [.] ZSTD_decompressSequences_bmi2.constprop.0
      4.00%  es-sync            [.] <serde_json::read::SliceRead as serde_json::read::Read>::parse_str
      3.00%  es-sync            [.] core::str::converts::from_utf8
      2.00%  mongo-source       [.] <bson::document::Document as core::iter::traits::collect::FromIterator<(alloc::string::String,bson::bson::Bson)>>::from_iter
      1.50%  es-sync            [.] <core::hash::sip::Hasher<S> as core::hash::Hasher>::write
      1.00%  es-sync            [.] mi_malloc_aligned
      9.00%  es-sync            [.] es_sync::consumer::intake::on_record
"""


def check_profile_shares():
    sys.path.insert(0, HERE)
    import profile_shares
    s = profile_shares.shares(REPORT)
    want = {"allocator": 31.0, "mem*": 5.0, "kernel": 7.5, "zstd": 6.0, "JSON, UTF-8": 7.0, "BSON": 2.0,
            "hashing": 1.5, "other": 9.0, "unlisted": 31.0}
    got = {k: round(v, 2) for k, v in s.items()}
    assert got == want, f"profile shares {got}, expected {want}"
    assert profile_shares.samples(REPORT) == 2000
    rows = profile_shares.table([("x", REPORT)])
    assert rows[2].startswith("| x | 2000 | 31.0% |"), rows[2]
    print("bench/profile_shares.py: shares by kind from a flat perf report")


if __name__ == "__main__":
    main()
