#!/usr/bin/env python3
"""Before/after per row of run.sh's CSVs (every round): the times of each round, the ratio of the
medians over the rounds (after / before; below 1: the final tree is faster), the heap peaks, and the
geometric mean of the ratios over all rows and over the n = 4096 rows. Prints markdown."""
import csv, glob, math, os, re, statistics

here = os.path.dirname(os.path.abspath(__file__))


def load(side):
    rows = {}
    for path in sorted(glob.glob(os.path.join(here, f"{side}_*_*.csv")), key=lambda p: int(re.findall(r"_(\d+)\.csv", p)[0])):
        for r in csv.DictReader(open(path)):
            if not r.get("time_ms"):
                continue
            key = (r["kind"], r["what"], int(r["n"]))
            entry = rows.setdefault(key, {"t": [], "heap": []})
            entry["t"].append(float(r["time_ms"]))
            entry["heap"].append(float(r["heap_peak_bytes"] or 0) / 2**20)
    return rows


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs))


before, after = load("before"), load("after")
print("| kind | measurement | n | before, ms (rounds) | after, ms (rounds) | after / before (medians) | heap peak, MiB (before / after) |")
print("|---|---|---|---|---|---|---|")
ratios, ratios_4096 = [], []
for key in sorted(before.keys() & after.keys(), key=lambda k: (k[1].startswith("model"), k[0], k[1], k[2])):
    b, a = before[key], after[key]
    ratio = statistics.median(a["t"]) / statistics.median(b["t"])
    ratios.append(ratio)
    if key[2] == 4096:
        ratios_4096.append(ratio)
    fmt = lambda ts: ", ".join(f"{t:.1f}" for t in ts)
    print(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(b['t'])} | {fmt(a['t'])} | {ratio:.2f} | "
          f"{max(b['heap']):.1f} / {max(a['heap']):.1f} |")
print(f"\n{len(ratios)} rows: geometric mean of after / before {geomean(ratios):.3f} (min {min(ratios):.2f}, "
      f"max {max(ratios):.2f}); the {len(ratios_4096)} rows at n = 4096: {geomean(ratios_4096):.3f}.")
