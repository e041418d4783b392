#!/usr/bin/env python3
"""The benchmark report of issue 4: reads the CSVs of `linformer bench` (ours) and of
scripts/peer_bench.py (PyTorch), writes a markdown report with tables and PNG plots, and prints the
side-by-side ratio table to stdout.

  python scripts/bench_report.py --ours A.csv [B.csv ...] --peer C.csv [D.csv ...]
      --out docs/benchmarks.md --img-dir docs/img/bench [--notes bench/notes.md]
      [--command "the exact command" ...] [--machine-info bench/results/machine.txt] [--date TEXT]

Every figure in the report comes from the CSVs, except the paper's published Table 3 (Wang et al.
2020, "Linformer: Self-Attention with Linear Complexity") and the targets of issue 4, both written
below as constants. Rows are keyed by (impl, kind, what, n, k); when several files hold the same key
the later file wins (the --ours files are read first, then the --peer files, each in the order
given). Configurations that were skipped or failed (empty time_ms, note "skipped: ..." / "failed:
...") are shown as such, with their note. Kinds the report does not know are shown on our side only.

Standard library + numpy + matplotlib (Agg backend) only.
"""
import argparse
import csv
import datetime
import math
import os
import sys

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

# Issue 4's reference configuration and thresholds.
T_N, T_K = 4096, 256
T_LAYER_FWD_SPEEDUP, T_LAYER_FB_SPEEDUP, T_LAYER_MEM, T_LAYER_PEAK_FRACTION = 3.0, 2.0, 0.5, 0.5
T_MODEL_TRAIN_SPEEDUP, T_MODEL_INFER_SPEEDUP, T_MODEL_MEM = 1.5, 2.0, 0.5
T_FLASH_TIME = 1.0  # issue 15: flash at least as fast as PyTorch's SDPA (issue 4 allowed 1.2)
T_LINEAR_N, T_LINEAR_MAX = 65536, 18.0

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
    """All rows, deduplicated by (impl, kind, what, n, k) with the later file winning."""

    def __init__(self, paths):
        self.rows = {}
        self.sgemm = []  # every sgemm peak row, in file order (kept apart from the dedup)
        self.files = []
        for path in paths:
            rows = read_rows(path)
            self.files.append((path, len(rows)))
            for r in rows:
                if r["kind"] == "sgemm":
                    self.sgemm.append(r)
                    continue
                self.rows[(r["impl"], r["kind"], r["what"], r["n"], r["k"])] = r

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
# Targets
# ---------------------------------------------------------------------------------------------------

def describe_missing(side, kind, what, n, k, row):
    return f"not measured ({side} {kind} {what} n={n}" + (f" k={k}" if k else "") + f": {status_of(row)})"


def target_ratio(data, name, ours_kind, ours_what, peer_kind, peer_what, field, inverse, op, threshold,
                 n=T_N, k=T_K):
    """A ours-vs-peer target. inverse=False: value = peer/ours (speed-up); True: ours/peer."""
    o = data.get(OURS_IMPL, ours_kind, ours_what, n, k)
    p = data.get(PEER_IMPL, peer_kind, peer_what, n, k)
    if not ok(o):
        return [name, describe_missing("ours", ours_kind, ours_what, n, k, o), "not measured"]
    if not ok(p):
        return [name, describe_missing("PyTorch", peer_kind, peer_what, n, k, p), "not measured"]
    a, b = o[field], p[field]
    value = div(a, b) if inverse else div(b, a)
    if value is None:
        return [name, "not measured (zero or empty value)", "not measured"]
    unit = "ms" if field == "time_ms" else "MiB"
    fa, fb = (f_ms(a), f_ms(b)) if field == "time_ms" else (f_mib(a), f_mib(b))
    met = value >= threshold if op == ">=" else value <= threshold
    return [name, f"{value:.2f}× (ours {fa} {unit}, PyTorch {fb} {unit})", "met" if met else "not met"]


def section_targets(data, peak, grid_summary):
    rows = []
    lin_layer = f"Linformer layer n={T_N}, k={T_K}"
    rows.append(target_ratio(data, f"{lin_layer}: forward ≥ {T_LAYER_FWD_SPEEDUP:g}× faster than PyTorch",
                             "linformer", "layer_forward", "linformer", "forward", "time_ms", False, ">=",
                             T_LAYER_FWD_SPEEDUP))
    rows.append(target_ratio(data, f"{lin_layer}: forward+backward ≥ {T_LAYER_FB_SPEEDUP:g}× faster",
                             "linformer", "layer_forward_backward", "linformer", "forward_backward", "time_ms",
                             False, ">=", T_LAYER_FB_SPEEDUP))
    for ow, pw, t in (("layer_forward", "forward", "forward"),
                      ("layer_forward_backward", "forward_backward", "forward+backward")):
        rows.append(target_ratio(data, f"{lin_layer}: peak memory ≤ {T_LAYER_MEM:g}× PyTorch's ({t})",
                                 "linformer", ow, "linformer", pw, "peak_mem_bytes", True, "<=", T_LAYER_MEM))
    for ow, t in (("layer_forward", "forward"), ("layer_forward_backward", "forward+backward")):
        name = f"{lin_layer}: achieved GFLOP/s ≥ {T_LAYER_PEAK_FRACTION * 100:.0f} % of the sgemm peak ({t})"
        o = data.get(OURS_IMPL, "linformer", ow, T_N, T_K)
        if not ok(o) or not o["gflops"]:
            rows.append([name, describe_missing("ours", "linformer", ow, T_N, T_K, o), "not measured"])
        elif peak is None:
            rows.append([name, f"{o['gflops']:.0f} GFLOP/s; sgemm peak not measured", "not measured"])
        else:
            frac = o["gflops"] / peak
            rows.append([name, f"{100 * frac:.0f} % ({o['gflops']:.0f} of {peak:.0f} GFLOP/s)",
                         "met" if frac >= T_LAYER_PEAK_FRACTION else "not met"])

    model = f"Model (depth 6) n={T_N}, k={T_K}"
    rows.append(target_ratio(data, f"{model}: training step ≥ {T_MODEL_TRAIN_SPEEDUP:g}× faster than PyTorch",
                             "linformer", "model_train_step", "linformer_model", "train_step", "time_ms", False,
                             ">=", T_MODEL_TRAIN_SPEEDUP))
    rows.append(target_ratio(data, f"{model}: training step with activation checkpointing ≥ "
                             f"{T_MODEL_TRAIN_SPEEDUP:g}× faster than PyTorch",
                             "linformer", "model_train_step_checkpointed", "linformer_model", "train_step", "time_ms",
                             False, ">=", T_MODEL_TRAIN_SPEEDUP))
    rows.append(target_ratio(data, f"{model}: inference ≥ {T_MODEL_INFER_SPEEDUP:g}× faster",
                             "linformer", "model_inference", "linformer_model", "inference", "time_ms", False,
                             ">=", T_MODEL_INFER_SPEEDUP))
    for ow, pw, t in (("model_train_step", "train_step", "training step"),
                      ("model_train_step_checkpointed", "train_step", "training step with activation checkpointing"),
                      ("model_inference", "inference", "inference")):
        rows.append(target_ratio(data, f"{model}: peak memory ≤ {T_MODEL_MEM:g}× PyTorch's ({t})",
                                 "linformer", ow, "linformer_model", pw, "peak_mem_bytes", True, "<=", T_MODEL_MEM))

    for ow, pw, t in (("layer_forward", "forward", "forward"),
                      ("layer_forward_backward", "forward_backward", "forward+backward")):
        rows.append(target_ratio(data, f"flash n={T_N}: time ≤ {T_FLASH_TIME:g}× PyTorch SDPA's ({t})",
                                 "flash", ow, "sdpa", pw, "time_ms", True, "<=", T_FLASH_TIME, k=0))
    for ow, t in (("layer_forward", "forward"), ("layer_forward_backward", "forward+backward")):
        name = f"flash: memory linear in n ({t}): mem(largest n) / mem({T_N}) ≤ n ratio"
        base = data.get(OURS_IMPL, "flash", ow, T_N, 0)
        bigger = [r for r in data.select(OURS_IMPL, "flash", ow) if ok(r) and r["n"] > T_N]
        if not ok(base):
            rows.append([name, describe_missing("ours", "flash", ow, T_N, 0, base), "not measured"])
        elif not bigger:
            rows.append([name, f"not measured (no measured flash {ow} with n > {T_N})", "not measured"])
        else:
            top = max(bigger, key=lambda r: r["n"])
            ratio, n_ratio = div(top["peak_mem_bytes"], base["peak_mem_bytes"]), top["n"] / T_N
            if ratio is None:
                rows.append([name, "not measured (zero memory at n={T_N})", "not measured"])
            else:
                rows.append([name, f"{ratio:.2f} at n={top['n']} (n ratio {n_ratio:g}; {f_mib(base['peak_mem_bytes'])} → "
                                   f"{f_mib(top['peak_mem_bytes'])} MiB)", "met" if ratio <= n_ratio else "not met"])

    for ow, t in (("layer_forward", "forward"), ("layer_forward_backward", "forward+backward")):
        for field, fname in (("time_ms", "time"), ("peak_mem_bytes", "memory")):
            name = f"Linformer linear in n (k={T_K}, {t}): {fname}(n={T_LINEAR_N}) / {fname}(n={T_N}) ≤ {T_LINEAR_MAX:g}"
            a = data.get(OURS_IMPL, "linformer", ow, T_N, T_K)
            b = data.get(OURS_IMPL, "linformer", ow, T_LINEAR_N, T_K)
            if not ok(a):
                rows.append([name, describe_missing("ours", "linformer", ow, T_N, T_K, a), "not measured"])
            elif not ok(b):
                rows.append([name, describe_missing("ours", "linformer", ow, T_LINEAR_N, T_K, b), "not measured"])
            else:
                ratio = div(b[field], a[field])
                fmt = f_ms if field == "time_ms" else f_mib
                unit = "ms" if field == "time_ms" else "MiB"
                rows.append([name, "not measured" if ratio is None else
                             f"{ratio:.1f} ({fmt(a[field])} → {fmt(b[field])} {unit})",
                             "not measured" if ratio is None else ("met" if ratio <= T_LINEAR_MAX else "not met")])

    met, compared = grid_summary.get((OURS_IMPL, "full", "time"), (0, 0))
    name = "Table 3 speed-up (against our full) ≥ the paper's in every measured cell"
    if compared == 0:
        rows.append([name, "not measured (no cell measured on both sides)", "not measured"])
    else:
        rows.append([name, f"{met} of {compared} cells", "met" if met == compared else "not met"])

    n_met = sum(1 for r in rows if r[2] == "met")
    n_not = sum(1 for r in rows if r[2] == "not met")
    n_none = sum(1 for r in rows if r[2] == "not measured")
    out = ["## Targets of issue 4", "",
           f"Computed from the data: {n_met} met, {n_not} not met, {n_none} not measured.", ""]
    out += md_table(["target", "measured", "status"],
                    [[r[0], r[1], f"**{r[2]}**" if r[2] != "not measured" else r[2]] for r in rows])
    return out + [""]


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------

# Colours per (side, kind); ours solid with circles, PyTorch dashed with crosses.
COLOURS = {"linformer": "tab:blue", "flash": "tab:green", "sdpa": "tab:green", "full": "tab:red",
           "linformer_model": "tab:blue"}
K_SHADES = {128: "#7fb3e0", 256: "tab:blue", 512: "#2c6aa0", 1024: "#1d4a72", 2048: "#0b2540"}
EXTRA_COLOURS = ["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def family_series(data, what):
    """[(label, xs, ys_time, ys_mem, style)]: our Linformer (k = 256) and flash for reference, then every
    family kind in its own colour (20 colours) and marker."""
    import matplotlib
    palette = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    markers = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "h"]
    series = []
    kinds = [("linformer", T_K, "tab:blue", "o", 2.4), ("flash", 0, "tab:green", "o", 2.4)]
    order = [2, 6, 8, 10, 12, 14, 16, 18, 3, 7, 9, 11, 13, 15, 17, 19, 1, 5]  # blue, green: the references
    kinds += [(k, 0, palette[order[i % len(order)]], markers[i % len(markers)], 1.5)
              for i, k in enumerate(family_kinds(data))]
    for kind, k, colour, marker, width in kinds:
        rows = [r for r in data.select(OURS_IMPL, kind, what) if r["k"] == k and ok(r)]
        if rows:
            series.append((f"{kind} k={k}" if k else kind, [r["n"] for r in rows], [r["time_ms"] for r in rows],
                           [r["peak_mem_bytes"] / MIB if r["peak_mem_bytes"] is not None else float("nan")
                            for r in rows],
                           dict(color=colour, linestyle="-", marker=marker, linewidth=width, markersize=4)))
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
            if series:
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


def plot_grid(data, img_dir, plt):
    """The Table 3 grid against our full attention as two heatmaps (speed-up, memory saving); the
    colour is ours / paper on a log scale (green: ours ≥ paper), annotated 'ours/paper'."""
    import numpy as np
    from matplotlib.colors import LogNorm
    if not data.select(OURS_IMPL, "full", "layer_forward") or not data.select(OURS_IMPL, "linformer", "layer_forward"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("0.92")
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
                dark = not math.isnan(ratio[i, j]) and abs(math.log(ratio[i, j])) > math.log(2.8)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        im = ax.imshow(np.ma.masked_invalid(ratio), cmap=cmap, norm=LogNorm(vmin=0.25, vmax=4), aspect="auto")
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
                groups.append((f"{title}\nn={r['n']} k={r['k']}", r, p))
    if not groups:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(groups) + 4), 5))
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
    axes[0].legend()
    axes[0].set_title("model: time")
    axes[1].set_title("model: memory")
    fig.tight_layout()
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
# The stdout table and the document
# ---------------------------------------------------------------------------------------------------

def print_ratios(data):
    """The side-by-side table of every configuration measured on both sides."""
    lines = []
    head = f"{'what':<22} {'ours kind':<10} {'peer kind':<16} {'n':>6} {'k':>5} {'ours ms':>9} {'peer ms':>9} " \
           f"{'speed-up':>8} {'ours MiB':>9} {'peer MiB':>9} {'mem ratio':>9}"
    for passes, peer_map in ((LAYER_PASSES, PEER_LAYER_KIND), (MODEL_PASSES, PEER_MODEL_KIND)):
        for ours_what, peer_what, _ in passes:
            for ours_kind, peer_kind in pairs_for(data, [(ours_what, peer_what)], peer_map):
                if not ours_kind or not peer_kind:
                    continue
                for o in data.select(OURS_IMPL, ours_kind, ours_what):
                    p = data.get(PEER_IMPL, peer_kind, peer_what, o["n"], o["k"])
                    if not ok(o) or not ok(p):
                        continue
                    lines.append(f"{ours_what:<22} {ours_kind:<10} {peer_kind:<16} {o['n']:>6} {o['k']:>5} "
                                 f"{f_ms(o['time_ms']):>9} {f_ms(p['time_ms']):>9} "
                                 f"{f_ratio(div(p['time_ms'], o['time_ms'])):>8} {f_mib(o['peak_mem_bytes']):>9} "
                                 f"{f_mib(p['peak_mem_bytes']):>9} {f_ratio(div(o['peak_mem_bytes'], p['peak_mem_bytes'])):>9}")
    print("speed-up = peer time / our time; mem ratio = our peak memory / peer's")
    print(head)
    print("-" * len(head))
    print("\n".join(lines) if lines else "(no configuration measured on both sides)")


def machine_lines(path):
    """The --machine-info file as a list ('key: value' lines in bold key form), and a warning when
    its 'load average at start' says the machine was busy."""
    if not path:
        return ["- machine: not given (--machine-info)"]
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError as e:
        return [f"- machine: could not read {path}: {e}"]
    out, warning = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        out.append(f"- **{key.strip()}**: {value.strip()}" if sep and value.strip() else f"- {line.strip()}")
        if key.strip() == "load average at start":
            load = _number(value.split()[0] if value.split() else "", float)
            if load is not None and load > 0.5:
                warning = ["", f"**Warning: the 1-minute load average was {load:g} when the run started: another "
                               "process was using the machine, so these timings are not comparable with an idle "
                               "run.**"]
    return out + warning


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


def build_document(args, data, img_rel):
    peak, peak_desc = data.sgemm_peak()
    out = ["# Benchmarks: speed and memory of the Linformer library against PyTorch", "",
           "<!-- Generated by scripts/bench_report.py from the CSVs listed below; do not edit by hand. "
           "The sections after the Table 3 one (before/after checks, profiling notes) come from bench/notes.md. -->", "",
           "Our C++ attention layers and model (`linformer bench`) against the PyTorch peer "
           "(`scripts/peer_bench.py`: lucidrains' `linformer` package, naive softmax attention, "
           "`scaled_dot_product_attention`) on the same machine, plus the paper's Table 3 recomputed here. "
           "Every figure below comes from the CSVs; the only numbers typed in are the paper's published "
           "Table 3 and the targets of issue 4.", "",
           f"- **date of the run**: {args.date or run_date(args.ours + args.peer)}",
           f"- **sgemm peak measured in the run**: {peak_desc}",
           f"- **configuration (from the CSVs)**: {config_summary(data)}",
           "- **inputs**: " + ", ".join(f"`{p}` ({n} row{'' if n == 1 else 's'})" for p, n in data.files), "",
           "### Machine", ""] + machine_lines(args.machine_info) + [""]
    out += ["### Command", "", "```sh"] + (args.command or ["(not given: pass --command)"]) + ["```", ""]

    table3, grid_summary = section_table3(data, img_rel)
    out += section_targets(data, peak, grid_summary)
    out += section_layers(data, peak)
    for what, _, title in LAYER_PASSES:
        if img_rel.get(what):
            out += [f"![Layer {title}: time and memory against n]({img_rel[what]})", ""]
    out += section_family(data, img_rel)
    out += section_models(data, peak)
    if img_rel.get("model"):
        out += [f"![Model: time and memory]({img_rel['model']})", ""]
    out += table3
    if args.notes:
        try:
            with open(args.notes) as fh:
                notes = fh.read()
        except OSError as e:
            notes = f"(could not read {args.notes}: {e})\n"
        out += [notes.rstrip("\n"), ""]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", nargs="+", default=[], help="CSVs of `linformer bench --csv`")
    p.add_argument("--peer", nargs="+", default=[], help="CSVs of scripts/peer_bench.py --out")
    p.add_argument("--out", required=True, help="the markdown report to write")
    p.add_argument("--img-dir", required=True, help="folder for the PNG plots")
    p.add_argument("--notes", help="a markdown file appended verbatim (bench/notes.md)")
    p.add_argument("--command", action="append", help="the command(s) that produced the data (repeatable)")
    p.add_argument("--machine-info", help="a text file of 'key: value' lines describing the machine")
    p.add_argument("--date", help="the date of the run (default: the newest CSV's modification time)")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = p.parse_args()
    if not args.ours and not args.peer:
        p.error("give at least one CSV (--ours / --peer)")
    for path in args.ours + args.peer:
        if not os.path.exists(path):
            p.error(f"no such file: {path}")

    data = Data(args.ours + args.peer)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    img_rel = {} if args.no_plots else make_plots(data, os.path.abspath(args.img_dir), out_dir)
    text = build_document(args, data, img_rel)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, args.out)
    print_ratios(data)
    print(f"bench_report: wrote {args.out}" + (f" and {len(img_rel)} plots in {args.img_dir}" if img_rel else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
