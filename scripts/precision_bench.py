#!/usr/bin/env python3
"""fp32, bf16 and int8, ours and PyTorch's, interleaved in one run (issue 15 items 4 and 5): the 6-layer
Linformer LM (d 512, 8 heads, n 4096, k 256, batch 1) training step and inference, each side in each
precision once per round, the order of the sides reversed every other round. int8 is inference-only.

  /work/.venv-golden/bin/python scripts/precision_bench.py [--rounds 3] [--repeats 3] [--n 4096] [--k 256]
      [--threads 2] [--precisions fp32,bf16,int8] [--passes train_step,inference] [--tag TAG]
      [--binary build/linformer] [--out bench/results/<cpu>]

ours     `linformer --precision P bench --kinds linformer --what model_train_step,model_inference`
PyTorch  scripts/peer_bench.py --kinds linformer_model [--precision bf16: torch.autocast("cpu", bfloat16);
         --precision int8: quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)]
Writes <out>/precision<tag>.csv (every round's rows, both sides' bench columns plus `round`) and
<out>/precision<tag>.md (medians over rounds of each round's median, and the ratios the issue's targets
are about); <cpu> is this CPU's folder (scripts/machine.py). By default every precision this CPU runs
(`linformer --precision P info`; the others are left out with a message) and no tag: the files the
report (scripts/bench_report.py) reads. A partial run (--precisions, --passes) should get a --tag
("-int8" writes precision-int8.*), so that it does not replace them.
"""
import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile

import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHATS = {"model_train_step": "train_step", "model_inference": "inference"}  # ours -> peer_bench's names
PRECISIONS = ("fp32", "bf16", "int8")
PASSES = ("train_step", "inference")


def run(cmd, env=None):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"precision_bench: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def passes_for(args, precision):
    """The passes measured at `precision`: int8 has no training step."""
    return [p for p in args.passes if precision != "int8" or p == "inference"]


def ours(args, precision, tmp):
    out = os.path.join(tmp, f"ours_{precision}.csv")
    whats = [w for w, p in WHATS.items() if p in passes_for(args, precision)]
    run([args.binary, "--threads", str(args.threads), "--precision", precision, "bench", "--kinds", "linformer",
         "--what", ",".join(whats), "--n", str(args.n), "--k", str(args.k), "--repeats", str(args.repeats),
         "--warmup", "1", "--max-seconds", "600", "--csv", out, "--markdown", os.path.join(tmp, "md")])
    rows = []
    for r in csv.DictReader(open(out)):
        if r["what"] in WHATS and r["time_ms"]:
            rows.append({"side": "ours", "precision": precision, "what": WHATS[r["what"]],
                         "time_ms": float(r["time_ms"]), "peak_mem_bytes": int(float(r["peak_mem_bytes"] or 0))})
    return rows


def pytorch(args, precision, tmp):
    out = os.path.join(tmp, f"torch_{precision}.csv")
    run([sys.executable, os.path.join(REPO, "scripts", "peer_bench.py"), "--out", out, "--kinds", "linformer_model",
         "--what", ",".join(passes_for(args, precision)), "--n", str(args.n), "--k", str(args.k),
         "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", "1", "--max-seconds", "600",
         "--precision", precision])
    rows = []
    for r in csv.DictReader(open(out)):
        if r["time_ms"]:
            rows.append({"side": "pytorch", "precision": precision, "what": r["what"],
                         "time_ms": float(r["time_ms"]), "peak_mem_bytes": int(float(r["peak_mem_bytes"] or 0))})
    return rows


def name_list(allowed):
    def parse(text):
        names = [t for t in text.split(",") if t]
        bad = [t for t in names if t not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {','.join(bad) or repr(text)}; choose from {','.join(allowed)}")
        return [a for a in allowed if a in names]  # in the canonical order
    return parse


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precisions", type=name_list(PRECISIONS), default=list(PRECISIONS),
                   help="comma-separated, from fp32,bf16,int8 (default: all; int8 measures inference only)")
    p.add_argument("--passes", type=name_list(PASSES), default=list(PASSES),
                   help="comma-separated, from train_step,inference (default: both)")
    p.add_argument("--tag", default="", help="appended to the output files' names (see above)")
    p.add_argument("--binary", default=os.path.join(REPO, "build", "linformer"))
    p.add_argument("--out", default=os.path.join(REPO, machine.results_dir()))
    args = p.parse_args()
    if not any(passes_for(args, pr) for pr in args.precisions):
        p.error("nothing to measure: int8 has only the inference pass")
    cpu = machine.cpu_info()
    model, family, number, isa = cpu["model_name"], cpu["family"], cpu["model"], cpu["flags"]
    runnable = [pr for pr in args.precisions if pr == "fp32" or subprocess.run(
        [args.binary, "--precision", pr, "info"], capture_output=True).returncode == 0]
    for pr in sorted(set(args.precisions) - set(runnable)):
        print(f"precision_bench: no --precision {pr} on this machine (linformer info says why): left out", file=sys.stderr)
    args.precisions = runnable
    sides = [(fn, pr) for pr in args.precisions for fn in (ours, pytorch) if passes_for(args, pr)]
    rows, loads = [], []
    with tempfile.TemporaryDirectory(prefix="precision_bench_") as tmp:
        for rnd in range(1, args.rounds + 1):
            loads.append(os.getloadavg()[0])
            for fn, precision in (sides if rnd % 2 else sides[::-1]):
                got = fn(args, precision, tmp)
                for r in got:
                    r.update({"round": rnd, "n": args.n, "k": args.k, "threads": args.threads})
                    print(f"round {rnd}: {r['side']:8s} {precision} {r['what']:11s} {r['time_ms']:9.1f} ms", file=sys.stderr)
                rows += got
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "precision" + (args.tag or ""))
    with open(stem + ".csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["round", "side", "precision", "what", "n", "k", "threads", "time_ms",
                                           "peak_mem_bytes"])
        w.writeheader()
        w.writerows(rows)

    def vals(side, precision, what, key="time_ms"):
        return [r[key] for r in rows if (r["side"], r["precision"], r["what"]) == (side, precision, what)]

    def med(side, precision, what, key="time_ms"):
        v = vals(side, precision, what, key)
        return statistics.median(v) if v else float("nan")

    def spread(side, precision, what):
        v = vals(side, precision, what)
        return f"{min(v):.0f}–{max(v):.0f}" if v else "–"

    md = [f"CPU: {model} (family {family} model {number}; {', '.join(isa)}), {args.threads} threads; the "
          f"6-layer Linformer LM, d = 512, 8 heads, n = {args.n}, k = {args.k}, batch 1; {args.rounds} interleaved "
          f"rounds of {args.repeats} timed runs (median per round; the table gives the median and range of the "
          f"rounds); 1-minute load at each round's start: {', '.join(f'{l:.2f}' for l in loads)}.", "",
          "| pass | precision | ours ms | PyTorch ms | PyTorch / ours | ours peak MiB | PyTorch peak MiB |",
          "|---|---|---|---|---|---|---|"]
    measured = [(what, precision) for what in PASSES for precision in args.precisions
                if what in passes_for(args, precision)]
    for what, precision in measured:
        o, t = med("ours", precision, what), med("pytorch", precision, what)
        md.append(f"| {what} | {precision} | {o:.0f} ({spread('ours', precision, what)}) | {t:.0f} "
                  f"({spread('pytorch', precision, what)}) | {t / o:.2f}× | "
                  f"{med('ours', precision, what, 'peak_mem_bytes') / 2**20:.0f} | "
                  f"{med('pytorch', precision, what, 'peak_mem_bytes') / 2**20:.0f} |")
    speedups = [(what, precision) for what, precision in measured if precision != "fp32" and (what, "fp32") in measured]
    if speedups:
        md += ["", "| pass | precision | ours fp32 / ours P | PyTorch fp32 / PyTorch P |", "|---|---|---|---|"]
        for what, precision in speedups:
            md.append(f"| {what} | {precision} | {med('ours', 'fp32', what) / med('ours', precision, what):.2f}× | "
                      f"{med('pytorch', 'fp32', what) / med('pytorch', precision, what):.2f}× |")
    if "int8" in args.precisions:
        md += ["", "int8: ours quantises every linear layer's weight per output channel (s8) and its input per call "
               "(u8, 8 bits); PyTorch's quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8) per tensor (s8) and "
               "7 bits (reduce_range), on its x86 (fbgemm) engine; in both, Linformer's E/F projections, the attention "
               "products and the embedding stay fp32, and the weights are quantised ahead in PyTorch, on each call in ours."]
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
