#!/usr/bin/env python3
"""linformer.torch.LinformerSelfAttention against lucidrains' LinformerSelfAttention, in one process.

Both modules hold the same weights (his state dict loaded into ours) and run on the same input; each
repeat times ours then his (forward under no_grad, then forward+backward of sum(y)), so both see the
same machine state, and the table reports the medians. d = 512, h = 8, k = 256 by default; torch's
thread count (which our module follows) is set to --threads.

  python scripts/bench_torch_module.py                       # bench/results/<cpu>/torch_module.csv (+ .md)
  python scripts/bench_torch_module.py --sizes 1x512,2x1024 --repeats 5 --out /tmp/t.csv

Needs torch, lucidrains' `linformer` (found beside ours: python/tests/lucidrains.py) and ours installed.
"""
import argparse
import csv
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python", "tests"))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import lucidrains  # noqa: E402
import machine  # noqa: E402
from linformer.torch import LinformerSelfAttention  # noqa: E402


def sizes(text):
    out = []
    for item in text.split(","):
        b, n = item.lower().split("x")
        out.append((int(b), int(n)))
    return out


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_size(his_cls, B, n, args):
    torch.manual_seed(0)
    kw = dict(dim=args.dim, seq_len=n, k=min(args.k, n), heads=args.heads)
    ref = his_cls(**kw)
    ours = LinformerSelfAttention(**kw)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, n, args.dim)
    with torch.no_grad():
        err = (ours(x) - ref(x)).abs().max().item()

    def fwd(m):
        with torch.no_grad():
            m(x)

    def fwd_bwd(m):
        xg = x.detach().requires_grad_()
        m(xg).sum().backward()
        m.zero_grad(set_to_none=True)

    times = {(who, what): [] for who in ("ours", "lucidrains") for what in ("forward", "forward_backward")}
    for r in range(args.warmup + args.repeats):
        for what, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
            for who, m in (("ours", ours), ("lucidrains", ref)):
                t = timed(lambda: fn(m))
                if r >= args.warmup:
                    times[(who, what)].append(t)
    rows = []
    for what in ("forward", "forward_backward"):
        o = statistics.median(times[("ours", what)])
        h = statistics.median(times[("lucidrains", what)])
        rows.append(dict(B=B, n=n, d=args.dim, h=args.heads, k=kw["k"], threads=args.threads, what=what,
                         ours_ms=round(o * 1e3, 2), lucidrains_ms=round(h * 1e3, 2), speedup=round(h / o, 2),
                         max_abs_diff=f"{err:.1e}", repeats=args.repeats))
        print(f"B={B} n={n} {what}: ours {o * 1e3:.1f} ms, lucidrains {h * 1e3:.1f} ms ({h / o:.2f}x)", flush=True)
    return rows


def markdown(rows):
    head = "| B | n | what | ours (ms) | lucidrains (ms) | lucidrains / ours | max abs diff |\n|---|---|---|---|---|---|---|\n"
    return head + "".join(f"| {r['B']} | {r['n']} | {r['what'].replace('_', '+')} | {r['ours_ms']} | "
                          f"{r['lucidrains_ms']} | {r['speedup']} | {r['max_abs_diff']} |\n" for r in rows)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=sizes, default=sizes("8x512,4x1024,1x4096"), help="BxN,... (default %(default)s)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=None, help="CSV path (default bench/results/<cpu>/torch_module.csv); "
                                               "the markdown table goes beside it as <out>.md")
    args = p.parse_args()
    his, why = lucidrains.load()
    if his is None:
        sys.exit(f"bench_torch_module: {why}")
    torch.set_num_threads(args.threads)
    out = args.out or os.path.join(REPO, machine.results_dir(), "torch_module.csv")
    rows = []
    for B, n in args.sizes:
        rows += bench_size(his.LinformerSelfAttention, B, n, args)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = markdown(rows)
    with open(out + ".md", "w") as fh:
        fh.write(f"{machine.describe(machine.cpu_info())}, torch {torch.__version__}, {args.threads} threads, "
                 f"d = {args.dim}, h = {args.heads}, k = {args.k}, median of {args.repeats}\n\n" + table)
    print(table)
    print(f"wrote {out} and {out}.md")


if __name__ == "__main__":
    main()
