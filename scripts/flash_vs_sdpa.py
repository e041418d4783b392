#!/usr/bin/env python3
"""Our `flash` layer against PyTorch's scaled_dot_product_attention layer (issue 15 item 3), measured
interleaved in one run so that both see the same machine load: each round runs `linformer bench`
(kind flash) and scripts/peer_bench.py (kind sdpa) once each over every configuration, the order
alternating between rounds; the report is the median over rounds of each round's median.

  /work/.venv-golden/bin/python scripts/flash_vs_sdpa.py --out bench/results/<cpu>/flash_vs_sdpa.csv
      [--n 1024,4096] [--what forward,forward_backward] [--rounds 5] [--repeats 3] [--warmup 1]
      [--threads 2] [--linformer build/linformer] [--before OTHER_LINFORMER]

Both sides measure the same layer (d_model 512, 8 heads, batch 1, float32, no mask, no dropout): the
q/k/v/output maps around the attention core (docs/peer_bench.md). Writes <out> (one row per round,
impl and configuration, with the 1-minute load average when it ran) and <out>.md (medians, ratio
ours / torch) and prints the table; <cpu> is this CPU's folder (scripts/machine.py), whose
flash_vs_sdpa.csv docs/benchmarks.md reads. --before adds a third column, another build of
`linformer` (e.g. the commit before a change) measured in the same rounds.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WHAT_OURS = {"forward": "layer_forward", "forward_backward": "layer_forward_backward"}


def int_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def read_times(path, impl_what):
    """{(what, n): time_ms} from a bench CSV (ours or the peer's: same leading columns)."""
    out = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if row["kind"] in ("flash", "sdpa") and row["time_ms"]:
                out[(impl_what(row["what"]), int(row["n"]))] = float(row["time_ms"])
    return out


def run_ours(args, tmp, binary=None):
    path = os.path.join(tmp, "ours.csv")
    cmd = [binary or args.linformer, "--threads", str(args.threads), "bench", "--kinds", "flash",
           "--what", ",".join(WHAT_OURS[w] for w in args.what), "--n", ",".join(map(str, args.n)),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--max-seconds", "600",
           "--csv", path, "--markdown", os.path.join(tmp, "ours.md")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    back = {v: k for k, v in WHAT_OURS.items()}
    return read_times(path, lambda w: back.get(w, w))


def run_torch(args, tmp):
    path = os.path.join(tmp, "torch.csv")
    cmd = [sys.executable, os.path.join(HERE, "peer_bench.py"), "--out", path, "--kinds", "sdpa",
           "--what", ",".join(args.what), "--n", ",".join(map(str, args.n)), "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--max-seconds", "600"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return read_times(path, lambda w: w)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int_list, default=[1024, 4096])
    p.add_argument("--what", type=lambda t: t.split(","), default=["forward", "forward_backward"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--linformer", default=os.path.join(HERE, "..", "build", "linformer"))
    p.add_argument("--before", help="another linformer binary, measured in the same rounds as impl 'before'")
    p.add_argument("--label", default="", help="a free-text column (e.g. the commit measured)")
    args = p.parse_args()

    rows = []
    runners = [("ours", run_ours), ("torch", run_torch)]
    if args.before:
        runners.append(("before", lambda a, t: run_ours(a, t, a.before)))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for impl, fn in (runners if r % 2 == 0 else runners[::-1]):
                load = os.getloadavg()[0]
                times = fn(args, tmp)
                for (what, n), ms in sorted(times.items()):
                    rows.append({"label": args.label, "round": r, "impl": impl, "what": what, "n": n,
                                 "threads": args.threads, "time_ms": f"{ms:.3f}", "load1": f"{load:.2f}"})
                print(f"round {r} {impl}: " + ", ".join(f"{w} n={n} {ms:.1f} ms" for (w, n), ms in
                                                        sorted(times.items())) + f" (load {load:.2f})",
                      file=sys.stderr, flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    loads = [float(r["load1"]) for r in rows]
    md = [f"{args.rounds} rounds × {args.repeats} timed runs (median per round, then median of rounds), "
          f"{args.threads} threads; 1-minute load {min(loads):.2f}–{max(loads):.2f}\n",
          "| what | n | ours flash (ms) | torch sdpa (ms) | ours / torch |" + (" before (ms) | before / torch |" if args.before else ""),
          "|---|---|---|---|---|" + ("---|---|" if args.before else "")]
    for what in args.what:
        for n in args.n:
            med = {}
            for impl in ("ours", "torch", "before"):
                ts = [float(r["time_ms"]) for r in rows if r["impl"] == impl and r["what"] == what and r["n"] == n]
                med[impl] = statistics.median(ts) if ts else None
            if med["ours"] and med["torch"]:
                line = f"| {what} | {n} | {med['ours']:.1f} | {med['torch']:.1f} | {med['ours'] / med['torch']:.2f} |"
                if med["before"]:
                    line += f" {med['before']:.1f} | {med['before'] / med['torch']:.2f} |"
                md.append(line)
    text = "\n".join(md) + "\n"
    with open(args.out + ".md", "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
