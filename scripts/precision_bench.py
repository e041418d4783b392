#!/usr/bin/env python3
"""fp32 and bf16, ours and PyTorch's, interleaved in one run (issue 15 item 4): the 6-layer Linformer
LM (d 512, 8 heads, n 4096, k 256, batch 1) training step and inference, each side in each precision
once per round, the order of the four reversed every other round.

  /work/.venv-golden/bin/python scripts/precision_bench.py [--rounds 3] [--repeats 3] [--n 4096] [--k 256]
      [--threads 2] [--binary build/linformer] [--out bench/results/<cpu>]

ours     `linformer --precision P bench --kinds linformer --what model_train_step,model_inference`
PyTorch  scripts/peer_bench.py --kinds linformer_model [--precision bf16: torch.autocast("cpu", bfloat16)]
Writes <out>/precision.csv (every round's rows, both sides' bench columns plus `round`) and
<out>/precision.md (medians over rounds of each round's median, and the ratios the issue's targets are
about); <cpu> is this CPU's folder (scripts/machine.py). Without bf16 on this CPU it measures fp32 only.
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


def run(cmd, env=None):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"precision_bench: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def ours(args, precision, tmp):
    out = os.path.join(tmp, f"ours_{precision}.csv")
    run([args.binary, "--threads", str(args.threads), "--precision", precision, "bench", "--kinds", "linformer",
         "--what", ",".join(WHATS), "--n", str(args.n), "--k", str(args.k), "--repeats", str(args.repeats),
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
         "--n", str(args.n), "--k", str(args.k), "--threads", str(args.threads), "--repeats", str(args.repeats),
         "--warmup", "1", "--max-seconds", "600", "--precision", precision])
    rows = []
    for r in csv.DictReader(open(out)):
        if r["time_ms"]:
            rows.append({"side": "pytorch", "precision": precision, "what": r["what"],
                         "time_ms": float(r["time_ms"]), "peak_mem_bytes": int(float(r["peak_mem_bytes"] or 0))})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--binary", default=os.path.join(REPO, "build", "linformer"))
    p.add_argument("--out", default=os.path.join(REPO, machine.results_dir()))
    args = p.parse_args()
    cpu = machine.cpu_info()
    model, family, number, isa = cpu["model_name"], cpu["family"], cpu["model"], cpu["flags"]
    sides = [(ours, "fp32"), (pytorch, "fp32"), (ours, "bf16"), (pytorch, "bf16")]
    if subprocess.run([args.binary, "--precision", "bf16", "info"], capture_output=True).returncode != 0:
        print("precision_bench: no --precision bf16 on this machine (linformer info says why): fp32 only", file=sys.stderr)
        sides = sides[:2]
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
    with open(os.path.join(args.out, "precision.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["round", "side", "precision", "what", "n", "k", "threads", "time_ms",
                                           "peak_mem_bytes"])
        w.writeheader()
        w.writerows(rows)

    def med(side, precision, what, key="time_ms"):
        vals = [r[key] for r in rows if (r["side"], r["precision"], r["what"]) == (side, precision, what)]
        return statistics.median(vals) if vals else float("nan")

    def spread(side, precision, what):
        vals = [r["time_ms"] for r in rows if (r["side"], r["precision"], r["what"]) == (side, precision, what)]
        return f"{min(vals):.0f}–{max(vals):.0f}" if vals else "–"

    md = [f"CPU: {model} (family {family} model {number}; {', '.join(isa)}), {args.threads} threads; the "
          f"6-layer Linformer LM, d = 512, 8 heads, n = {args.n}, k = {args.k}, batch 1; {args.rounds} interleaved "
          f"rounds of {args.repeats} timed runs (median per round; the table gives the median and range of the "
          f"rounds); 1-minute load at each round's start: {', '.join(f'{l:.2f}' for l in loads)}.", "",
          "| pass | precision | ours ms | PyTorch ms | PyTorch / ours | ours peak MiB | PyTorch peak MiB |",
          "|---|---|---|---|---|---|---|"]
    for what in ("train_step", "inference"):
        for precision in ("fp32", "bf16"):
            o, t = med("ours", precision, what), med("pytorch", precision, what)
            if math.isnan(o):  # not measured on this machine
                continue
            md.append(f"| {what} | {precision} | {o:.0f} ({spread('ours', precision, what)}) | {t:.0f} "
                      f"({spread('pytorch', precision, what)}) | {t / o:.2f}× | "
                      f"{med('ours', precision, what, 'peak_mem_bytes') / 2**20:.0f} | "
                      f"{med('pytorch', precision, what, 'peak_mem_bytes') / 2**20:.0f} |")
    md += ["", "| pass | ours fp32 / ours bf16 | PyTorch fp32 / PyTorch bf16 |", "|---|---|---|"] if len(sides) > 2 else []
    for what in ("train_step", "inference") if len(sides) > 2 else ():  # bf16 measured
        md.append(f"| {what} | {med('ours', 'fp32', what) / med('ours', 'bf16', what):.2f}× | "
                  f"{med('pytorch', 'fp32', what) / med('pytorch', 'bf16', what):.2f}× |")
    with open(os.path.join(args.out, "precision.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
