#!/usr/bin/env python3
"""Where a binary's CPU went, from a flat `perf report --stdio` (the
`profiles/*.txt` of a bench run): the share of samples in each kind of
work, so two runs' profiles compare in one table (issue 17: a profile
before and after). Used by report.py for each run's Profiles section, and
by hand to compare runs. Standard library only.

    profile_shares.py REPORT.txt...   # one markdown row per report

The kinds are picked by symbol name, in this order (first match wins):
allocator (glibc's malloc family, or mimalloc's `mi_*`), memory copies and
compares (`mem*` of libc), kernel (`[k]`), zstd, JSON and UTF-8 checks
(serde_json, `from_utf8`), BSON, hashing (SipHash, hashbrown); the rest of
the listed symbols is "other", and what the report leaves out (the bench
lists symbols of 0.5% and more: `--percent-limit 0.5`) is "unlisted".
Shares of the allocator and the like are therefore lower bounds."""

import re
import sys

GLIBC_ALLOC = re.compile(
    r"^(__libc_)?(malloc|calloc|realloc|free|cfree(@\S+)?|_int_(malloc|free|realloc|memalign)\S*|"
    r"malloc_consolidate|unlink_chunk\S*|sysmalloc|tcache\S*|munmap_chunk|mremap_chunk|"
    r"alloc_perturb|__?malloc_trim)$")
KINDS = (
    ("allocator", lambda obj, sym: (obj.startswith("libc") and GLIBC_ALLOC.match(sym) is not None)
     or re.match(r"^_?mi_", sym) is not None),
    ("mem*", lambda obj, sym: obj.startswith("libc") and re.match(r"^__(memmove|memcpy|memset|memcmp)", sym)
     is not None),
    ("kernel", lambda obj, sym: obj.startswith("[kernel")),
    ("zstd", lambda obj, sym: re.match(r"^(ZSTD|HUF|FSE)_", sym) is not None),
    ("JSON, UTF-8", lambda obj, sym: "serde_json" in sym or "from_utf8" in sym),
    ("BSON", lambda obj, sym: "bson::" in sym),
    ("hashing", lambda obj, sym: "sip::Hasher" in sym or "hashbrown" in sym),
)
ROW = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)(?:\s{2,}.*)?$")


def samples(text):
    """The report's sample count ("941", "2K"), or None."""
    m = re.search(r"^# Samples: ([\d.]+)([KM]?)", text, re.M)
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "K": 1000, "M": 1000000}[m.group(2)])


def shares(text):
    """Percent of samples per kind (see the module documentation), "other"
    and "unlisted" included; the kinds in order."""
    out = {k: 0.0 for k, _ in KINDS}
    out["other"] = 0.0
    listed = 0.0
    for line in text.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        pct, obj, sym = float(m.group(1)), m.group(2), m.group(4).strip()
        kind = next((k for k, f in KINDS if f(obj, sym)), "other")
        out[kind] += pct
        listed += pct
    out["unlisted"] = max(0.0, 100.0 - listed)
    return out


def table(named_reports):
    """A markdown table: one row per (name, report text)."""
    kinds = [k for k, _ in KINDS] + ["other", "unlisted"]
    rows = ["| profile | samples | " + " | ".join(kinds) + " |",
            "|---|---:|" + "---:|" * len(kinds)]
    for name, text in named_reports:
        s = shares(text)
        n = samples(text)
        rows.append(f"| {name} | {n if n is not None else '?'} | "
                    + " | ".join(f"{s[k]:.1f}%" for k in kinds) + " |")
    return rows


if __name__ == "__main__":
    print("\n".join(table((p, open(p).read()) for p in sys.argv[1:])))
