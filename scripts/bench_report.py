#!/usr/bin/env python3
"""The benchmark report (issues 4 and 15): docs/benchmarks.md with one section per CPU kind, each from
that CPU's own folder of results and nothing else, then bench/notes.md verbatim.

  python scripts/bench_report.py [--results bench/results] --out docs/benchmarks.md
      --img-dir docs/img/bench [--notes bench/notes.md] [--command "the command"] [--no-plots]

A CPU folder is --results/<slug> (scripts/machine.py names it). What it may hold, all optional:
  targets/, full/      runs of scripts/bench_all.sh (its default mode, and --full): CSVs of `linformer
                       bench` (ours_*.csv) and scripts/peer_bench.py (peer_*.csv) from one run, the
                       machine (machine.txt) and the commands (<step>_commands.txt)
  precision.csv        scripts/precision_bench.py: the model, ours and PyTorch in fp32 / bf16 / int8
  flash_vs_sdpa.csv    scripts/flash_vs_sdpa.py: flash against SDPA
  gemm_backends.csv    scripts/gemm_backends.sh: every GEMM backend at the model's shapes
(each interleaved file with the .md its script wrote beside it, and <step>_commands.txt when
bench_all.sh ran it). A CPU's section: its machine, the commands, issue 15's targets computed from
its files (a target nobody measured there reads "not measured on this CPU"), then each run's tables
and plots. No table or plot mixes CPUs, and each comparison within one comes from one run.

Every figure comes from the CSVs, except the paper's published Table 3 (Wang et al. 2020, "Linformer:
Self-Attention with Linear Complexity") and issue 15's thresholds, written below as constants. Rows
are keyed by (impl, kind, what, n, k); within a run, the later file wins. Configurations that were
skipped or failed (empty time_ms, note "skipped: ..." / "failed: ...") are shown as such, with
their note. Kinds the report does not know are shown on our side only. The scripts' interleaved
files become rows of the same form (the median over rounds), so targets read every source alike.

Standard library; numpy + matplotlib (Agg backend) for the plots only.
"""
import argparse
import csv
import datetime
import math
import os
import re
import statistics
import sys
import textwrap

# ---------------------------------------------------------------------------------------------------
# Constants: the pairing of our measurements with the peer's, the paper's Table 3, the targets.
# ---------------------------------------------------------------------------------------------------

OURS_IMPL, PEER_IMPL = "linformer-cpp", "pytorch"

# Our `what` for a layer pass -> the peer's `what`, and a title.
LAYER_PASSES = [("layer_forward", "forward", "forward (inference)"),
                ("layer_forward_backward", "forward_backward", "forward + backward")]
MODEL_PASSES = [("model_train_step", "train_step", "training step"),
                ("model_train_step_checkpointed", "train_step",
                 "training step, ours with activation checkpointing (PyTorch without)"),
                ("model_inference", "inference", "inference")]
# Our attention kind -> the PyTorch kind it is compared with (layers).
PEER_LAYER_KIND = {"linformer": "linformer", "full": "full", "flash": "sdpa"}
# Our kind -> the PyTorch model kind (the model measurements).
PEER_MODEL_KIND = {"linformer": "linformer_model"}
# How the kinds are named in the tables.
KIND_LABEL = {
    ("ours", "linformer"): "ours linformer",
    ("ours", "full"): "ours full (naive, h×n×n probabilities)",
    ("ours", "flash"): "ours flash (tiled exact, O(n) memory)",
    ("peer", "linformer"): "PyTorch lucidrains LinformerSelfAttention",
    ("peer", "full"): "PyTorch naive softmax attention",
    ("peer", "sdpa"): "PyTorch scaled_dot_product_attention (CPU flash kernel)",
    ("peer", "linformer_model"): "PyTorch lucidrains LinformerLM (depth 6)",
}
KIND_ORDER = ["linformer", "flash", "full"]  # then every other kind, alphabetically
# The kinds compared with a PyTorch peer in the layer tables and plots; every other kind is shown in
# the family section (one table per pass, one plot per pass).
CORE_KINDS = set(KIND_ORDER)

# The paper's Table 3: inference of one layer on one V100 GPU, speed-up over the standard Transformer
# and memory saving (the ratio of the largest batch that fits); rows n, columns k; None = not in the
# paper (k ≥ n or not reported). Kept as the paper prints them ("5.0", "14").
PAPER_KS = [128, 256, 512, 1024, 2048]
PAPER_TABLE3 = {
    512: ["1.5/1.7", "1.3/1.5", None, None, None],
    1024: ["1.7/3.0", "1.6/2.9", "1.3/1.8", None, None],
    2048: ["2.6/6.1", "2.4/5.6", "2.1/3.6", "1.3/2.0", None],
    4096: ["3.4/14", "3.2/13", "2.8/8.3", "2.2/4.3", "1.3/2.3"],
    8192: ["5.5/28", "5.0/26", "4.4/17", "3.5/8.5", "2.1/4.5"],
    16384: ["8.6/56", "7.8/48", "7.0/32", "5.6/16", "3.3/8"],
    32768: ["13/56", "12/48", "11/36", "8.8/18", "5.0/16"],
    65536: ["20/60", "18/52", "16/40", "14/20", "7.9/18"],
}

# Issue 15's targets: ratios against PyTorch 2.x in the same run, with the same threads, like with like.
T_N, T_K = 4096, 256                                # the model's and the layer's configuration
T_MODEL_TRAIN_SPEEDUP, T_MODEL_INFER_SPEEDUP = 1.5, 2.0
T_MODEL_TRAIN_MEM, T_MODEL_INFER_MEM = 0.6, 0.5     # our peak memory / PyTorch's
T_LAYER_FWD_SPEEDUP, T_LAYER_FB_SPEEDUP, T_LAYER_MEM = 3.0, 2.0, 0.5
T_FLASH_TIME = 1.0                                  # our flash time / SDPA's, forward and backward
T_GEMM_SHARE = 0.9                                  # every shape: our backend / the best library
T_LAYER_PEAK = 0.75                                 # the Linformer layer's GFLOP/s / that best sgemm
T_BF16_SPEEDUP = 1.6                                # our bf16 training step against our fp32 one
# The precisions of the model targets and their passes (int8 is an inference format).
PRECISION_PASSES = [("fp32", ("train_step", "inference")), ("bf16", ("train_step", "inference")),
                    ("int8", ("inference",))]
# How the model targets name PyTorch's side in each precision (bf16: its CPU autocast).
PEER_PRECISION = {"fp32": "PyTorch", "bf16": "PyTorch under autocast bf16", "int8": "PyTorch in int8"}

MIB = float(1 << 20)


# ---------------------------------------------------------------------------------------------------
# Reading the CSVs
# ---------------------------------------------------------------------------------------------------

INT_FIELDS = ("n", "k", "d_model", "heads", "batch", "threads", "repeats")
FLOAT_FIELDS = ("time_ms", "peak_mem_bytes", "heap_peak_bytes", "gflops")


def _number(text, kind):
    """'' / unparsable / non-finite -> None; otherwise int or float."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if kind is int else value


def read_rows(path):
    """Rows of one CSV as dicts with typed fields. Tolerates repeated header lines (concatenated
    files), blank lines, and an unquoted note holding commas (the extra fields are joined back)."""
    rows = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = None
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            if fields[0].strip() == "impl":  # a header (again)
                header = [f.strip() for f in fields]
                continue
            if header is None:
                raise SystemExit(f"bench_report: {path}: no header line")
            if len(fields) > len(header):  # an unquoted note with commas in it
                fields = fields[:len(header) - 1] + [",".join(fields[len(header) - 1:])]
            fields = fields + [""] * (len(header) - len(fields))
            raw = dict(zip(header, fields))
            row = {"impl": raw.get("impl", "").strip(), "kind": raw.get("kind", "").strip(),
                   "what": raw.get("what", "").strip(), "note": raw.get("note", "").strip(),
                   "source": path}
            for f in INT_FIELDS:
                row[f] = _number(raw.get(f), int)
            for f in FLOAT_FIELDS:
                row[f] = _number(raw.get(f), float)
            if row["k"] is None:
                row["k"] = 0
            if row["n"] is None:
                print(f"bench_report: {path}: row without n ignored: {fields}", file=sys.stderr)
                continue
            rows.append(row)
    return rows


class Data:
    """All rows of one run, deduplicated by (impl, kind, what, n, k) with the later file winning."""

    def __init__(self, files):
        """files: [(path, rows)] in order."""
        self.rows = {}
        self.sgemm = []  # every sgemm peak row, in file order (kept apart from the dedup)
        self.files = []
        for path, rows in files:
            self.files.append((path, len(rows)))
            for r in rows:
                if r["kind"] == "sgemm":
                    self.sgemm.append(r)
                    continue
                self.rows[(r["impl"], r["kind"], r["what"], r["n"], r["k"])] = r

    @classmethod
    def from_paths(cls, paths):
        return cls([(p, read_rows(p)) for p in paths])

    def get(self, impl, kind, what, n, k=0):
        return self.rows.get((impl, kind, what, n, k))

    def select(self, impl=None, kind=None, what=None):
        return [r for key, r in sorted(self.rows.items(), key=lambda kv: kv[0][3:])
                if (impl is None or r["impl"] == impl) and (kind is None or r["kind"] == kind)
                and (what is None or r["what"] == what)]

    def kinds(self, impl, whats):
        found = {r["kind"] for r in self.rows.values() if r["impl"] == impl and r["what"] in whats}
        return sorted(found, key=kind_sort_key)

    def values(self, field, impl=None):
        """The distinct values of a field among the measured rows (e.g. the thread counts)."""
        return sorted({r[field] for r in self.rows.values()
                       if r[field] is not None and ok(r) and (impl is None or r["impl"] == impl)})

    def sgemm_peak(self):
        """(GFLOP/s, description) of the measured sgemm peak: the highest of the measured sgemm
        rows (several runs may each write one), or (None, 'not measured')."""
        measured = []
        for r in self.sgemm:
            g = r["gflops"]
            if (g is None or g <= 0) and r["time_ms"]:
                g = 2.0 * r["n"] ** 3 / (r["time_ms"] * 1e-3) * 1e-9  # M = N = K = n
            if g and g > 0:
                measured.append((g, r))
        if not measured:
            return None, "not measured"
        best, row = max(measured, key=lambda t: t[0])
        desc = (f"{best:.0f} GFLOP/s (sgemm {row['n']}³, {row['threads']} threads"
                + (f"; the {len(measured)} runs measured " + ", ".join(f"{g:.0f}" for g, _ in measured)
                   + ", the highest is used" if len(measured) > 1 else "") + ")")
        return best, desc


def ok(row):
    """True for a measured row (time present)."""
    return row is not None and row["time_ms"] is not None


def kind_sort_key(kind):
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), kind)


def label(side, kind):
    return KIND_LABEL.get((side, kind), ("ours " if side == "ours" else "PyTorch ") + kind)


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------

def f_ms(v):
    return "–" if v is None else (f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def f_mib(b):
    if b is None:
        return "–"
    m = b / MIB
    return f"{m:.0f}" if abs(m) >= 10 else f"{m:.1f}"


def f_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def f_num(v, digits=1):
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def div(a, b):
    return None if a is None or b is None or b == 0 else a / b


def status_of(row):
    """A short reason for a row that has no time: its note, or 'not run'."""
    if row is None:
        return "not run"
    return row["note"] or "no time recorded"


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


class Footnotes:
    """Numbered reasons for cells that have no value ('skipped [1]' + a list under the table)."""

    def __init__(self):
        self.items = []

    def ref(self, text):
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"

    def lines(self):
        return [f"- [{i}] {t}" for i, t in enumerate(self.items, 1)]


# ---------------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------------

def pairs_for(data, passes, peer_map):
    """(our kind or None, peer kind or None) pairs to show for these passes: every mapped pair with
    data on either side, then our unmapped kinds, then the peer's unmapped kinds."""
    ours = data.kinds(OURS_IMPL, [p[0] for p in passes])
    peer = data.kinds(PEER_IMPL, [p[1] for p in passes])
    pairs = []
    for kind in sorted(set(ours) | {o for o, p in peer_map.items() if p in peer}, key=kind_sort_key):
        p = peer_map.get(kind)
        pairs.append((kind if kind in ours else None, p if p in peer else None))
    mapped = set(peer_map.values())
    pairs += [(None, p) for p in peer if p not in mapped]
    return pairs


def comparison_table(data, ours_what, peer_what, ours_kind, peer_kind, peak):
    """Rows n, k of one pass for one (ours, peer) pair: times, memory, ratios, GFLOP/s."""
    keys = set()
    if ours_kind:
        keys |= {(r["n"], r["k"]) for r in data.select(OURS_IMPL, ours_kind, ours_what)}
    if peer_kind:
        keys |= {(r["n"], r["k"]) for r in data.select(PEER_IMPL, peer_kind, peer_what)}
    rows = []
    for n, k in sorted(keys, key=lambda t: (t[1], t[0])):
        o = data.get(OURS_IMPL, ours_kind, ours_what, n, k) if ours_kind else None
        p = data.get(PEER_IMPL, peer_kind, peer_what, n, k) if peer_kind else None
        ot = o["time_ms"] if ok(o) else None
        pt = p["time_ms"] if ok(p) else None
        om = o["peak_mem_bytes"] if ok(o) else None
        pm = p["peak_mem_bytes"] if ok(p) else None
        oh = o["heap_peak_bytes"] if ok(o) else None
        g = o["gflops"] if ok(o) else None
        why = []
        if ours_kind and not ok(o):
            why.append("ours: " + status_of(o))
        if peer_kind and not ok(p):
            why.append("PyTorch: " + status_of(p))
        pct = 100 * g / peak if g is not None and peak else None
        rows.append([n, k or "–", f_ms(ot), f_ms(pt), f_ratio(div(pt, ot)), f_mib(om), f_mib(oh), f_mib(pm),
                     f_ratio(div(om, pm)), f_num(g), f_num(pct, 0), "; ".join(why)])
    header = ["n", "k", "ours ms", "PyTorch ms", "speed-up", "ours MiB", "ours heap MiB", "PyTorch MiB",
              "mem ratio", "ours GFLOP/s", "% of sgemm peak", "note"]
    return md_table(header, rows)


def section_layers(data, peak):
    out = ["## Attention layer: ours against PyTorch", "",
           "One attention layer on a (batch, n, d_model) input. *speed-up* = PyTorch time / our time "
           "(> 1: we are faster); *mem ratio* = our peak memory / PyTorch's (< 1: we use less). Memory is "
           "the peak RSS growth of a process that runs only that configuration (MiB); *ours heap* is the "
           "peak of our own allocator in the same run. GFLOP/s is the layer's nominal FLOP count over the "
           "median time (forward + backward counted as 3× the forward); % of sgemm peak is against the "
           "sgemm rate measured in the same run.", ""]
    any_rows = False
    for ours_what, peer_what, title in LAYER_PASSES:
        pairs = [(o, p) for o, p in pairs_for(data, [(ours_what, peer_what)], PEER_LAYER_KIND)
                 if o is None or o in CORE_KINDS]
        if not pairs:
            continue
        out += [f"### Layer {title}", ""]
        for ours_kind, peer_kind in pairs:
            any_rows = True
            names = " vs ".join(label(s, k) for s, k in (("ours", ours_kind), ("peer", peer_kind)) if k)
            out += [f"#### {names}", ""]
            out += comparison_table(data, ours_what, peer_what, ours_kind, peer_kind, peak) + [""]
    if not any_rows:
        out += ["No layer measurements in the inputs.", ""]
    return out


def family_kinds(data):
    """Our layer kinds that have no PyTorch peer: the rest of the efficient-attention family."""
    return [k for k in data.kinds(OURS_IMPL, [p[0] for p in LAYER_PASSES]) if k not in CORE_KINDS]


def section_family(data, img_rel):
    """One table per layer pass: a row per kind, a column per n, 'ms / MiB' in each cell."""
    kinds = family_kinds(data)
    if not kinds:
        return []
    out = ["## The efficient-attention family: time and memory against n", "",
           "Every other registered kind with its default options (docs/attention.md), one layer at the "
           "same d_model, heads and batch as above; our Linformer (k = 256) and flash rows repeat the "
           "tables above for reference. Each cell: median time (ms) / peak memory growth (MiB). These "
           "kinds have no PyTorch peer in this report.", ""]
    for what, _, title in LAYER_PASSES:
        refs = [("linformer", T_K), ("flash", 0)]
        rows_kinds = [(k, kk) for k, kk in refs if data.select(OURS_IMPL, k, what)] + [(k, 0) for k in kinds]
        ns = sorted({r["n"] for k, kk in rows_kinds for r in data.select(OURS_IMPL, k, what) if r["k"] == kk})
        if not ns:
            continue
        notes = Footnotes()
        rows = []
        for kind, k in rows_kinds:
            cells = []
            for n in ns:
                r = data.get(OURS_IMPL, kind, what, n, k)
                if ok(r):
                    cells.append(f"{f_ms(r['time_ms'])} / {f_mib(r['peak_mem_bytes'])}")
                else:
                    cells.append("–" if r is None else "– " + notes.ref(status_of(r)))
            rows.append([f"{kind} (k={k})" if k else kind] + cells)
        out += [f"### Layer {title}", ""] + md_table(["kind"] + [f"n={n}" for n in ns], rows) + [""]
        if notes.items:
            out += notes.lines() + [""]
        if img_rel.get("family_" + what):
            out += [f"![The family, layer {title}: time and memory against n]({img_rel['family_' + what]})", ""]
    return out


def section_models(data, peak):
    out = ["## Whole model: ours against PyTorch LinformerLM", "",
           "The language model (embedding, a stack of pre-LN blocks with the given attention kind and a "
           "4·d GELU MLP, logits over the byte vocabulary) at batch 1. *training step* = zero gradients, "
           "forward, cross-entropy, backward, AdamW step; *inference* = the forward with its logits. "
           "Columns as in the layer tables.", ""]
    any_rows = False
    for ours_what, peer_what, title in MODEL_PASSES:
        pairs = pairs_for(data, [(ours_what, peer_what)], PEER_MODEL_KIND)
        if not pairs:
            continue
        out += [f"### Model {title}", ""]
        for ours_kind, peer_kind in pairs:
            any_rows = True
            names = " vs ".join(label(s, k) for s, k in (("ours", ours_kind), ("peer", peer_kind)) if k)
            out += [f"#### {names}", ""]
            out += comparison_table(data, ours_what, peer_what, ours_kind, peer_kind, peak) + [""]
    if not any_rows:
        out += ["No model measurements in the inputs.", ""]
    return out


def grid_cells(data, base_impl, base_kind, metric):
    """The Table 3 grid against one baseline: {(n, k): (ours value or None, reason or None)}.
    metric 'time': time_base / time_linformer; 'mem': mem_base / mem_linformer (layer_forward, or
    the peer's `forward` for a PyTorch baseline)."""
    base_what = "layer_forward" if base_impl == OURS_IMPL else "forward"
    field = "time_ms" if metric == "time" else "peak_mem_bytes"
    ns = sorted(set(PAPER_TABLE3) | {r["n"] for r in data.select(OURS_IMPL, "linformer", "layer_forward")})
    ks = sorted(set(PAPER_KS) | {r["k"] for r in data.select(OURS_IMPL, "linformer", "layer_forward")})
    cells = {}
    for n in ns:
        base = data.get(base_impl, base_kind, base_what, n, 0)
        for k in ks:
            lin = data.get(OURS_IMPL, "linformer", "layer_forward", n, k)
            if lin is None and base is None:
                cells[(n, k)] = (None, None)
            elif lin is None:  # not in the inputs (not asked for, or k > n): no reason to give
                cells[(n, k)] = (None, None)
            elif not ok(lin):
                cells[(n, k)] = (None, f"ours linformer n={n} k={k}: {status_of(lin)}")
            elif not ok(base):
                who = "ours" if base_impl == OURS_IMPL else "PyTorch"
                cells[(n, k)] = (None, f"{who} {base_kind} n={n}: {status_of(base)}")
            else:
                cells[(n, k)] = (div(base[field], lin[field]), None)
    return ns, ks, cells


def paper_text(n, k, metric):
    """The paper's figure as printed ('5.0'), or None where its table has none."""
    row = PAPER_TABLE3.get(n)
    if row is None or k not in PAPER_KS or row[PAPER_KS.index(k)] is None:
        return None
    return row[PAPER_KS.index(k)].split("/")[0 if metric == "time" else 1]


def paper_value(n, k, metric):
    text = paper_text(n, k, metric)
    return None if text is None else float(text)


def f_paper(n, k, metric):
    return paper_text(n, k, metric) or "–"


def f_grid(v):
    """A grid value of ours: two decimals below 10, so that a cell just under the paper's figure
    does not read as equal to it."""
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def grid_table(data, base_impl, base_kind, metric):
    """Markdown lines of one grid ('ours / paper', ✓ where ours ≥ paper) and (met, compared)."""
    ns, ks, cells = grid_cells(data, base_impl, base_kind, metric)
    notes = Footnotes()
    rows, met, compared = [], 0, 0
    for n in ns:
        row = [str(n)]
        for k in ks:
            value, why = cells[(n, k)]
            paper = paper_value(n, k, metric)
            if value is None:
                ours = "–" if why is None else "– " + notes.ref(why)
                mark = ""
            else:
                ours = f_grid(value)
                mark = ""
                if paper is not None:
                    compared += 1
                    if value >= paper:
                        met += 1
                        mark = " ✓"
            row.append("–" if value is None and paper is None and why is None else f"{ours} / {f_paper(n, k, metric)}{mark}")
        rows.append(row)
    out = md_table(["n \\ k"] + [str(k) for k in ks], rows)
    if notes.items:
        out += [""] + notes.lines()
    return out, met, compared


def section_table3(data, img_rel):
    out = ["## The paper's Table 3 on this machine", "",
           "Linformer layer inference (`layer_forward`) against exact attention at the same n, over the "
           "paper's n × k grid. Each cell is **ours / paper**; ✓ marks a cell where ours ≥ the paper's "
           "figure. *Speed-up* = time of the exact attention / time of our Linformer; *memory saving* = "
           "peak memory of the exact attention / peak memory of our Linformer. “–” for the paper = not in "
           "its table; “– [i]” for ours = not measured, for the reason in the note under the table.", "",
           "The paper's figures were measured on one NVIDIA V100 GPU, inference, and its *memory saving* is "
           "the ratio of the largest batch that fits in the GPU's memory, whereas ours is the ratio of peak "
           "RSS growth at batch 1 on the CPU (which includes a constant overhead of allocator, thread pools "
           "and kernels, so it understates the saving at small n). The figures are therefore comparable in "
           "trend, not one for one.", ""]
    baselines = [(OURS_IMPL, "full", "against our `full` (naive exact attention; the paper's baseline)"),
                 (OURS_IMPL, "flash", "against our `flash` (tiled exact attention with O(n) memory)"),
                 (PEER_IMPL, "full", "against PyTorch's naive full attention")]
    summary = {}
    for impl, kind, title in baselines:
        base_what = "layer_forward" if impl == OURS_IMPL else "forward"
        if not data.select(impl, kind, base_what):
            out += [f"### {title[0].upper() + title[1:]}", "", "Not measured (no such rows in the inputs).", ""]
            continue
        out += [f"### {title[0].upper() + title[1:]}", ""]
        for metric, name in (("time", "Speed-up"), ("mem", "Memory saving")):
            lines, met, compared = grid_table(data, impl, kind, metric)
            summary[(impl, kind, metric)] = (met, compared)
            out += [f"{name} (ours / paper): ours ≥ paper in {met} of {compared} cells measured on both sides.",
                    ""] + lines + [""]
        if (impl, kind) == (OURS_IMPL, "full") and img_rel.get("grid"):
            out += [f"![Table 3 grid against our full attention]({img_rel['grid']})", ""]
    return out, summary


# ---------------------------------------------------------------------------------------------------
# A CPU's folder: its runs
# ---------------------------------------------------------------------------------------------------

RUN_FOLDERS = {"targets": "bench_all.sh (its default mode: what the targets need)",
               "full": "bench_all.sh --full (issue 4's whole grid)"}


def median_rows(groups, path):
    """{(impl, kind, what, n, k, threads): [raw rows]} -> bench rows, the median over rounds."""
    rows = []
    for (impl, kind, what, n, k, threads), raws in groups.items():
        def med(field):
            vals = [float(r[field]) for r in raws if (r.get(field) or "").strip()]
            return statistics.median(vals) if vals else None
        row = {"impl": impl, "kind": kind, "what": what, "n": n, "k": k, "threads": threads, "note": "",
               "source": path, "time_ms": med("time_ms"), "peak_mem_bytes": med("peak_mem_bytes"),
               "heap_peak_bytes": None, "gflops": None, "repeats": len(raws)}
        row.update({f: None for f in INT_FIELDS if f not in row})
        rows.append(row)
    return rows


def precision_rows(path):
    """scripts/precision_bench.py's rounds as bench rows named as `linformer --precision P bench` and
    peer_bench.py --precision P name theirs (impl 'linformer-cpp-bf16', 'pytorch-bf16', ...)."""
    groups = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            side, precision, what = r.get("side", ""), r.get("precision", "fp32"), r.get("what", "")
            impl = r.get("impl") or impl_of("ours" if side == "ours" else "peer", precision)
            ours = impl.startswith(OURS_IMPL)
            # n and k: files written before the script recorded them ran its defaults.
            key = (impl, "linformer" if ours else "linformer_model", ("model_" if ours else "") + what,
                   _number(r.get("n"), int) or T_N, _number(r.get("k"), int) or T_K, _number(r.get("threads"), int))
            groups.setdefault(key, []).append(r)
    return median_rows(groups, path)


def flash_rows(path):
    """scripts/flash_vs_sdpa.py's rounds as bench rows: ours -> our flash layer, torch -> PyTorch's sdpa
    (a --before build is not part of the comparison)."""
    groups = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            what = r.get("what", "")
            if r.get("impl") == "ours":
                key = (OURS_IMPL, "flash", "layer_" + what)
            elif r.get("impl") == "torch":
                key = (PEER_IMPL, "sdpa", what)
            else:
                continue
            groups.setdefault(key + (int(r["n"]), 0, _number(r.get("threads"), int)), []).append(r)
    return median_rows(groups, path)


class Gemm:
    """scripts/gemm_backends.sh's run: the median GFLOP/s of every (shape, backend) over its rounds."""

    def __init__(self, path, name):
        self.name = name
        self.rate, self.dims, self.shapes = {}, {}, []
        raw = {}
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                g = _number(r.get("gflops"), float)
                if g is None:
                    continue
                shape = r["shape"]
                if shape not in self.dims:
                    self.shapes.append(shape)
                    self.dims[shape] = f"{r['M']}×{r['N']}×{r['K']}" + (" tA" if r.get("tA") == "1" else "") + \
                        (" tB" if r.get("tB") == "1" else "")
                raw.setdefault((shape, r["backend"]), []).append(g)
        self.rate = {key: statistics.median(v) for key, v in raw.items()}
        self.backends = sorted({b for _, b in raw})

    def best(self, shape):
        got = {b: v for (s, b), v in self.rate.items() if s == shape}
        return max(got.items(), key=lambda kv: kv[1]) if got else (None, None)

    def shares(self, backend):
        """[(share of the best, shape, dims, rate, best rate, best backend)] for each shape it ran."""
        out = []
        for shape in self.shapes:
            if (shape, backend) in self.rate:
                best, best_rate = self.best(shape)
                out.append((self.rate[shape, backend] / best_rate, shape, self.dims[shape], self.rate[shape, backend],
                            best_rate, best))
        return out

    def best_sgemm(self):
        """(GFLOP/s, description, file) of the fastest backend's sgemm 2048³, or (None, None, None)."""
        shape = next((s for s in self.shapes if s.startswith("sgemm")), None)
        if shape is None:
            return None, None, None
        best, rate = self.best(shape)
        return rate, f"{best}'s {shape}", self.name


class Run:
    """One measurement on a CPU, its rows as bench rows: a bench_all.sh run folder, or one file of an
    interleaved script (`md`: the table that script wrote beside it)."""

    def __init__(self, name, folder, data, title, machine=None, commands=None, md=None):
        self.name, self.folder, self.data, self.title = name, folder, data, title
        self.machine = machine or []     # [(key, value)] of its machine.txt
        self.commands = commands or []   # [(file, [lines])]
        self.md = md

    def machine_value(self, key):
        return next((v for k, v in self.machine if k == key), None)

    @property
    def date(self):
        return self.machine_value("date") or run_date([p for p, _ in self.data.files])


def read_machine(path):
    """machine.txt's 'key: value' lines as [(key, value)] (a line without ': ' keeps the key '')."""
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                key, sep, value = line.strip().partition(":")
                if line.strip():
                    out.append((key.strip(), value.strip()) if sep else ("", line.strip()))
    except OSError:
        pass
    return out


def read_commands(folder, names):
    """[(file, [lines])] of the <step>_commands.txt files in the folder, in the order of names."""
    out = []
    for name in names:
        path = os.path.join(folder, f"{name}_commands.txt")
        if os.path.exists(path):
            with open(path) as fh:
                out.append((path, [line.rstrip("\n") for line in fh if line.strip()]))
    return out


# The interleaved scripts' files: (file, how to read it, its title, the .md its script writes, the step).
INTERLEAVED = [
    ("precision.csv", precision_rows, "The model in each precision against PyTorch, interleaved "
     "(scripts/precision_bench.py)", "precision.md", "precision"),
    ("flash_vs_sdpa.csv", flash_rows, "flash against PyTorch's SDPA, interleaved (scripts/flash_vs_sdpa.py)",
     "flash_vs_sdpa.csv.md", "flash"),
]
GEMM_FILE, GEMM_MD = "gemm_backends.csv", "gemm_backends.md"


class Cpu:
    """A CPU's folder: bench_all.sh's runs (newest first), the interleaved scripts' files, the GEMM
    backends' run. `sources` is the order in which the targets look for a figure."""

    def __init__(self, folder):
        self.folder, self.slug = folder, os.path.basename(os.path.normpath(folder))
        self.runs = []
        for name, title in RUN_FOLDERS.items():
            sub = os.path.join(folder, name)
            files = sorted(os.listdir(sub)) if os.path.isdir(sub) else []
            paths = [os.path.join(sub, f) for side in ("ours_", "peer_") for f in files
                     if f.startswith(side) and f.endswith(".csv")]
            if paths:
                self.runs.append(Run(name + "/", sub, Data.from_paths(paths), title,
                                     read_machine(os.path.join(sub, "machine.txt")),
                                     read_commands(sub, ["ours", "peer"])))
        self.runs.sort(key=lambda r: r.date, reverse=True)
        self.interleaved = []
        for file, reader, title, md, step in INTERLEAVED:
            path = os.path.join(folder, file)
            if os.path.exists(path):
                self.interleaved.append(Run(file, folder, Data([(path, reader(path))]), title,
                                            commands=read_commands(folder, [step]), md=os.path.join(folder, md)))
        gemm = os.path.join(folder, GEMM_FILE)
        self.gemm = Gemm(gemm, GEMM_FILE) if os.path.exists(gemm) else None
        self.gemm_commands = read_commands(folder, ["gemm"])
        self.sources = self.interleaved + self.runs

    @property
    def machine(self):
        """The newest bench_all.sh run's machine.txt ([] without one)."""
        return self.runs[0].machine if self.runs else []

    def title(self):
        cpu = next((v for k, v in self.machine if k == "cpu"), None)
        return cpu or self.slug

    def precisions(self):
        """The precisions this CPU runs, as its newest machine.txt says; None where it does not say."""
        text = next((v for k, v in self.machine if k == "precisions"), None)
        return None if text is None else set(text.split("(")[0].split())

    def gemm_backend(self):
        """Our float GEMM backend: the build's LINFORMER_GEMM in machine.txt, else the default, dnnl."""
        m = re.search(r"LINFORMER_GEMM=(\w+)", next((v for k, v in self.machine if k == "build"), ""))
        return m.group(1) if m else "dnnl"


def find_cpus(results):
    """Every CPU folder under results (a folder holding a run or a script's file), sorted by slug."""
    out = []
    for name in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        folder = os.path.join(results, name)
        if os.path.isdir(folder) and any(os.path.exists(os.path.join(folder, f))
                                         for f in list(RUN_FOLDERS) + [i[0] for i in INTERLEAVED] + [GEMM_FILE]):
            out.append(Cpu(folder))
    return out


# ---------------------------------------------------------------------------------------------------
# Issue 15's targets
# ---------------------------------------------------------------------------------------------------

class Key:
    """One side of a comparison: which rows (impl, kind, what) and how the table names them."""

    def __init__(self, label, impl, kind, what):
        self.label, self.impl, self.kind, self.what = label, impl, kind, what

    def row(self, data, n, k):
        return data.get(self.impl, self.kind, self.what, n, k)


def impl_of(side, precision):
    """'linformer-cpp-bf16' / 'pytorch-bf16': how `linformer --precision P bench` and peer_bench.py
    --precision P name their rows (fp32 has no suffix)."""
    base = OURS_IMPL if side == "ours" else PEER_IMPL
    return base if precision == "fp32" else f"{base}-{precision}"


def model_keys(precision, what):
    return (Key(f"ours {precision}", impl_of("ours", precision), "linformer", "model_" + what),
            Key(f"PyTorch {precision}", impl_of("peer", precision), "linformer_model", what))


def layer_keys(kind, peer_kind, ours_what, peer_what):
    peer = "PyTorch SDPA" if peer_kind == "sdpa" else "PyTorch"
    return (Key("ours", OURS_IMPL, kind, ours_what), Key(peer, PEER_IMPL, peer_kind, peer_what))


def pick(runs, keys, field, points=((T_N, T_K),)):
    """The first of `runs` (the preferred first) where every key has `field` measured at each (n, k)
    of `points` (None: at every n where all of them are, at least one), with one thread count.
    Returns (run, [(n, k, rows)]) or (None, [])."""
    for run in runs:
        cands = points or sorted({(r["n"], r["k"]) for r in run.data.select(keys[0].impl, keys[0].kind, keys[0].what)})
        found = []
        for n, k in cands:
            rows = [key.row(run.data, n, k) for key in keys]
            if all(ok(r) and r[field] is not None for r in rows) and len({r["threads"] for r in rows} - {None}) <= 1:
                found.append((n, k, rows))
            elif points:
                found = []
                break
        if found:
            return run, found
    return None, []


class Target:
    """A row of the target table: what, the measured figure, the file(s) it came from, and met /
    not met / not measured on this CPU."""
    NOT_MEASURED = "not measured on this CPU"

    def __init__(self, name, measured, source=None, met=None):
        self.name, self.measured = name, measured
        self.sources = [source] if isinstance(source, str) else list(source or [])
        self.status = self.NOT_MEASURED if met is None else "met" if met else "not met"


def where(points):
    return "" if not points else " at " + ", ".join(f"n={n}" + (f" k={k}" if k else "") for n, k in points)


def missing(cpu, keys, points, precision=None):
    """Why a target has no figure: the precision this CPU lacks, or the rows no run has."""
    have = cpu.precisions()
    if precision and have is not None and precision not in have:
        return f"no {precision} here: `linformer --precision {precision} info` refused it (machine.txt)"
    return "in no run: " + ", ".join(f"{k.label} (`{k.impl}` {k.kind} {k.what})" for k in keys) + where(points)


def ratio_target(cpu, name, num, den, field, op, threshold, points=((T_N, T_K),), precision=None):
    """num / den against a threshold (op '>=' or '<='), from the first run that measured both; with
    several points (n, k) every one must meet it, and the worst is shown first."""
    run, found = pick(cpu.sources, [num, den], field, points)
    if run is None:
        return Target(name, missing(cpu, [num, den], points, precision))
    fmt, unit = (f_ms, "ms") if field == "time_ms" else (f_mib, "MiB")
    values = [(div(a[field], b[field]), n, k, a, b) for n, k, (a, b) in found]
    values.sort(key=lambda t: t[0], reverse=(op == "<="))  # the worst first
    good = lambda v: v is not None and (v >= threshold if op == ">=" else v <= threshold)
    text = "; ".join((f"n={n}: " if len(values) > 1 else "") + f"{f_ratio(v)} ({num.label} {fmt(a[field])} {unit} / "
                     f"{den.label} {fmt(b[field])} {unit})" for v, n, k, a, b in values)
    return Target(name, text, run.name, all(good(v) for v, *_ in values))


def flash_memory_target(cpu, name, ours_what):
    """flash's peak memory grows at most linearly in n: mem(largest n) / mem(T_N) ≤ n ratio."""
    key = Key("ours flash", OURS_IMPL, "flash", ours_what)
    for run in cpu.sources:
        base = key.row(run.data, T_N, 0)
        bigger = [r for r in run.data.select(OURS_IMPL, "flash", ours_what) if r["n"] > T_N and ok(r)
                  and r["peak_mem_bytes"]]
        if ok(base) and base["peak_mem_bytes"] and bigger:
            top = max(bigger, key=lambda r: r["n"])
            ratio, n_ratio = top["peak_mem_bytes"] / base["peak_mem_bytes"], top["n"] / T_N
            return Target(name, f"{ratio:.2f} from n={T_N} to n={top['n']} (n ratio {n_ratio:g}; "
                                f"{f_mib(base['peak_mem_bytes'])} → {f_mib(top['peak_mem_bytes'])} MiB)",
                          run.name, ratio <= n_ratio)
    return Target(name, f"in no run: our flash {ours_what} at n={T_N} and a longer n, with memory")


def layer_peak_target(cpu, name, ours_what):
    """The Linformer layer's GFLOP/s against the best sgemm on this CPU (the GEMM backends' run;
    without one, the sgemm of the layer's own run)."""
    key = Key("ours", OURS_IMPL, "linformer", ours_what)
    run, found = pick(cpu.sources, [key], "gflops")
    if run is None:
        return Target(name, missing(cpu, [key], [(T_N, T_K)]))
    gflops = found[0][2][0]["gflops"]
    peak, peak_desc, peak_source = cpu.gemm.best_sgemm() if cpu.gemm else (None, None, None)
    if peak is None:
        peak, peak_desc, peak_source = run.data.sgemm_peak()[0], "the same run's sgemm 2048³", run.name
        if peak is None:
            return Target(name, f"{gflops:.0f} GFLOP/s; no sgemm measured on this CPU")
    share = gflops / peak
    return Target(name, f"{100 * share:.0f} % ({gflops:.0f} of {peak:.0f} GFLOP/s, {peak_desc})",
                  sorted({run.name, peak_source}), share >= T_LAYER_PEAK)


def gemm_target(cpu, name):
    """Our backend's rate at every shape of the GEMM backends' run against the best backend there."""
    if cpu.gemm is None:
        return Target(name, "no GEMM backends run (scripts/gemm_backends.sh) on this CPU")
    ours = cpu.gemm_backend()
    shares = cpu.gemm.shares(ours)
    if not shares:
        return Target(name, f"our backend ({ours}) is not in {cpu.gemm.name}")
    if len(cpu.gemm.backends) < 2:
        return Target(name, f"only {ours} in {cpu.gemm.name}: no other library to compare with")
    worst = min(shares, key=lambda t: t[0])
    share, shape, dims, rate, best_rate, best = worst
    n_ok = sum(1 for t in shares if t[0] >= T_GEMM_SHARE)
    return Target(name, f"{ours}: lowest {100 * share:.0f} % at {shape} ({dims}: {rate:.0f} against {best}'s "
                        f"{best_rate:.0f} GFLOP/s); {n_ok} of {len(shares)} shapes ≥ {100 * T_GEMM_SHARE:.0f} %",
                  cpu.gemm.name, n_ok == len(shares))


def targets(cpu):
    """Issue 15's target table for one CPU, every figure from its own files."""
    rows = []
    for precision, whats in PRECISION_PASSES:
        for what in whats:
            ours, peer = model_keys(precision, what)
            speed, mem = ((T_MODEL_TRAIN_SPEEDUP, T_MODEL_TRAIN_MEM) if what == "train_step"
                          else (T_MODEL_INFER_SPEEDUP, T_MODEL_INFER_MEM))
            title = "training step" if what == "train_step" else "inference"
            rows.append(ratio_target(cpu, f"Model {precision}: {title} ≥ {speed:g}× faster than "
                                     f"{PEER_PRECISION[precision]}", peer, ours, "time_ms", ">=", speed,
                                     precision=precision))
            rows.append(ratio_target(cpu, f"Model {precision}: {title} peak memory ≤ {mem:g}× PyTorch's",
                                     ours, peer, "peak_mem_bytes", "<=", mem, precision=precision))
    fp32, _ = model_keys("fp32", "train_step")
    bf16, _ = model_keys("bf16", "train_step")
    rows.append(ratio_target(cpu, f"Model: our bf16 training step ≥ {T_BF16_SPEEDUP:g}× faster than our fp32 one",
                             fp32, bf16, "time_ms", ">=", T_BF16_SPEEDUP, precision="bf16"))
    for ours_what, peer_what, title in LAYER_PASSES:
        ours, peer = layer_keys("linformer", "linformer", ours_what, peer_what)
        speed = T_LAYER_FWD_SPEEDUP if ours_what == "layer_forward" else T_LAYER_FB_SPEEDUP
        rows.append(ratio_target(cpu, f"Linformer layer: {title} ≥ {speed:g}× faster than PyTorch", peer, ours,
                                 "time_ms", ">=", speed))
        rows.append(ratio_target(cpu, f"Linformer layer: {title} peak memory ≤ {T_LAYER_MEM:g}× PyTorch's",
                                 ours, peer, "peak_mem_bytes", "<=", T_LAYER_MEM))
        rows.append(layer_peak_target(cpu, f"Linformer layer: {title} ≥ {100 * T_LAYER_PEAK:.0f} % of the best "
                                            "sgemm's GFLOP/s", ours_what))
    for ours_what, peer_what, title in LAYER_PASSES:
        ours, peer = layer_keys("flash", "sdpa", ours_what, peer_what)
        rows.append(ratio_target(cpu, f"flash: {title} time ≤ {T_FLASH_TIME:g}× PyTorch SDPA's, at every n measured",
                                 ours, peer, "time_ms", "<=", T_FLASH_TIME, points=None))
        rows.append(flash_memory_target(cpu, f"flash: {title} memory linear in n", ours_what))
    rows.append(gemm_target(cpu, f"GEMM: every model shape ≥ {100 * T_GEMM_SHARE:.0f} % of the best library's rate"))
    return rows


def section_targets(cpu):
    rows = targets(cpu)
    count = {s: sum(1 for r in rows if r.status == s) for s in ("met", "not met", Target.NOT_MEASURED)}
    out = ["### Targets of issue 15", "",
           f"From this CPU's files alone: **{count['met']} met, {count['not met']} not met, "
           f"{count[Target.NOT_MEASURED]} not measured**. *Model* = the 6-layer Linformer LM (d = 512, 8 heads, "
           f"n = {T_N}, k = {T_K}, batch 1) against lucidrains' `LinformerLM` (bf16: under `torch.autocast`); "
           f"*layer* = one Linformer attention layer at n = {T_N}, k = {T_K} against lucidrains' "
           "`LinformerSelfAttention`; speed-up = PyTorch's time / ours, memory = our peak RSS growth / "
           "PyTorch's, each pair from one run with one thread count. *From* names the run: where several "
           "measured a target, the interleaved scripts' files (`precision.csv`, `flash_vs_sdpa.csv`) come "
           "first, then bench_all.sh's runs, the newest first.", ""]
    out += md_table(["target", "measured", "from", "status"],
                    [[r.name, r.measured, ", ".join(f"`{s}`" for s in r.sources) or "–",
                      f"**{r.status}**" if r.status != Target.NOT_MEASURED else r.status] for r in rows])
    return out + [""], rows, count


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------

# Colours per (side, kind); ours solid with circles, PyTorch dashed with crosses.
COLOURS = {"linformer": "tab:blue", "flash": "tab:green", "sdpa": "tab:green", "full": "tab:red",
           "linformer_model": "tab:blue"}
K_SHADES = {128: "#7fb3e0", 256: "tab:blue", 512: "#2c6aa0", 1024: "#1d4a72", 2048: "#0b2540"}
EXTRA_COLOURS = ["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


# The family plots' kinds: strong colours (Okabe-Ito and darker tab10 tones, none as pale as tab20's
# second halves) crossed with line styles and markers, so that no two of the ~17 series look alike
# even where lines cross or in greyscale.
FAMILY_COLOURS = ["#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255", "#8c564b", "#7f7f00"]
FAMILY_STYLES = ["-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2))]
FAMILY_MARKERS = ["s", "^", "v", "D", "P", "X", "<", ">", "h", "*", "p", "d"]


def family_series(data, what):
    """[(label, xs, ys_time, ys_mem, style)]: our Linformer (k = 256) and flash for reference (thick, blue
    and green), then every family kind in its own combination of colour, line style and marker (hollow
    for every other kind: one more cue between neighbours)."""
    series = []
    kinds = [("linformer", T_K, dict(color="tab:blue", linestyle="-", marker="o", linewidth=2.8)),
             ("flash", 0, dict(color="tab:green", linestyle="-", marker="o", linewidth=2.8))]
    for i, k in enumerate(family_kinds(data)):
        colour = FAMILY_COLOURS[i % len(FAMILY_COLOURS)]
        kinds.append((k, 0, dict(color=colour, linestyle=FAMILY_STYLES[i // len(FAMILY_COLOURS) % len(FAMILY_STYLES)],
                                 marker=FAMILY_MARKERS[i % len(FAMILY_MARKERS)], linewidth=1.4,
                                 markerfacecolor="white" if i % 2 else colour)))
    for kind, k, style in kinds:
        rows = [r for r in data.select(OURS_IMPL, kind, what) if r["k"] == k and ok(r)]
        if rows:
            series.append((f"{kind} k={k}" if k else kind, [r["n"] for r in rows], [r["time_ms"] for r in rows],
                           [r["peak_mem_bytes"] / MIB if r["peak_mem_bytes"] is not None else float("nan")
                            for r in rows],
                           dict(style, markersize=5)))
    return series


def series_for_plot(data, ours_what, peer_what):
    """[(label, xs, ys_time, ys_mem, style)] for one layer pass: the kinds with a PyTorch peer."""
    series = []
    extra = iter(EXTRA_COLOURS * 4)

    def add(impl, kind, what, k, lab, colour, dashed, marker, width=1.8):
        rows = [r for r in data.select(impl, kind, what) if r["k"] == k and ok(r)]
        if rows:
            series.append((lab, [r["n"] for r in rows], [r["time_ms"] for r in rows],
                           [r["peak_mem_bytes"] / MIB if r["peak_mem_bytes"] is not None else float("nan")
                            for r in rows],
                           dict(color=colour, linestyle="--" if dashed else "-", marker=marker, linewidth=width,
                                markersize=4)))

    # Our Linformer: k=256 (or the most measured k) bold, k=128 and 2048 (if there) thin dotted.
    lin_ks = sorted({r["k"] for r in data.select(OURS_IMPL, "linformer", ours_what) if ok(r)})
    main_k = T_K if T_K in lin_ks else (max(lin_ks, key=lambda k: sum(1 for r in data.select(
        OURS_IMPL, "linformer", ours_what) if r["k"] == k and ok(r))) if lin_ks else None)
    for kind in data.kinds(OURS_IMPL, [ours_what]):
        if kind not in CORE_KINDS:
            continue
        if kind == "linformer":
            if main_k is not None:
                add(OURS_IMPL, kind, ours_what, main_k, f"ours linformer k={main_k}", K_SHADES.get(main_k, "tab:blue"),
                    False, "o", 2.4)
            for k in (128, 2048):
                if k in lin_ks and k != main_k:
                    s = len(series)
                    add(OURS_IMPL, kind, ours_what, k, f"ours linformer k={k}", K_SHADES[k], False, ".", 1.2)
                    if len(series) > s:
                        series[-1][4]["linestyle"] = ":"
        else:
            add(OURS_IMPL, kind, ours_what, 0, f"ours {kind}", COLOURS.get(kind) or next(extra), False, "o")
    for kind in data.kinds(PEER_IMPL, [peer_what]):
        k = main_k if kind == "linformer" else 0
        name = {"sdpa": "PyTorch SDPA", "full": "PyTorch full", "linformer": f"PyTorch linformer k={k}"}.get(
            kind, f"PyTorch {kind}")
        add(PEER_IMPL, kind, peer_what, k, name, COLOURS.get(kind) or next(extra), True, "x")
    return series


def guide_lines(ax, xs_all, ys_all):
    """O(n) and O(n²) guides through a point below the data at the smallest n."""
    if not xs_all:
        return
    x0, x1 = min(xs_all), max(xs_all)
    if x1 <= x0:
        return
    at_x0 = [y for x, y in zip(xs_all, ys_all) if x == x0 and y == y and y > 0]
    if not at_x0:
        return
    y0 = min(at_x0) * 0.7
    import numpy as np
    xs = np.array([x0, x1], dtype=float)
    ax.plot(xs, y0 * xs / x0, color="0.55", linestyle=(0, (1, 2)), linewidth=1, label="O(n) guide")
    ax.plot(xs, y0 * (xs / x0) ** 2, color="0.35", linestyle=(0, (4, 2, 1, 2)), linewidth=1, label="O(n²) guide")


def plot_layers(data, img_dir, plt):
    """Per layer pass one PNG of the kinds with a PyTorch peer and one of the family, time and memory
    side by side. Returns {name: file path}."""
    files = {}
    for ours_what, peer_what, title in LAYER_PASSES:
        for name, series, heading in ((ours_what, series_for_plot(data, ours_what, peer_what), title),
                                      ("family_" + ours_what, family_series(data, ours_what),
                                       f"the family, {title}")):
            if series and max(len(xs) for _, xs, *_ in series) >= 3:  # a curve, not a point or two
                files[name] = plot_series(series, heading, os.path.join(img_dir, f"{name}.png"), plt)
    return files


def plot_series(series, title, path, plt):
    """Time and memory against n, log-log, with O(n) and O(n²) guides. Returns the path."""
    from matplotlib import ticker
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.6))
    for ax, idx, ylabel in ((axes[0], 2, "median time (ms)"), (axes[1], 3, "peak memory growth (MiB)")):
        xs_all, ys_all = [], []
        for lab, xs, yt, ym, style in series:
            ys = yt if idx == 2 else ym
            ax.plot(xs, ys, label=lab, **style)
            xs_all += xs
            ys_all += ys
        ylim = None
        finite = [y for y in ys_all if y == y and y > 0]
        if finite:
            ylim = (min(finite) / 1.6, max(finite) * 1.6)
        guide_lines(ax, xs_all, ys_all)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ylim:
            ax.set_ylim(*ylim)  # the guides may run off the data's range
        ns = sorted(set(xs_all))
        ax.xaxis.set_major_locator(ticker.FixedLocator(ns))
        ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(n) for n in ns]))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
    axes[0].set_title(f"{title}: time")
    axes[1].set_title(f"{title}: memory")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.1 + 0.03 * (len(labels) // 5), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def text_colour_on(rgba):
    """Black or white, whichever contrasts more with the cell's colour (WCAG relative luminance: white
    below 0.179, where the two contrast ratios are equal)."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgba[:3])
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.179 else "black"


def plot_grid(data, img_dir, plt):
    """The Table 3 grid against our full attention as two heatmaps (speed-up, memory saving); the
    colour is ours / paper on a log scale (green: ours ≥ paper), annotated 'ours/paper'."""
    import numpy as np
    from matplotlib.colors import LogNorm
    if not data.select(OURS_IMPL, "full", "layer_forward") or not has_grid(data):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("0.92")
    norm = LogNorm(vmin=0.25, vmax=4)
    for ax, metric, title in ((axes[0], "time", "speed-up over our full"), (axes[1], "mem", "memory saving over our full")):
        ns, ks, cells = grid_cells(data, OURS_IMPL, "full", metric)
        ratio = np.full((len(ns), len(ks)), np.nan)
        for i, n in enumerate(ns):
            for j, k in enumerate(ks):
                value, why = cells[(n, k)]
                paper = paper_value(n, k, metric)
                if value is not None and paper is not None:
                    ratio[i, j] = value / paper
                ours = "–" if value is None else f_grid(value)
                text = "" if value is None and paper is None and not why else f"{ours}/{f_paper(n, k, metric)}"
                if value is None and why:
                    text = f"skip/{f_paper(n, k, metric)}"
                if value is not None and paper is not None and value >= paper:
                    text += " ✓"
                background = (cmap.get_bad() if math.isnan(ratio[i, j]) else cmap(norm(ratio[i, j])))
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=text_colour_on(background))
        im = ax.imshow(np.ma.masked_invalid(ratio), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(ns)), [str(n) for n in ns])
        ax.set_xlabel("k")
        ax.set_ylabel("n")
        ax.set_title(f"{title} (cell: ours/paper)")
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_ticks([0.25, 0.5, 1, 2, 4], labels=["¼", "½", "1", "2", "4"])
        cbar.minorticks_off()
        cbar.set_label("ours / paper (green: ours ≥ paper; grey: no pair)")
    fig.tight_layout()
    path = os.path.join(img_dir, "table3_grid.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_models(data, img_dir, plt):
    """Bars of the model measurements at every measured (n, k) of our Linformer and its peer."""
    import numpy as np
    groups = []  # (label, ours_row, peer_row)
    for ours_what, peer_what, title in MODEL_PASSES:
        for r in data.select(OURS_IMPL, "linformer", ours_what):
            p = data.get(PEER_IMPL, "linformer_model", peer_what, r["n"], r["k"])
            if ok(r) or ok(p):
                groups.append((textwrap.fill(title, 22) + f"\nn={r['n']} k={r['k']}", r, p))
    if not groups:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.4 * len(groups) + 5), 5.4))
    x = np.arange(len(groups))
    w = 0.38
    for ax, field, scale, ylabel in ((axes[0], "time_ms", 1.0, "median time (ms)"),
                                     (axes[1], "peak_mem_bytes", MIB, "peak memory growth (MiB)")):
        ours = [g[1][field] / scale if ok(g[1]) and g[1][field] is not None else 0 for g in groups]
        peer = [g[2][field] / scale if ok(g[2]) and g[2][field] is not None else 0 for g in groups]
        b1 = ax.bar(x - w / 2, ours, w, label="ours linformer", color="tab:blue")
        b2 = ax.bar(x + w / 2, peer, w, label="PyTorch LinformerLM", color="tab:gray")
        for bars in (b1, b2):
            ax.bar_label(bars, labels=[f"{v:.0f}" if v else "n/a" for v in bars.datavalues], fontsize=8)
        ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, max(ours + peer + [1]) * 1.12)  # room for the bars' labels
    axes[0].set_title("model: time")
    axes[1].set_title("model: memory")
    # One legend for both panels, above them: inside a panel it covered the bars.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = os.path.join(img_dir, "model.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(data, img_dir, out_dir):
    """Writes the PNGs; returns {name: path relative to the report's folder}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(img_dir, exist_ok=True)
    files = plot_layers(data, img_dir, plt)
    files["grid"] = plot_grid(data, img_dir, plt)
    files["model"] = plot_models(data, img_dir, plt)
    return {name: os.path.relpath(path, out_dir).replace(os.sep, "/") for name, path in files.items() if path}


# ---------------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------------

def demote(lines, levels):
    """Headings `levels` deeper: the run's sections sit inside a CPU's section."""
    return [("#" * levels + line) if re.match(r"#+ ", line) else line for line in lines]


def embed(path):
    """A script's markdown table, without its own title and comments."""
    try:
        with open(path) as fh:
            lines = fh.read().rstrip("\n").splitlines()
    except OSError as e:
        return [f"(could not read {path}: {e})"]
    lines = [line for line in lines if not line.startswith("<!--")]
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return demote(lines, 3)


def anchor(title):
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def link(path, out_dir):
    """A markdown link from the report's folder, shown as the path from the repository root."""
    shown = os.path.relpath(path)
    return f"[`{shown if not shown.startswith('..') else os.path.abspath(path)}`]" \
           f"({os.path.relpath(path, out_dir).replace(os.sep, '/')})"


def machine_lines(machine):
    """machine.txt as a list, and a warning when its 'load average at start' says the machine was busy."""
    if not machine:
        return ["- not recorded (no run of bench_all.sh in this folder)"]
    out = [f"- **{k}**: {v}" if k else f"- {v}" for k, v in machine]
    return out + load_warning(machine)


def load_warning(machine):
    value = next((v for k, v in machine if k == "load average at start"), "")
    load = _number(value.split()[0] if value.split() else "", float)
    if load is None or load <= 0.5:
        return []
    return ["", f"**Warning: the 1-minute load average was {load:g} when the run started: another process was "
                "using the machine, so these timings are not comparable with an idle run.**"]


def run_date(paths):
    stamps = [os.path.getmtime(p) for p in paths if os.path.exists(p)]
    if not stamps:
        return "unknown"
    return datetime.datetime.fromtimestamp(max(stamps)).astimezone().strftime("%Y-%m-%d %H:%M %Z") + \
        " (modification time of the newest CSV)"


def config_summary(data):
    """'d_model 512; heads 8; ...' from the measured rows; a field whose values differ between ours
    and PyTorch (or within one side) lists each side's values."""
    parts = []
    for field, name in (("d_model", "d_model"), ("heads", "heads"), ("batch", "batch"), ("threads", "threads"),
                        ("repeats", "timed runs per configuration (the median is reported)")):
        ours, peer = data.values(field, OURS_IMPL), data.values(field, PEER_IMPL)
        show = lambda vals: "/".join(str(v) for v in vals)
        if ours == peer or not peer or not ours:
            if ours or peer:
                parts.append(f"{name} {show(ours or peer)}")
        else:
            parts.append(f"{name} {show(ours)} (ours), {show(peer)} (PyTorch)")
    return "; ".join(parts) if parts else "no measured rows"


def section_commands(cpu, out_dir):
    out = ["### Commands", "", "```sh"]
    for run in cpu.runs:
        out.append(f"# {run.name}: {run.title}, {run.date}")
        out += [line for _, lines in run.commands for line in lines] or ["# (commands not recorded)"]
    for name, commands in [(r.name, r.commands) for r in cpu.interleaved] + \
            ([(GEMM_FILE, cpu.gemm_commands)] if cpu.gemm else []):
        out.append(f"# {name}:")
        out += [line for _, lines in commands for line in lines] or \
            ["# (not run by bench_all.sh: by hand, as bench/notes.md describes)"]
    return out + ["```", ""]


def has_grid(data):
    """Issue 4's grid (Linformer at several k), which Table 3 and the plots against n need."""
    return len({r["k"] for r in data.select(OURS_IMPL, "linformer", "layer_forward") if ok(r)}) > 1


def section_run(run, img_rel, out_dir):
    data = run.data
    peak, peak_desc = data.sgemm_peak()
    out = [f"### {run.title}: `{run.name}`", "",
           f"- **date, git, load average at start**: {run.date}; {run.machine_value('git') or 'unknown'}; "
           f"{run.machine_value('load average at start') or 'unknown'}",
           f"- **sgemm peak measured in the run**: {peak_desc}",
           f"- **configuration (from the CSVs)**: {config_summary(data)}",
           "- **inputs**: " + ", ".join(f"{link(p, out_dir)} ({n} row{'' if n == 1 else 's'})"
                                         for p, n in data.files)]
    out += load_warning(run.machine) + [""]
    body = section_layers(data, peak)
    for what, _, title in LAYER_PASSES:
        if img_rel.get(what):
            body += [f"![Layer {title}: time and memory against n]({img_rel[what]})", ""]
    body += section_family(data, img_rel)
    if any(data.select(OURS_IMPL, what=w) or data.select(PEER_IMPL, what=pw) for w, pw, _ in MODEL_PASSES):
        body += section_models(data, peak)
    if img_rel.get("model"):
        body += [f"![Model: time and memory]({img_rel['model']})", ""]
    if has_grid(data):
        body += section_table3(data, img_rel)[0]
    return out + demote(body, 2)


def section_file(title, csv_path, md_path, out_dir):
    """An interleaved script's file: the table its script wrote beside the CSV."""
    return [f"### {title}", "", f"{link(csv_path, out_dir)}, as {link(md_path, out_dir)} has it:", ""] + \
        embed(md_path) + [""]


def other_files(cpu, out_dir):
    """Links to every other markdown file in the folder (profiles, earlier runs that bench/notes.md cites)."""
    shown = {os.path.normpath(r.md) for r in cpu.interleaved} | {os.path.normpath(os.path.join(cpu.folder, GEMM_MD))}
    found = []
    for root, dirs, files in os.walk(cpu.folder):
        dirs[:] = sorted(d for d in dirs if os.path.join(root, d) not in {r.folder for r in cpu.runs})
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.endswith(".md") and os.path.normpath(os.path.join(root, f)) not in shown]
    if not found:
        return []
    return ["### Other measurements on this CPU", "",
            "Files of earlier one-off runs (bench/notes.md describes them):", ""] + \
        [f"- {link(p, out_dir)}" for p in found] + [""]


def section_cpu(cpu, plots, out_dir):
    """One CPU: its machine, the commands, its targets, then each run's tables and plots."""
    out = [f"## {cpu.title()}", "",
           f"Measured on this CPU only, from {link(cpu.folder, out_dir)}; none of these figures is compared with "
           "another CPU's.", "", "### Machine", ""] + machine_lines(cpu.machine) + [""]
    out += section_commands(cpu, out_dir)
    table, rows, count = section_targets(cpu)
    out += table
    for run in cpu.runs:
        out += section_run(run, plots.get((cpu.slug, run.name), {}), out_dir)
    for run in cpu.interleaved:
        out += section_file(run.title, os.path.join(cpu.folder, run.name), run.md, out_dir)
    if cpu.gemm:
        out += section_file("GEMM backends at the model's shapes (scripts/gemm_backends.sh)",
                            os.path.join(cpu.folder, GEMM_FILE), os.path.join(cpu.folder, GEMM_MD), out_dir)
    out += other_files(cpu, out_dir)
    return out, rows, count


def build_document(args, cpus, plots, out_dir):
    sections, summary = [], []
    for cpu in cpus:
        lines, rows, count = section_cpu(cpu, plots, out_dir)
        sections += lines
        summary.append(f"- [{cpu.title()}](#{anchor(cpu.title())}) (`{cpu.slug}`): issue 15's targets {count['met']} "
                       f"met, {count['not met']} not met, {count[Target.NOT_MEASURED]} not measured")
    out = ["# Benchmarks: the Linformer library against PyTorch, per CPU", "",
           "<!-- Generated by scripts/bench_report.py from bench/results/<cpu>/; do not edit by hand. The sections "
           "after the CPUs' come from bench/notes.md. -->", "",
           "Our C++ attention layers and model (`linformer bench`) against PyTorch (`scripts/peer_bench.py`: "
           "lucidrains' `linformer` package, naive softmax attention, `scaled_dot_product_attention`), one section "
           "per CPU kind. Each section's figures come from that CPU's own folder, `bench/results/<cpu>/`, and are "
           "compared only with each other: results from different CPUs are never compared, in a table or a plot. "
           "`bash scripts/bench_all.sh` measures the CPU it runs on and regenerates this document (the other CPUs' "
           "sections from their committed files, unchanged); `--report-only` rebuilds it without measuring. Every "
           "figure comes from the CSVs; the only numbers typed in are the paper's Table 3 and issue 15's "
           "thresholds.", ""]
    if args.command:
        out += ["This version: " + ", ".join(f"`{c}`" for c in args.command) + ".", ""]
    out += ["CPUs:", ""] + summary + [""] + sections
    if args.notes:
        try:
            with open(args.notes) as fh:
                notes = fh.read()
        except OSError as e:
            notes = f"(could not read {args.notes}: {e})\n"
        out += ["---", "", f"*The rest is {args.notes}, notes written by hand on the runs above; each names its CPU.*",
                "", notes.rstrip("\n"), ""]
    return "\n".join(out)


def print_summary(cpus):
    """Each CPU's targets on stdout."""
    for cpu in cpus:
        rows = targets(cpu)
        print(f"{cpu.slug}: " + ", ".join(f"{sum(1 for r in rows if r.status == s)} {s}"
                                          for s in ("met", "not met", Target.NOT_MEASURED)))
        for r in rows:
            print(f"  {r.status:<24} {r.name}: {r.measured}" + (f" [{', '.join(r.sources)}]" if r.sources else ""))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=os.path.join("bench", "results"), help="the CPU folders")
    p.add_argument("--out", required=True, help="the markdown report to write")
    p.add_argument("--img-dir", required=True, help="folder for the PNG plots (one folder per CPU and run)")
    p.add_argument("--notes", help="a markdown file appended verbatim (bench/notes.md)")
    p.add_argument("--command", action="append", help="the command that regenerates the report (repeatable)")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = p.parse_args()
    cpus = find_cpus(args.results)
    if not cpus:
        p.error(f"no CPU folder in {args.results} (a folder with targets/, full/, precision.csv, "
                f"flash_vs_sdpa.csv or {GEMM_FILE})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    plots = {}
    if not args.no_plots:
        for cpu in cpus:
            for run in cpu.runs:
                img = os.path.join(os.path.abspath(args.img_dir), cpu.slug, run.name.rstrip("/"))
                plots[(cpu.slug, run.name)] = make_plots(run.data, img, out_dir)
    text = build_document(args, cpus, plots, out_dir)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, args.out)
    print_summary(cpus)
    n_plots = sum(len(v) for v in plots.values())
    print(f"bench_report: wrote {args.out} ({len(cpus)} CPU{'' if len(cpus) == 1 else 's'})"
          + (f" and {n_plots} plots in {args.img_dir}" if n_plots else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
