#!/usr/bin/env python3
"""Where the whole model loses to PyTorch: a per-op profile of one training step and one inference,
ours and PyTorch's side by side (docs/peer_bench.md, "Per-op profile against PyTorch").

  /opt/golden-venv/bin/python scripts/profile_step.py [--n 4096] [--k 256] [--layers 6] [--threads 2]
      [--warmup 2] [--repeats 3] [--what model_train_step,model_inference]
      [--binary build/linformer] [--out bench/results/<cpu>/profile] [--precision fp32|bf16]

For each measurement, ours then PyTorch's (interleaved, each in a process of its own, the same
thread count): warm-up runs, --repeats unprofiled runs (their median is the step time), then ONE
profiled run.
  ours     `linformer bench --kinds linformer --profile`: the bench's model (d 512, 8 heads, d_ff
           2048, --layers layers, Linformer k), every op of src/ops/ timed by name and GEMM shape
  PyTorch  lucidrains LinformerLM(num_tokens=260, dim=512, seq_len=n, depth=layers, k=k, heads=8)
           under torch.profiler (CPU, record_shapes=True); the training step is scripts/peer_bench.py's
           (zero_grad, forward, cross-entropy, backward, AdamW step), the inference a forward under
           torch.no_grad()
--precision bf16: ours with `--precision bf16`, PyTorch's step under torch.autocast("cpu", bfloat16).
Both sides' ops go into the same categories (gemm, softmax, layernorm, gelu, element-wise, embedding,
cross-entropy, optimizer, other); GEMMs are matched by shape, with FLOPs from the shapes.

Writes, under --out, ours_<cfg>.csv and pytorch_<cfg>.csv (what,kind,n,k,op,detail,calls,ms,gflops,
gflop_per_s,category) and report_<cfg>.md, <cfg> = n<N>_k<K>_l<layers>_t<threads> (+ _bf16). The script itself
needs only the standard library; torch and linformer are imported by the PyTorch child alone.
"""
import argparse
import csv
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import machine
from peer_bench import D_MODEL, HEADS, NUM_TOKENS, lm_train_step  # the model and step peer_bench.py measures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHATS = ("model_train_step", "model_inference")
COLUMNS = ["what", "kind", "n", "k", "op", "detail", "calls", "ms", "gflops", "gflop_per_s", "category"]
CATEGORIES = ("gemm", "softmax", "layernorm", "gelu", "element-wise", "embedding", "cross-entropy", "optimizer",
              "other")
OUTSIDE, STEP, MEDIAN = "(outside ops)", "(step)", "(unprofiled median)"

# Our ops (src/ops/) by category; any other op is "other".
OUR_CATEGORIES = {
    "gemm": ("matmul", "linear_forward", "linear_backward"),
    "softmax": ("softmax_forward", "softmax_backward"),
    "layernorm": ("layernorm_forward", "layernorm_backward", "layernorm_apply"),
    "gelu": ("gelu_forward", "gelu_backward"),
    "embedding": ("embedding_forward", "embedding_backward", "sinusoidal_positions_add"),
    "cross-entropy": ("cross_entropy_forward", "cross_entropy_backward"),
    "optimizer": ("adamw_step", "global_norm"),
    "element-wise": ("fill", "copy", "copy_strided", "axpby", "add", "scale", "all_finite", "relu_forward",
                     "relu_backward", "dropout_forward", "dropout_backward", "zero_masked_rows", "add_column_sums",
                     "mask_scores", "masked_row_sums", "masked_row_sums_backward", "add_row_weighted_bias",
                     "add_row_weighted_bias_backward", "slot_bias", "slot_bias_backward", "sequence_pool_forward",
                     "sequence_pool_backward"),
}
OUR_CATEGORY = {op: cat for cat, ops in OUR_CATEGORIES.items() for op in ops}

# PyTorch: the ops that are a matrix product (a leaf among them is timed as one GEMM, children
# included), and those that only make views or allocate (framework overhead: "other").
TORCH_GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mv", "aten::addmv",
               "aten::_addmm_activation", "aten::linear", "aten::matmul"}
TORCH_WRAPPERS = TORCH_GEMMS | {"aten::einsum"}  # a product's wrapper (not a leaf): its own time is "other"
TORCH_VIEWS = {"view", "reshape", "_reshape_alias", "_unsafe_view", "transpose", "t", "permute", "expand",
               "expand_as", "as_strided", "unsqueeze", "squeeze", "slice", "select", "alias", "detach", "detach_",
               "unflatten", "flatten", "split", "chunk", "narrow", "unbind", "empty", "empty_like",
               "empty_strided", "resize_", "contiguous", "item", "_local_scalar_dense", "lift_fresh",
               "result_type", "is_nonzero", "resolve_conj", "resolve_neg", "to", "arange", "new_empty",
               "new_empty_strided", "set_", "_has_compatible_shallow_copy_type"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- categories and GEMM shapes ---------------------------------------------------------------------
def semantic_category(name):
    """The category an op or autograd node's name says, or None (checked innermost first)."""
    low = name.lower()
    if any(s in low for s in ("cross_entropy", "nll_loss", "nllloss", "log_softmax", "logsoftmax")):
        return "cross-entropy"
    for key, cat in (("softmax", "softmax"), ("layer_norm", "layernorm"), ("layernorm", "layernorm"),
                     ("gelu", "gelu"), ("embedding", "embedding")):
        if key in low:
            return cat
    return None


def prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def gemm_shape(name, shapes):
    """(M, N, K, batch) of a PyTorch matrix product from its input shapes, or None."""
    try:
        op = name.split("::")[-1]
        if op == "mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return m, n, k, 1
        if op in ("addmm", "_addmm_activation"):
            (m, k), (_, n) = shapes[1], shapes[2]
            return m, n, k, 1
        if op == "bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return m, n, k, b
        if op in ("baddbmm", "addbmm"):
            (b, m, k), (_, _, n) = shapes[1], shapes[2]
            return m, n, k, b
        if op in ("mv", "addmv"):
            m, k = shapes[0] if op == "mv" else shapes[1]
            return m, 1, k, 1
        if op == "linear":
            x, w = shapes[0], shapes[1]
            return prod(x[:-1]), w[0], x[-1], 1
        if op == "matmul":
            a, b = shapes[0], shapes[1]
            m, k = (1, a[0]) if len(a) == 1 else (a[-2], a[-1])
            n = 1 if len(b) == 1 else b[-1]
            ba, bb = a[:-2], b[:-2]
            width = max(len(ba), len(bb))
            ba, bb = [1] * (width - len(ba)) + list(ba), [1] * (width - len(bb)) + list(bb)
            return m, n, k, prod(max(x, y) for x, y in zip(ba, bb))
    except (IndexError, TypeError, ValueError):
        return None
    return None


def gemm_text(m, n, k, batch):
    return f"M={m} N={n} K={k} batch={batch}"


def parse_gemm(detail):
    """(M, N, K, batch) from a detail "... M=a N=b K=c ... batch=d", or None."""
    got = dict(re.findall(r"\b(M|N|K|batch)=(\d+)", detail or ""))
    if not all(x in got for x in ("M", "N", "K")):
        return None
    return int(got["M"]), int(got["N"]), int(got["K"]), int(got.get("batch", 1))


def torch_rows(events, wall_s, what, n, k):
    """Rows of one profiled PyTorch run: per (op, detail, category) the calls, exclusive ms and
    GFLOP. `events` are torch.profiler FunctionEvents (name, input_shapes, cpu_parent, cpu_children,
    self_cpu_time_total and cpu_time_total in µs, thread); only the main thread's count. A GEMM leaf
    (a product with no product under it) counts with its children (bias copies, conj checks); any
    other event by its self time, so the rows add up to the time inside ops."""
    if not events:
        return []
    threads = {}
    for e in events:
        threads[e.thread] = threads.get(e.thread, 0) + 1
    main = max(threads, key=threads.get)
    memo = {}

    def has_gemm_below(e):
        key = id(e)
        if key not in memo:
            memo[key] = any(c.name in TORCH_GEMMS or has_gemm_below(c) for c in e.cpu_children)
        return memo[key]

    def is_gemm_leaf(e):
        return e.name in TORCH_GEMMS and not has_gemm_below(e)

    agg = {}
    for e in events:
        if e.thread != main:
            continue
        chain, p = [e], e.cpu_parent
        while p is not None:
            chain.append(p)
            p = p.cpu_parent
        if any(is_gemm_leaf(a) for a in chain[1:]):
            continue  # inside a GEMM leaf: counted with it
        flops, detail = 0.0, str(list(e.input_shapes or []))
        if any(a.name.startswith("Optimizer.") for a in chain):
            cat = "optimizer"
        elif is_gemm_leaf(e):
            cat = "gemm"
            shape = gemm_shape(e.name, e.input_shapes or [])
            if shape:
                detail, flops = gemm_text(*shape), 2.0 * prod(shape)
        else:
            cat = next((c for c in map(semantic_category, (a.name for a in chain)) if c), None)
            if cat is None:  # aten ops that compute are element-wise; views, wrappers, autograd nodes are not
                short = e.name.split("::", 1)[1] if e.name.startswith("aten::") else None
                compute = short is not None and short not in TORCH_VIEWS and e.name not in TORCH_WRAPPERS
                cat = "element-wise" if compute else "other"
        us = e.cpu_time_total if cat == "gemm" else e.self_cpu_time_total
        row = agg.setdefault((e.name, detail, cat), [0, 0.0, 0.0])
        row[0] += 1
        row[1] += us * 1e-3
        row[2] += flops
    rows = [make_row(what, n, k, op, detail, calls, ms, flops, cat)
            for (op, detail, cat), (calls, ms, flops) in agg.items()]
    rows.sort(key=lambda r: -r["ms"])
    inside = sum(r["ms"] for r in rows)
    rows.append(make_row(what, n, k, OUTSIDE, "", 1, wall_s * 1e3 - inside, 0, OUTSIDE))
    rows.append(make_row(what, n, k, STEP, "", 1, wall_s * 1e3, 0, STEP))
    return rows


def make_row(what, n, k, op, detail, calls, ms, flops, category):
    return {"what": what, "kind": "linformer", "n": n, "k": k, "op": op, "detail": detail, "calls": calls,
            "ms": ms, "gflops": flops * 1e-9,
            "gflop_per_s": flops * 1e-9 / (ms * 1e-3) if flops > 0 and ms > 0 else "", "category": category}


def our_category(op):
    return op if op in (OUTSIDE, STEP, MEDIAN) else OUR_CATEGORY.get(op, "other")


def read_rows(path):
    """Rows of a profile CSV, numbers parsed; ours get their category here."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            r["calls"] = int(r["calls"])
            r["ms"] = float(r["ms"])
            r["gflops"] = float(r["gflops"] or 0)
            r["category"] = r.get("category") or our_category(r["op"])
            rows.append(r)
    return rows


def write_rows(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "ms": f"{r['ms']:.6f}", "gflops": f"{r['gflops']:.6g}",
                        "gflop_per_s": f"{float(r['gflop_per_s']):.2f}" if r.get("gflop_per_s") not in ("", None)
                        else ""})
    os.replace(tmp, path)


# --- the PyTorch child ------------------------------------------------------------------------------
def torch_child(spec):
    """One measurement of LinformerLM in PyTorch; prints one JSON line: versions, the median of the
    unprofiled runs and the profiled run's rows."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    from linformer import LinformerLM

    n, k, what = spec["n"], spec["k"], spec["what"]
    torch.manual_seed(1234)
    model = LinformerLM(num_tokens=NUM_TOKENS, dim=D_MODEL, seq_len=n, depth=spec["layers"], k=k, heads=HEADS)
    tokens = torch.randint(0, NUM_TOKENS, (1, n))
    targets = torch.randint(0, NUM_TOKENS, (1, n))
    if what == "model_train_step":
        step = lm_train_step(model, tokens, targets)
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(tokens)

    if spec.get("precision", "fp32") == "bf16":
        plain_step = step

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain_step()

    def timed():
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    for _ in range(spec["warmup"]):
        timed()
    times = [timed() for _ in range(spec["repeats"])]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        wall = timed()
    rows = torch_rows(prof.events(), wall, what, n, k)
    rows.append(make_row(what, n, k, MEDIAN, f"median of {len(times)}", len(times),
                         statistics.median(times) * 1e3, 0, MEDIAN))
    print(json.dumps({"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
                      "mkl": bool(torch.backends.mkl.is_available()), "rows": rows}), flush=True)


def run_torch(args, what, python):
    spec = {"what": what, "n": args.n, "k": args.k, "layers": args.layers, "threads": args.threads,
            "warmup": args.warmup, "repeats": args.repeats, "precision": args.precision}
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    proc = subprocess.run([python, os.path.abspath(__file__), "--torch-child", json.dumps(spec)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"profile_step: the PyTorch child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


# --- ours -------------------------------------------------------------------------------------------
def run_ours(args, what, tmp):
    prof, bench = os.path.join(tmp, f"prof_{what}.csv"), os.path.join(tmp, f"bench_{what}.csv")
    cmd = [args.binary, "--threads", str(args.threads), "--precision", args.precision, "bench", "--kinds", "linformer", "--what", what,
           "--n", str(args.n), "--k", str(args.k), "--layers", str(args.layers), "--d-model", str(D_MODEL),
           "--heads", str(HEADS), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--max-seconds", "600", "--csv", bench, "--markdown", os.path.join(tmp, "bench.md"), "--profile", prof]
    env = dict(os.environ, LINFORMER_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"profile_step: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = read_rows(prof)
    if not rows:
        raise SystemExit(f"profile_step: no profile from ours for {what}:\n{proc.stderr[-2000:]}")
    sgemm = None
    with open(bench, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["kind"] == "sgemm" and r["gflops"]:
                sgemm = float(r["gflops"])
            elif r["what"] == what and r["time_ms"]:
                rows.append(make_row(what, args.n, args.k, MEDIAN, f"median of {r['repeats']}", int(r["repeats"]),
                                     float(r["time_ms"]), 0, MEDIAN))
    return rows, sgemm


# --- the report -------------------------------------------------------------------------------------
def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}".replace(",", " ")


def ratio(a, b):
    return "–" if not a or not b else f"{a / b:.2f}×"


def special(rows, op):
    return next((r["ms"] for r in rows if r["op"] == op), None)


def category_table(ours, theirs):
    def by_cat(rows):
        out = {c: 0.0 for c in CATEGORIES}
        for r in rows:
            if r["op"] not in (OUTSIDE, STEP, MEDIAN):
                out[r["category"]] = out.get(r["category"], 0.0) + r["ms"]
        return out
    o, t = by_cat(ours), by_cat(theirs)
    wall_o, wall_t = special(ours, STEP), special(theirs, STEP)
    lines = ["| category | ours ms | ours % | PyTorch ms | PyTorch % | PyTorch − ours ms |", "|---|---:|---:|---:|---:|---:|"]

    def line(name, a, b):
        share = lambda x, w: "–" if x is None or not w else f"{100 * x / w:.1f}"
        diff = "–" if a is None or b is None else fmt(b - a)
        lines.append(f"| {name} | {fmt(a)} | {share(a, wall_o)} | {fmt(b)} | {share(b, wall_t)} | {diff} |")
    for c in sorted(CATEGORIES, key=lambda c: -max(o.get(c, 0), t.get(c, 0))):
        line(c, o.get(c, 0.0), t.get(c, 0.0))
    line("(outside ops)", special(ours, OUTSIDE), special(theirs, OUTSIDE))
    line("**the profiled step**", wall_o, wall_t)
    return lines


def gemm_table(ours, theirs):
    """GEMMs matched by shape: (min(M, N), max(M, N), K), a product and its transpose alike; per side
    the products (calls × batch), ms and GFLOP/s."""
    def collect(rows):
        out = {}
        for r in rows:
            if r["category"] != "gemm":
                continue
            shape = parse_gemm(r["detail"])
            if shape is None:
                continue
            m, n, k, batch = shape
            key = (min(m, n), max(m, n), k)
            e = out.setdefault(key, {"shape": f"{m}×{n}×{k}", "ops": set(), "products": 0, "ms": 0.0, "gflops": 0.0})
            label = r["op"].replace("aten::", "")
            if ":" in r["detail"]:  # ours: linear_backward's "dx: ..." and "dW: ..."
                label += " " + r["detail"].split(":")[0]
            e["ops"].add(label)
            e["products"] += r["calls"] * batch
            e["ms"] += r["ms"]
            e["gflops"] += r["gflops"]
        return out
    o, t = collect(ours), collect(theirs)
    keys = sorted(set(o) | set(t), key=lambda key: -max(o.get(key, {}).get("ms", 0), t.get(key, {}).get("ms", 0)))
    lines = ["| M×N×K | ours: op | products | ms | GFLOP/s | PyTorch: op | products | ms | GFLOP/s | PyTorch / ours time |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]

    def side(e):
        if not e:
            return ["–", "–", "–", "–"]
        rate = e["gflops"] / (e["ms"] * 1e-3) if e["ms"] > 0 else None
        return [", ".join(sorted(e["ops"])), str(e["products"]), fmt(e["ms"], 2), fmt(rate, 0)]
    for key in keys:
        a, b = o.get(key), t.get(key)
        shape = (a or b)["shape"]
        lines.append("| " + " | ".join([shape] + side(a) + side(b) + [ratio(b and b["ms"], a and a["ms"])]) + " |")

    def total(d):
        ms, gf = sum(e["ms"] for e in d.values()), sum(e["gflops"] for e in d.values())
        return ms, gf, (gf / (ms * 1e-3) if ms > 0 else None)
    (oms, ogf, orate), (tms, tgf, trate) = total(o), total(t)
    lines.append(f"| **all GEMMs** | | | {fmt(oms, 2)} | {fmt(orate, 0)} | | | {fmt(tms, 2)} | {fmt(trate, 0)} | "
                 f"{ratio(tms, oms)} |")
    lines.append("")
    lines.append(f"GEMM work: ours {ogf:.2f} GFLOP, PyTorch {tgf:.2f} GFLOP.")
    return lines


def top_table(rows, count=12):
    ops = [r for r in rows if r["op"] not in (OUTSIDE, STEP, MEDIAN)]
    ops.sort(key=lambda r: -r["ms"])
    lines = ["| op | detail | category | calls | ms | GFLOP/s |", "|---|---|---|---:|---:|---:|"]
    for r in ops[:count]:
        rate = r.get("gflop_per_s")
        rate = fmt(float(rate), 0) if rate not in ("", None) else ""
        detail = r["detail"] if len(r["detail"]) <= 60 else r["detail"][:57] + "..."
        lines.append(f"| {r['op']} | {detail} | {r['category']} | {r['calls']} | {fmt(r['ms'], 2)} | {rate} |")
    return lines


def make_report(meta, ours, theirs, whats):
    title = {"model_train_step": "Training step", "model_inference": "Inference"}
    layers = f"{meta['layers']} layer{'s' if meta['layers'] != 1 else ''}"
    md = [f"# Per-op profile, ours against PyTorch: n = {meta['n']}, k = {meta['k']}, {layers}",
          "",
          "<!-- Written by scripts/profile_step.py; docs/peer_bench.md says how to read it. -->",
          ""]
    if meta.get("warning"):
        md += [f"**{meta['warning']}**", ""]
    md += [f"- **date**: {meta['date']}",
           f"- **cpu**: {meta['cpu']}; flags: {meta['flags']}; {meta['cores']} cores available",
           f"- **threads**: {meta['threads']} on both sides",
           f"- **precision**: " + ("fp32 on both sides" if meta.get("precision", "fp32") == "fp32" else
                                   "bf16: ours `--precision bf16`, PyTorch under `torch.autocast('cpu', torch.bfloat16)`"),
           f"- **ours**: `{meta['binary']}` ({meta['ours_version']}), git {meta['git']}; sgemm 2048³ in the same "
           f"runs: {fmt(meta.get('sgemm'), 0)} GFLOP/s",
           f"- **PyTorch**: {meta['torch']} (CPU capability {meta['capability']}, MKL {meta['mkl']}), "
           f"lucidrains linformer, Python {meta['python']}",
           f"- **model**: d = {D_MODEL}, {HEADS} heads, d_ff = {4 * D_MODEL}, {layers}, batch 1 × "
           f"{meta['n']} tokens, 260-token vocabulary; Linformer k = {meta['k']}",
           f"- **runs**: {meta['warmup']} warm-up, {meta['repeats']} unprofiled (median), then one profiled run; "
           f"ours first, then PyTorch, per measurement",
           f"- **load average**: {meta['load_start']:.2f} at the start, {meta['load_end']:.2f} at the end",
           f"- **command**: `{meta['command']}`",
           "",
           "What differs between the two steps: ours is a masked LM whose loss covers the ~15 % masked "
           "positions, PyTorch's loss covers all n; ours clips the gradients to a global norm (`global_norm`, "
           "`scale`), PyTorch's step does not. The PyTorch profiler adds a few µs per op, so its profiled run "
           "is slower than its unprofiled median; ours adds two clock reads per op.",
           ""]
    md += ["## Step time", "", "| | ours ms | PyTorch ms | PyTorch / ours |", "|---|---:|---:|---:|"]
    for what in whats:
        o = [r for r in ours if r["what"] == what]
        t = [r for r in theirs if r["what"] == what]
        for op, label in ((MEDIAN, "median, unprofiled"), (STEP, "the profiled run")):
            a, b = special(o, op), special(t, op)
            md.append(f"| {title[what]}, {label} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
    md.append("")
    for what in whats:
        o = [r for r in ours if r["what"] == what]
        t = [r for r in theirs if r["what"] == what]
        md += [f"## {title[what]}", "", "### By category (the profiled run)", "",
               "Exclusive ms of the profiled run per category and its share of that run's wall time; "
               "PyTorch − ours > 0 where we are faster.", ""] + category_table(o, t)
        md += ["", "### GEMMs by shape", "",
               "Matched by shape M×N×K (a product and its transpose alike); products = calls × batch (ours "
               "may run per head what PyTorch batches); GFLOP/s from 2·M·N·K per product; PyTorch / ours "
               "time > 1 where we are faster.", ""] + gemm_table(o, t)
        md += ["", "### Our longest ops", ""] + top_table(o)
        md += ["", "### PyTorch's longest ops", ""] + top_table(t)
        md.append("")
    return "\n".join(md)


# --- the machine ------------------------------------------------------------------------------------
def cpu_info():
    info = machine.cpu_info()
    return info["model_name"], " ".join(info["flags"]) or "none of note"


def command_output(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=REPO).stdout.strip()
    except OSError:
        return ""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--threads", type=int, default=int(os.environ.get("LINFORMER_NUM_THREADS", "2")))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--what", default=",".join(WHATS), help="comma list of " + ", ".join(WHATS))
    p.add_argument("--binary", default=os.path.join(REPO, "build", "linformer"))
    p.add_argument("--out", default=os.path.join(REPO, machine.results_dir(), "profile"))
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: ours with --precision bf16, PyTorch under torch.autocast('cpu', bfloat16)")
    p.add_argument("--torch-child", help=argparse.SUPPRESS)  # internal: one PyTorch measurement (JSON)
    args = p.parse_args()
    if args.torch_child is not None:
        torch_child(json.loads(args.torch_child))
        return
    whats = [w for w in args.what.split(",") if w]
    if not whats or any(w not in WHATS for w in whats):
        p.error(f"--what: choose from {', '.join(WHATS)}")
    if min(args.n, args.k, args.layers, args.threads, args.warmup, args.repeats) < 1 or args.k > args.n:
        p.error("--n, --k, --layers, --threads, --warmup and --repeats must be >= 1, and k <= n")
    if not os.access(args.binary, os.X_OK):
        p.error(f"no linformer binary at {args.binary} (build it, or name it with --binary)")

    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        log(f"profile_step: warning: the machine is not idle (1-minute load average {load_start:.2f}); "
            "timings taken now are not comparable")
    os.makedirs(args.out, exist_ok=True)
    ours, theirs, sgemm, versions = [], [], None, {}
    with tempfile.TemporaryDirectory(prefix="profile_step_") as tmp:
        for what in whats:  # interleaved: ours, then PyTorch, per measurement
            t0 = time.perf_counter()
            rows, rate = run_ours(args, what, tmp)
            ours += rows
            sgemm = max(filter(None, (sgemm, rate)), default=None)
            log(f"profile_step: ours    {what}: {special(rows, STEP):.1f} ms profiled ({time.perf_counter() - t0:.1f} s)")
            t0 = time.perf_counter()
            result = run_torch(args, what, sys.executable)
            theirs += result["rows"]
            versions = result
            log(f"profile_step: PyTorch {what}: {special(result['rows'], STEP):.1f} ms profiled "
                f"({time.perf_counter() - t0:.1f} s)")
    load_end = os.getloadavg()[0]

    cfg = f"n{args.n}_k{args.k}_l{args.layers}_t{args.threads}" + ("" if args.precision == "fp32" else f"_{args.precision}")
    paths = {side: os.path.join(args.out, f"{side}_{cfg}.csv") for side in ("ours", "pytorch")}
    write_rows(paths["ours"], ours)
    write_rows(paths["pytorch"], theirs)
    cpu, flags = cpu_info()
    # The run itself keeps `threads` cores busy, so the load it leaves at the end counts less those.
    busy = max(load_start, load_end - args.threads)
    meta = {"n": args.n, "k": args.k, "layers": args.layers, "threads": args.threads, "warmup": args.warmup,
            "precision": args.precision,
            "repeats": args.repeats, "cpu": cpu, "flags": flags, "cores": len(os.sched_getaffinity(0)),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "binary": os.path.relpath(args.binary, REPO), "ours_version": command_output([args.binary, "--version"]),
            "git": command_output(["git", "rev-parse", "--short", "HEAD"]) or "unknown", "sgemm": sgemm,
            "torch": versions.get("torch"), "capability": versions.get("capability"), "mkl": versions.get("mkl"),
            "python": sys.version.split()[0], "load_start": load_start, "load_end": load_end,
            "command": " ".join(["python", "scripts/profile_step.py"] + sys.argv[1:]),
            "warning": (f"Smoke run: the 1-minute load average beyond this run's own reached {busy:.2f} (other work was running), so "
                        "these timings are not comparable with an idle run." if busy > 0.5 else "")}
    report = os.path.join(args.out, f"report_{cfg}.md")
    with open(report + ".tmp", "w") as fh:
        fh.write(make_report(meta, ours, theirs, whats))
    os.replace(report + ".tmp", report)
    log(f"profile_step: wrote {paths['ours']}, {paths['pytorch']} and {report}")


if __name__ == "__main__":
    main()
