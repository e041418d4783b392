#!/usr/bin/env python3
"""The generation benchmark's table (issue 17 item 5; scripts/bench_decode.sh runs it): our
bench/bench_decode.cpp results (Google Benchmark JSON files, one per round and context) and the
PyTorch peer's rows (scripts/peer_decode.py's CSV) into one CSV of every measurement and a Markdown
table of the medians over the rounds, for docs/benchmarks.md's "Generation" section.

  python3 scripts/decode_table.py --ours DIR --peer peer_decode.csv --csv decode.csv --md decode.md

Our kinds are compared with the PyTorch layer of the same mechanism: full and flash with the plain
KV-cache loop (`full`; its SDPA variant in its own column), local with lucidrains' LocalMHA; the other
kinds have no cached PyTorch peer. speed-up = PyTorch's ms/token / ours (> 1: ours is faster).
Standard library only.
"""
import argparse
import csv
import glob
import json
import os
import re
import statistics
import sys

COLUMNS = ["impl", "kind", "mechanism", "context", "round", "ms_per_token", "prefill_ms", "cache_bytes", "note"]
PEER_OF = {"full": "full", "flash": "full", "local": "local"}  # our kind -> peer_decode.py's kind
NAME = re.compile(r"^BM_Decode/(?P<kind>.+)/t:(?P<t>\d+)(/.*)?$")  # then /iterations:8/real_time
MIB = 1 << 20


def read_ours(folder):
    """Rows of every ours_*.json in folder (bench_decode.sh names them ours_r<round>_t<t>.json)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "ours_*.json"))):
        m = re.search(r"_r(\d+)_", os.path.basename(path))
        rnd = int(m.group(1)) if m else 1
        with open(path) as fh:
            data = json.load(fh)
        for b in data.get("benchmarks", []):
            n = NAME.match(b.get("name", ""))
            if not n:
                continue
            row = {"impl": "ours", "kind": n.group("kind"), "mechanism": b.get("label", ""), "context": int(n.group("t")),
                   "round": rnd, "ms_per_token": "", "prefill_ms": "", "cache_bytes": "", "note": ""}
            if b.get("error_occurred"):
                row["note"] = b.get("error_message", "error")
            else:
                scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
                row.update(ms_per_token=f"{b['real_time'] * scale:.4f}", prefill_ms=f"{b.get('prefill_ms', 0):.2f}",
                           cache_bytes=int(b.get("cache_bytes", 0)))
            rows.append(row)
    return rows


def read_peer(path):
    rows = []
    if not path or not os.path.exists(path):
        return rows
    with open(path, newline="") as fh:
        for i, r in enumerate(csv.DictReader(fh)):
            rows.append({"impl": r["impl"], "kind": r["kind"], "mechanism": "kv_cache", "context": int(r["context"]),
                         "round": int(r.get("round") or 0) or 1, "ms_per_token": r["ms_per_token"],
                         "prefill_ms": r["prefill_ms"], "cache_bytes": r["cache_bytes"], "note": r["note"]})
    return rows


def median_of(rows, impl, kind, t, field):
    vals = [float(r[field]) for r in rows if r["impl"] == impl and r["kind"] == kind and r["context"] == t
            and r[field] not in ("", None)]
    return statistics.median(vals) if vals else None


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows):
    ours = [r for r in rows if r["impl"] == "ours"]
    kinds = sorted({r["kind"] for r in ours})
    lines = ["| kind | decoding | context | ours ms/token | PyTorch ms/token | speed-up | PyTorch SDPA ms/token | "
             "ours cache MiB | PyTorch cache MiB | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for kind in kinds:
        for t in sorted({r["context"] for r in ours if r["kind"] == kind}):
            mine = [r for r in ours if r["kind"] == kind and r["context"] == t]
            ms = median_of(rows, "ours", kind, t, "ms_per_token")
            peer_kind = PEER_OF.get(kind.split("/")[0])
            pt = median_of(rows, "pytorch", peer_kind, t, "ms_per_token") if peer_kind else None
            sdpa = median_of(rows, "pytorch", "sdpa", t, "ms_per_token") if peer_kind == "full" else None
            cache = median_of(rows, "ours", kind, t, "cache_bytes")
            pcache = median_of(rows, "pytorch", peer_kind, t, "cache_bytes") if peer_kind else None
            note = next((r["note"] for r in mine if r["note"]), "")
            if peer_kind is None:
                note = (note + "; " if note else "") + "no cached PyTorch peer"
            lines.append(f"| {kind} | {mine[0]['mechanism'] or '–'} | {t} | {fmt(ms)} | {fmt(pt)} | "
                         f"{'–' if ms is None or pt is None else f'{pt / ms:.2f}×'} | {fmt(sdpa)} | "
                         f"{fmt(None if cache is None else cache / MIB, 2)} | {fmt(None if pcache is None else pcache / MIB, 2)} | "
                         f"{note} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", required=True, help="the folder of our Google Benchmark JSON files (ours_*.json)")
    p.add_argument("--peer", help="scripts/peer_decode.py's CSV")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    args = p.parse_args(argv)
    rows = read_ours(args.ours) + read_peer(args.peer)
    if not rows:
        print(f"decode_table: error: no results in {args.ours} or {args.peer}", file=sys.stderr)
        return 1
    with open(args.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with open(args.md, "w") as fh:
        fh.write(table(rows))
    print(f"decode_table: {len(rows)} rows -> {args.csv}, {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
