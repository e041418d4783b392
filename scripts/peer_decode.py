#!/usr/bin/env python3
"""The PyTorch peer of bench/bench_decode.cpp (issue 17 item 5): the time to generate one token with
one causal attention layer after a context of t positions, and the bytes its cache holds, as a CSV.

  python scripts/peer_decode.py --out peer_decode.csv [--kinds full,sdpa,local] [--t 1024,2048,...]
      [--threads 2] [--steps 8] [--max-seconds 60]

d_model 512, heads 8, batch 1, float32, torch.no_grad(), torch.set_num_threads(--threads). As ours:
the context is prefilled in parallel (untimed, reported as prefill_ms), one token is decoded untimed,
then --steps tokens one at a time; ms_per_token is their mean.

Kinds (impl "pytorch"):
  full   a plain multi-head attention layer (q/k/v/out linear maps) with a KV cache: K and V
         preallocated (batch, heads, t + steps + 1, d_head), each step writes its k, v at its position
         and attends with matmul, softmax, matmul over the cache so far
  sdpa   the same cache, each step through torch.nn.functional.scaled_dot_product_attention
  local  lucidrains local-attention's LocalMHA(dim=512, heads=8, dim_head=64, causal=True,
         window_size=--window) with its own KV cache (forward(x, cache=..., return_cache=True)), the
         peer of our `local` (its rotary positions included: that is the package's layer)

lucidrains' other causal efficient-attention packages keep no decoding state, so they have no cached
peer here (docs/benchmarks.md, "Generation"): linear-attention-transformer 0.19.1 and
performer-pytorch 1.1.4 (their causal linear attention recomputes a prefix sum over the whole input on
each call). The versions are pinned in scripts/requirements-peer.txt.
Rows are appended to --out as they come (the file is created with its header when missing), so a run
killed midway keeps its rows and bench_decode.sh can call this once per context.
"""
import argparse
import csv
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

COLUMNS = ["impl", "kind", "context", "round", "d_model", "heads", "batch", "threads", "ms_per_token", "prefill_ms",
           "cache_bytes", "steps", "note"]
KINDS = ("full", "sdpa", "local")
D_MODEL, HEADS, BATCH = 512, 8, 1


from peer_bench import int_list, log, name_list  # noqa: E402 (the shared argument parsers)

kind_list = name_list(KINDS)


def make_cached_mha(torch, use_sdpa):
    nn, F = torch.nn, torch.nn.functional

    class CachedMHA(nn.Module):
        """Causal multi-head attention with a preallocated KV cache."""

        def __init__(self, d, h):
            super().__init__()
            self.h, self.dh = h, d // h
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)

        def start(self, batch, capacity):
            shape = (batch, self.h, capacity, self.dh)
            self.k_cache, self.v_cache = torch.empty(shape), torch.empty(shape)
            self.length = 0

        def cache_bytes(self):
            return sum(c.numel() * c.element_size() for c in (self.k_cache, self.v_cache))

        def forward(self, x):  # x (B, n_new, d): the next positions; prefill when n_new > 1
            B, n, d = x.shape
            q, k, v = (t.view(B, n, self.h, self.dh).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
            t0, t1 = self.length, self.length + n
            self.k_cache[:, :, t0:t1] = k
            self.v_cache[:, :, t0:t1] = v
            self.length = t1
            keys, values = self.k_cache[:, :, :t1], self.v_cache[:, :, :t1]
            if n > 1:  # prefill: the parallel causal attention (the prompt starts the cache: t0 = 0)
                o = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
            elif use_sdpa:
                o = F.scaled_dot_product_attention(q, keys, values)
            else:
                scores = (q @ keys.transpose(-1, -2)) * (1.0 / math.sqrt(self.dh))
                o = scores.softmax(dim=-1) @ values
            return self.out(o.transpose(1, 2).reshape(B, n, d))

    return CachedMHA


class KvPeer:
    def __init__(self, torch, kind):
        self.module = make_cached_mha(torch, kind == "sdpa")(D_MODEL, HEADS).eval()

    def start(self, capacity):
        self.module.start(BATCH, capacity)

    def step(self, x):
        return self.module(x)

    def cache_bytes(self):
        return self.module.cache_bytes()


class LocalPeer:
    """lucidrains' LocalMHA with its KV cache: each cached step concatenates its k, v to the cache and
    keeps the last window + 1 of them (exact_windowsize: the same 256 previous keys and itself as our
    causal `local`), so after the first step the cache is bounded; the prefill returns the whole
    context's k, v, which the first step trims (the untimed warm-up token)."""

    def __init__(self, torch, window):
        from local_attention import LocalMHA
        self.torch = torch
        self.module = LocalMHA(dim=D_MODEL, heads=HEADS, dim_head=D_MODEL // HEADS, window_size=window,
                               causal=True).eval()
        self.cache = None

    def start(self, capacity):
        self.cache = None

    def step(self, x):
        out, self.cache = self.module(x, cache=self.cache, return_cache=True)
        return out

    def cache_bytes(self):
        tensors = self.cache if isinstance(self.cache, (tuple, list)) else [self.cache]
        return sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "numel"))


def measure(torch, peer, t, steps):
    torch.manual_seed(1234)
    x = torch.rand(BATCH, t + 1 + steps, D_MODEL) * 2 - 1
    peer.start(t + 1 + steps)
    start = time.perf_counter()
    peer.step(x[:, :t])
    prefill_ms = (time.perf_counter() - start) * 1e3
    peer.step(x[:, t:t + 1])  # first-use allocations are no per-token cost
    start = time.perf_counter()
    for i in range(steps):
        peer.step(x[:, t + 1 + i:t + 2 + i])
    return (time.perf_counter() - start) * 1e3 / steps, prefill_ms, peer.cache_bytes()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--kinds", type=kind_list, default=list(KINDS))
    p.add_argument("--t", type=int_list, default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--round", type=int, default=1, help="written in the round column (bench_decode.sh's rounds)")
    p.add_argument("--window", type=int, default=256, help="local's window (our local's default)")
    p.add_argument("--max-seconds", type=float, default=60,
                   help="skip the larger contexts of a kind once one configuration took longer")
    args = p.parse_args(argv)
    if args.threads <= 0 or args.steps <= 0:
        p.error("--threads and --steps must be positive")

    import warnings
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # torch without numpy: not needed here
    import torch
    torch.set_num_threads(args.threads)
    new = not os.path.exists(args.out) or os.path.getsize(args.out) == 0
    with open(args.out, "a", newline="") as fh, torch.no_grad():
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for kind in args.kinds:
            slow = False
            for t in args.t:
                row = {"impl": "pytorch", "kind": kind, "context": t, "round": args.round, "d_model": D_MODEL, "heads": HEADS,
                       "batch": BATCH, "threads": args.threads, "steps": args.steps, "note": ""}
                if slow:
                    row["note"] = f"skipped: a smaller context took over {args.max_seconds:g} s"
                else:
                    peer = LocalPeer(torch, args.window) if kind == "local" else KvPeer(torch, kind)
                    start = time.perf_counter()
                    ms, prefill_ms, cache = measure(torch, peer, t, args.steps)
                    slow = time.perf_counter() - start > args.max_seconds
                    row.update(ms_per_token=f"{ms:.4f}", prefill_ms=f"{prefill_ms:.2f}", cache_bytes=cache)
                    if kind == "local":
                        row["note"] = f"window {args.window}"
                    log(f"peer_decode: {kind} t={t}: {ms:.3f} ms/token, cache {cache / 2**20:.1f} MiB")
                w.writerow(row)
                fh.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
