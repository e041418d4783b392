#!/usr/bin/env python3
"""The PyTorch peer benchmark: the configurations of bench/bench_attention.cpp, measured in PyTorch
on the CPU, written as a CSV (see docs/peer_bench.md for the definitions and the caveats).

  python scripts/peer_bench.py --out bench/peer.csv [--kinds linformer,full,sdpa,linformer_model]
      [--what forward,...] [--n 512,1024,...] [--k 128,256,...] [--threads 2] [--repeats 5]
      [--warmup 2] [--max-seconds 60] [--max-mem-gib 16] [--precision fp32|bf16|int8]

Kinds (impl "pytorch", d_model 512, heads 8, batch 1, float32):
  linformer        lucidrains LinformerSelfAttention(dim=d, seq_len=n, k=k, heads=h)
  full             plain softmax attention: q/k/v/out linear maps, scores, softmax, @ v
  sdpa             the same module through torch.nn.functional.scaled_dot_product_attention
  linformer_model  lucidrains LinformerLM(num_tokens=260, dim=d, seq_len=n, depth=6, k=k, heads=h)
What: forward / forward_backward for the layers; train_step / inference for the model.
--precision bf16 runs each pass under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's CPU mixed
precision (the peer of `linformer --precision bf16`); its rows are impl "pytorch-bf16".
--precision int8 runs the inference passes (forward, inference) of the module after
torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8), PyTorch's dynamic
quantisation (the peer of `linformer --precision int8`: every nn.Linear quantised, Linformer's E/F
projections, which are parameters, left in fp32), on the x86 (fbgemm) quantised engine; its rows are impl
"pytorch-int8". Its defaults differ from ours in two ways: the weight has one scale per tensor (ours one
per output channel), and the input is quantised to 7 bits (reduce_range, for CPUs without VNNI; ours 8).
The passes that train are left out (and refused when named in --what).

Every configuration runs in a fresh child process (this script re-invoked with the hidden `--one`
flag), so its peak RSS is its own: peak_mem_bytes = the child's ru_maxrss minus its VmRSS read just
before the module and the input are built. Progress goes to stderr; rows are appended to
<out>.partial as they come, and <out> is written atomically at the end.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

COLUMNS = ["impl", "kind", "what", "n", "k", "d_model", "heads", "batch", "threads", "time_ms",
           "peak_mem_bytes", "repeats", "note"]
KINDS = ("linformer", "full", "sdpa", "linformer_model")
WHATS = {"linformer": ("forward", "forward_backward"), "full": ("forward", "forward_backward"),
         "sdpa": ("forward", "forward_backward"), "linformer_model": ("train_step", "inference")}
LINFORMER_KINDS = ("linformer", "linformer_model")
INFERENCE_WHATS = ("forward", "inference")  # the passes --precision int8 runs
D_MODEL, HEADS, BATCH, DEPTH, NUM_TOKENS = 512, 8, 1, 6, 260
GIB = 1 << 30


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def name_list(allowed):
    def parse(text):
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in names if v not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; choose from {','.join(allowed)}")
        return names
    return parse


# --- memory estimate (parent side, no torch needed) --------------------------------------------------
def estimate_bytes(kind, what, n, k):
    """A rough upper estimate of the configuration's working set in bytes (float32), used only to
    refuse configurations that would not fit. The quadratic term is the one that matters: naive full
    attention keeps h·n² scores (4·h·n² bytes); the forward holds two such matrices at once (the
    scores and their softmax), forward+backward about three (the probabilities kept for the backward,
    their gradient, the scores' gradient)."""
    f = 4
    d, h = D_MODEL, HEADS
    backward = what in ("forward_backward", "train_step")
    acts = 12 * n * d * f  # x, q, k, v, attention output, output, and their gradients
    if kind == "full":  # forward: the scores and the softmax made of them live together
        return acts + (3 if backward else 2) * h * n * n * f
    if kind == "sdpa":  # on the CPU, float32 without a mask runs the blocked flash kernel: O(n) memory
        return acts * 2
    if kind == "linformer":
        # lucidrains keeps the scaled scores and their softmax (h·n·k each) alive together; E and F
        # are n×k parameters (and gradients)
        return acts + (3 if backward else 2) * h * n * k * f + 2 * n * k * f * (2 if backward else 1)
    # linformer_model: per layer the attention above plus the 4d MLP and layer norms, kept for the
    # backward; the logits; parameters, gradients and AdamW's two moments.
    layer = 24 * n * d * f + 3 * h * n * k * f + 2 * n * k * f
    params = DEPTH * (4 * d * d + 2 * n * k + 8 * d * d) + (NUM_TOKENS + n) * d + d * NUM_TOKENS
    per_layer = layer if backward else layer // 3
    return DEPTH * per_layer + 3 * n * NUM_TOKENS * f + params * f * (4 if backward else 1)


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- the child: one configuration ---------------------------------------------------------------------
def vm_rss_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def lm_train_step(module, tokens, targets):
    """linformer_model's training step (scripts/profile_step.py profiles the same): zero_grad, forward,
    cross-entropy over every position, backward, AdamW(lr=1e-4) step. Returns the step function."""
    import torch
    import torch.nn.functional as F

    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = module(tokens)
        loss = F.cross_entropy(logits.reshape(-1, NUM_TOKENS), targets.reshape(-1))
        loss.backward()
        opt.step()
    return step


def run_one(cfg):
    """Runs one configuration; returns a dict with time_ms, peak_mem_bytes, repeats, note."""
    import resource
    import statistics
    import threading

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(cfg["threads"])
    torch.set_num_interop_threads(1)
    from linformer import LinformerLM, LinformerSelfAttention

    class SoftmaxAttention(torch.nn.Module):
        """softmax(Q Kᵀ/√d_h) V per head, then the output map (q/k/v without bias, out with bias, as
        the C++ `full` kind's defaults). fused=True calls scaled_dot_product_attention instead."""

        def __init__(self, d, h, fused):
            super().__init__()
            self.h, self.d_h, self.fused = h, d // h, fused
            self.to_q = torch.nn.Linear(d, d, bias=False)
            self.to_k = torch.nn.Linear(d, d, bias=False)
            self.to_v = torch.nn.Linear(d, d, bias=False)
            self.to_out = torch.nn.Linear(d, d)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = (t(x).reshape(b, n, self.h, self.d_h).transpose(1, 2)
                       for t in (self.to_q, self.to_k, self.to_v))
            if self.fused:
                o = F.scaled_dot_product_attention(q, k, v)
            else:
                o = (q @ k.transpose(-1, -2) * (self.d_h ** -0.5)).softmax(dim=-1) @ v
            return self.to_out(o.transpose(1, 2).reshape(b, n, d))

    kind, what, n, k = cfg["kind"], cfg["what"], cfg["n"], cfg["k"]
    d, h = D_MODEL, HEADS
    torch.manual_seed(1234)

    base_rss = vm_rss_bytes()  # right before the module and the input are built
    if kind == "linformer":
        module = LinformerSelfAttention(dim=d, seq_len=n, k=k, heads=h)
    elif kind in ("full", "sdpa"):
        module = SoftmaxAttention(d, h, fused=(kind == "sdpa"))
    else:
        module = LinformerLM(num_tokens=NUM_TOKENS, dim=d, seq_len=n, depth=DEPTH, k=k, heads=h)

    if kind == "linformer_model":
        tokens = torch.randint(0, NUM_TOKENS, (BATCH, n))
        targets = torch.randint(0, NUM_TOKENS, (BATCH, n))
        if what == "train_step":
            step = lm_train_step(module, tokens, targets)
            prepare = None
        else:
            module.eval()

            def step():
                with torch.inference_mode():
                    module(tokens)
            prepare = None
    else:
        x = torch.rand(BATCH, n, d) * 2 - 1  # uniform in [-1, 1), as the C++ benchmark
        if what == "forward":
            module.eval()

            def step():
                with torch.inference_mode():
                    module(x)
            prepare = None
        else:
            module.train()  # dropout is 0: train mode changes nothing but the flag
            x.requires_grad_(True)  # the C++ backward computes dx too

            def step():
                module(x).sum().backward()

            def prepare():  # untimed, between repeats
                module.zero_grad(set_to_none=True)
                x.grad = None

    if cfg.get("precision", "fp32") == "int8":
        if what not in INFERENCE_WHATS:
            raise SystemExit(f"peer_bench: --precision int8 is for inference passes only, not {what}")
        # fbgemm's kernels, as x86 is on x86 CPUs; qnnpack (ARM) or onednn would measure another library.
        if torch.backends.quantized.engine not in ("x86", "fbgemm"):
            raise SystemExit(f"peer_bench: torch.backends.quantized.engine is {torch.backends.quantized.engine}, "
                             "not x86/fbgemm")
        import torch.ao.quantization

        # In place: the fp32 nn.Linear modules are replaced (and freed), as a deployed model would be.
        torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    elif cfg.get("precision", "fp32") == "bf16":
        plain_step = step

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain_step()

    def timed():
        if prepare is not None:
            prepare()
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    # The first warm-up run is watched: past max_seconds the child reports a skip and exits (the
    # timer thread runs while torch's kernels hold no GIL).
    max_s = cfg["max_seconds"]

    def give_up():
        print(json.dumps({"time_ms": None, "peak_mem_bytes": None, "repeats": 0,
                          "note": f"skipped: warm-up run > max-seconds {max_s:g} s (stopped)"}), flush=True)
        os._exit(0)

    watchdog = threading.Timer(max_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    first = timed()
    watchdog.cancel()
    if first > max_s:
        note = f"skipped: warm-up run {first:.1f} s > max-seconds {max_s:g} s"
        return {"time_ms": None, "peak_mem_bytes": None, "repeats": 0, "note": note, "warmup_s": first}
    for _ in range(cfg["warmup"] - 1):
        timed()
    times = [timed() for _ in range(cfg["repeats"])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"time_ms": statistics.median(times) * 1e3, "peak_mem_bytes": peak - base_rss,
            "repeats": len(times), "note": "", "warmup_s": first}


def child_main(spec):
    cfg = json.loads(spec)
    result = run_one(cfg)
    print(json.dumps(result), flush=True)  # the last stdout line is the result


# --- the parent: the sweep -------------------------------------------------------------------------
def configurations(args):
    for kind in args.kinds:
        whats = [w for w in WHATS[kind] if (args.what is None or w in args.what)
                 and (args.precision != "int8" or w in INFERENCE_WHATS)]
        for what in whats:
            ks = args.k if kind in LINFORMER_KINDS else [0]
            for k in ks:
                for n in sorted(args.n):
                    if kind in LINFORMER_KINDS and k > n:
                        continue
                    yield {"kind": kind, "what": what, "n": n, "k": k}


def run_child(cfg, args):
    spec = dict(cfg, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                max_seconds=args.max_seconds, precision=args.precision)
    env = dict(os.environ)
    # The OpenMP / MKL pools are sized before torch.set_num_threads runs; keep them at the same count.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    # Past the first warm-up (watched inside the child) the rest may take warmup + repeats more
    # runs of up to max_seconds each; beyond that (plus start-up) the child is stopped.
    limit = args.max_seconds * (args.warmup + args.repeats + 1) + 120
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return {"time_ms": None, "peak_mem_bytes": None, "repeats": 0,
                "note": f"failed: child stopped after {limit:g} s"}
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if proc.returncode < 0:
        why = f"child killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    else:
        why = f"child exit status {proc.returncode}"
    err = proc.stderr.strip().splitlines()
    if err:
        log(f"    child stderr (last lines):\n      " + "\n      ".join(err[-5:]))
        why += ": " + err[-1][:200]
    return {"time_ms": None, "peak_mem_bytes": None, "repeats": 0, "note": "failed: " + why.replace("\n", " ")}


def predicted_seconds(prev, cfg):
    """The previous (smaller n) warm-up time of the same series scaled by the kind's cost growth:
    n² for exact attention, n for Linformer."""
    if prev is None:
        return None
    n0, t0 = prev
    exponent = 2 if cfg["kind"] in ("full", "sdpa") else 1
    return t0 * (cfg["n"] / n0) ** exponent


def row_for(cfg, args, result):
    t = result.get("time_ms")
    m = result.get("peak_mem_bytes")
    impl = "pytorch" if args.precision == "fp32" else f"pytorch-{args.precision}"
    return {"impl": impl, "kind": cfg["kind"], "what": cfg["what"], "n": cfg["n"], "k": cfg["k"],
            "d_model": D_MODEL, "heads": HEADS, "batch": BATCH, "threads": args.threads,
            "time_ms": "" if t is None else f"{t:.3f}", "peak_mem_bytes": "" if m is None else int(m),
            "repeats": result.get("repeats", 0), "note": result.get("note", "")}


def parent_main(args):
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = out + ".partial"
    configs = list(configurations(args))
    log(f"peer_bench: {len(configs)} configurations, threads {args.threads}, repeats {args.repeats}, "
        f"warmup {args.warmup}, max-seconds {args.max_seconds:g}, max-mem-gib {args.max_mem_gib:g}")
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"peer_bench: warning: the machine is not idle (1-minute load average {load:.2f}); "
            "timings taken now are not comparable")
    rows = []
    last = {}  # (kind, what, k) -> (n, warm-up seconds) of the last completed run of that series
    with open(partial, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        fh.flush()
        for i, cfg in enumerate(configs, 1):
            label = f"[{i}/{len(configs)}] {cfg['kind']} {cfg['what']} n={cfg['n']} k={cfg['k']}"
            series = (cfg["kind"], cfg["what"], cfg["k"])
            need = estimate_bytes(cfg["kind"], cfg["what"], cfg["n"], cfg["k"])
            avail = mem_available_bytes()
            guess = predicted_seconds(last.get(series), cfg)
            t0 = time.perf_counter()
            if need > args.max_mem_gib * GIB:
                result = {"note": f"skipped: estimated {need / GIB:.1f} GiB > max-mem-gib {args.max_mem_gib:g}"}
            elif avail is not None and need > 0.9 * avail:
                result = {"note": f"skipped: estimated {need / GIB:.1f} GiB > 90% of available {avail / GIB:.1f} GiB"}
            elif guess is not None and guess > 2 * args.max_seconds:
                # Far past the budget by extrapolation: not worth max-seconds of machine time to confirm.
                result = {"note": f"skipped: warm-up run predicted ~{guess:.3g} s > max-seconds {args.max_seconds:g} s"}
            else:
                result = run_child(cfg, args)
                if result.get("warmup_s") is not None:
                    last[series] = (cfg["n"], result["warmup_s"])
                elif result.get("note", "").startswith("skipped: warm-up"):
                    last[series] = (cfg["n"], float(args.max_seconds))
            if result.get("time_ms") is None and not result.get("note"):
                result["note"] = "failed: no result"
            if result.get("time_ms") is not None:
                what = f"{result['time_ms']:.2f} ms, peak +{result['peak_mem_bytes'] / 2**20:.1f} MiB"
            else:
                what = result["note"]
            log(f"{label}: {what}  ({time.perf_counter() - t0:.1f} s)")
            row = row_for(cfg, args, result)
            rows.append(row)
            writer.writerow(row)
            fh.flush()

    tmp = out + ".tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    os.remove(partial)
    log(f"peer_bench: wrote {len(rows)} rows to {args.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="the CSV to write (required)")
    p.add_argument("--kinds", type=name_list(KINDS), default=list(KINDS))
    p.add_argument("--what", type=name_list(("forward", "forward_backward", "train_step", "inference")),
                   default=None, help="only these passes (default: every pass of each kind)")
    p.add_argument("--n", type=int_list, default=[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--k", type=int_list, default=[128, 256, 512, 1024, 2048],
                   help="projected lengths, linformer kinds only (k <= n)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="skip a configuration whose first warm-up run takes longer (seconds)")
    p.add_argument("--max-mem-gib", type=float, default=16.0,
                   help="skip a configuration whose estimated memory is larger (GiB)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="bf16: each pass under torch.autocast('cpu', dtype=torch.bfloat16); int8: the inference "
                        "passes after quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration (JSON)
    args = p.parse_args()
    if args.one is not None:
        child_main(args.one)
        return
    if not args.out:
        p.error("--out is required")
    if args.precision == "int8" and args.what is not None and set(args.what) - set(INFERENCE_WHATS):
        p.error(f"--precision int8 is for inference only: --what {','.join(sorted(set(args.what) - set(INFERENCE_WHATS)))} trains")
    if args.threads < 1 or args.repeats < 1 or args.warmup < 1 or args.max_seconds <= 0 or args.max_mem_gib <= 0:
        p.error("--threads, --repeats and --warmup must be >= 1; --max-seconds and --max-mem-gib > 0")
    try:
        parent_main(args)
    except KeyboardInterrupt:
        log(f"peer_bench: interrupted; the rows measured so far are in {args.out}.partial")
        sys.exit(130)


if __name__ == "__main__":
    main()
