#!/usr/bin/env python3
"""The report of scripts/gemm_backends.sh: reads the Google Benchmark JSON files of its rounds
(r<round>_<backend>.json, BM_GemmShape/<name>), writes <out-dir>/gemm_backends.csv (one row per
round, backend and shape) and <out-dir>/gemm_backends.md (per shape: each backend's median GFLOP/s over
the rounds, the best backend, each backend's share of the best), naming the CPU (scripts/machine.py;
<out-dir> is normally that CPU's folder). Standard library only."""
import argparse
import csv
import datetime
import glob
import json
import os
import re
import statistics
import subprocess

import machine


def package_versions(root):
    def dpkg(pkg):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            return out.stdout.strip() or "not installed"
        except OSError:
            return "unknown"

    mkl = "not installed"
    for d in sorted(glob.glob(os.path.join(root, ".venv-mkl/lib/python3*/site-packages/mkl-*.dist-info"))):
        m = re.match(r"mkl-([0-9.]+)\.dist-info", os.path.basename(d))
        if m:
            mkl = m.group(1)
    return {"dnnl": f"oneDNN (Debian libdnnl-dev {dpkg('libdnnl-dev')})",
            "openblas": f"OpenBLAS (Debian libopenblas-dev {dpkg('libopenblas-dev')}, pthreads)",
            "mkl": f"MKL (PyPI mkl {mkl}, GNU OpenMP layer, single-threaded calls on our tiles)",
            "mkl_own": f"the same MKL with its own threads, one call per product (LINFORMER_MKL_OWN_THREADS=1; "
                       "not the same bits for every thread count, so not a backend of ours)"}


def read_runs(raw_dir, backends):
    rows = []
    for path in sorted(glob.glob(os.path.join(raw_dir, "r*_*.json"))):
        m = re.match(r"r(\d+)_(\w+)\.json", os.path.basename(path))
        if not m or m.group(2) not in backends:
            continue
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            name = b["name"].split("/")
            if len(name) < 2 or name[0] != "BM_GemmShape" or b.get("run_type", "iteration") != "iteration":
                continue
            label = b.get("label", "")
            dims = re.match(r"(\d+)x(\d+)x(\d+) tA=(\d) tB=(\d)", label)
            rows.append({"round": int(m.group(1)), "backend": m.group(2), "shape": name[1],
                         "M": dims.group(1) if dims else "", "N": dims.group(2) if dims else "",
                         "K": dims.group(3) if dims else "", "tA": dims.group(4) if dims else "",
                         "tB": dims.group(5) if dims else "", "gflops": float(b["GFLOP/s"]),
                         "ms": float(b["real_time"]), "iterations": int(b["iterations"])})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--min-time", required=True)
    ap.add_argument("--backends", nargs="+", required=True)
    ap.add_argument("--mkl-verbose", default="", help="MKL's first MKL_VERBOSE line (its version and code path)")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cpu = machine.cpu_info()
    rows = read_runs(args.raw, args.backends)
    if not rows:
        raise SystemExit("gemm_backends: no BM_GemmShape results found")
    os.makedirs(args.out_dir, exist_ok=True)
    csv_path = os.path.join(args.out_dir, "gemm_backends.csv")
    fields = ["round", "backend", "shape", "M", "N", "K", "tA", "tB", "gflops", "ms", "iterations"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.2f}" if k == "gflops" else f"{r[k]:.4f}" if k == "ms" else r[k]) for k in fields})

    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    backends = [b for b in args.backends if any(r["backend"] == b for r in rows)]
    dims = {r["shape"]: r for r in rows}
    med = {}
    for s in shapes:
        for b in backends:
            vals = [r["gflops"] for r in rows if r["shape"] == s and r["backend"] == b]
            if vals:
                med[s, b] = statistics.median(vals)
    versions = package_versions(root)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=root).stdout.strip()
    except OSError:
        git = "?"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        load = open("/proc/loadavg").read().split()[0]
    except OSError:
        load = "?"
    md = [f"# GEMM backends on {cpu['model_name']} (family {cpu['family']} model {cpu['model']})", "",
          "<!-- Written by scripts/gemm_backends.sh (scripts/gemm_backends.py). -->", "",
          f"- **date**: {now}, git {git}",
          f"- **cpu**: {cpu['model_name']}, family {cpu['family']} model {cpu['model']}; flags: "
          f"{' '.join(cpu['flags']) or 'none of ' + ' '.join(machine.FLAGS)}; {os.cpu_count()} cores available",
          f"- **threads**: {args.threads}; **rounds**: {args.rounds} (backends interleaved, order rotated), "
          f"min time {args.min_time} s per shape per round; the load average at the end: {load}",
          "- **backends**: " + "; ".join(f"`{b}`: {versions.get(b, b)}" for b in backends),
          *([f"- **MKL says**: `{args.mkl_verbose.strip()}`"] if args.mkl_verbose.strip() else []),
          "- **what**: `linformer_bench --benchmark_filter=BM_GemmShape` (bench/bench_kernels.cpp) through "
          "ops::matmul; GFLOP/s = 2·M·N·K per call, the median over the rounds; share = the backend's "
          "GFLOP/s over the best backend's at that shape", "",
          "| shape | M×N×K | tA | tB | " + " | ".join(f"{b} GFLOP/s" for b in backends) +
          " | best | " + " | ".join(f"{b} share" for b in backends) + " |",
          "|---|---|---:|---:|" + "---:|" * len(backends) + "---|" + "---:|" * len(backends)]
    shares = {b: [] for b in backends}
    for s in shapes:
        got = {b: med[s, b] for b in backends if (s, b) in med}
        best_b = max(got, key=got.get)
        best = got[best_b]
        cells = [f"{got[b]:.0f}" if b in got else "–" for b in backends]
        share_cells = []
        for b in backends:
            if b in got:
                shares[b].append(got[b] / best)
                share_cells.append(f"{100 * got[b] / best:.0f} %")
            else:
                share_cells.append("–")
        d = dims[s]
        md.append(f"| {s} | {d['M']}×{d['N']}×{d['K']} | {d['tA']} | {d['tB']} | " + " | ".join(cells) +
                  f" | {best_b} | " + " | ".join(share_cells) + " |")
    md += ["", "Each backend over all shapes: the lowest share of the best, the geometric mean of its shares, and "
           "at how many shapes it reaches 90 % of the best.", "",
           "| backend | lowest share | geometric mean | shapes ≥ 90 % | shapes best |", "|---|---:|---:|---:|---:|"]
    for b in backends:
        sh = shares[b]
        if not sh:
            continue
        geo = statistics.geometric_mean(sh)
        n_best = sum(1 for x in sh if x >= 0.9999)
        md.append(f"| {b} | {100 * min(sh):.0f} % | {100 * geo:.0f} % | {sum(1 for x in sh if x >= 0.9)} / {len(sh)} | "
                  f"{n_best} |")
    md_path = os.path.join(args.out_dir, "gemm_backends.md")
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"gemm_backends: wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
