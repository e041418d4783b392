#!/usr/bin/env python3
"""The quality report of issue 13 (docs/study.md): reads study directories made by scripts/study.py
and writes docs/quality.md with tables and PNG plots.

  python3 scripts/quality_report.py --dir STUDY_DIR [--dir ANOTHER ...] --out docs/quality.md
      --img-dir docs/img/quality [--spectrum DIR] [--no-plots]

For every run: the learning curves of log.jsonl (training loss and validation bits per byte per step),
the final held-out test evaluation (test_eval.json), steps, tokens, training time and machine. Tables
per panel of the grid (the paper's Fig. 3 a-d, the other kinds, the equal-time runs), the relative gap
to exact attention (`flash`) at the same n, the issue's targets marked met / not met from the measured
numbers (with a placeholder line for the reason where not met), the runs not done yet, and the total
machine time. A study may be partial: runs not done show as "not run". With --spectrum DIR the PNGs
found there (`linformer spectrum`) are copied beside the plots and embedded.

Every figure comes from the run directories; the only constants are the targets of issue 13 below.
Standard library only, plus matplotlib for the plots (skipped with --no-plots).
"""
import argparse
import datetime
import math
import os
import shutil
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import study  # noqa: E402  (the run-directory readers are shared)

LN2 = math.log(2)
# Issue 13's targets; a grid may set its own ("targets", e.g. the smoke grid's smaller n).
DEFAULT_TARGETS = {
    "single": [{"k": 128, "n": 512}, {"k": 256, "n": 1024}],  # Linformer within single_gap of flash
    "single_gap": 0.02,
    "sharing": {"k": 128, "n": 512},  # every sharing mode within sharing_gap of flash
    "sharing_gap": 0.03,
    "k_order": [512, 1024],  # bits/byte not higher as k grows, at each of these n
    "time": 4096,  # equal wall-clock time: Linformer below flash at this n
}
# A grid whose targets hold "gaps" (issue 17's causal LM grid) has those targets alone: each
# {"kind", "n", "max_gap"}, that kind's run at n within max_gap of flash's test bits/byte (equal steps).
# "title" names the report's targets section.
DEFAULT_TARGETS_TITLE = "Targets of issue 13"
# docs/quality.md may end with hand-written sections (other studies' skeletons): a new report keeps
# everything from this line on.
KEEP_MARKER = "<!-- quality_report.py keeps everything below this line -->"
SHARING_MODES = ["none", "headwise", "kv", "layerwise"]
DEFAULT_SHARING = "headwise"  # linformer's default (docs/attention.md)


# ---------------------------------------------------------------------------------------------------
# Reading


def attention_of(run):
    a = run["config"]["model"].get("attention", {})
    if isinstance(a, list):  # per-layer: describe by the first layer
        a = a[0] if a else {}
    return a.get("kind", "linformer"), dict(a.get("options", {}))


def load_runs(dirs):
    """Every run of the study directories, read into one record each; a name in several directories is
    taken from the first that finished it (else the first), its machine time summed over all of them.
    Returns (runs, panels, studies)."""
    runs, panels, studies = {}, {}, []
    for d in dirs:
        d = os.path.abspath(d)
        s, expanded = study.load_study(d)
        studies.append((d, s))
        for pid, p in s["definition"].get("panels", {}).items():
            panels.setdefault(pid, p)
        base_steps = s["definition"]["base"].get("train", {}).get("steps")
        for r in expanded:
            rec = read_run(d, r)
            # Only runs from scratch with the grid's step count stand for a kind in the targets; a run
            # continued from another's checkpoint or given its own steps is shown in its own panels.
            rec["aux"] = bool(rec["from"]) or (not rec["timed"] and r["config"]["train"].get("steps") != base_steps)
            old = runs.get(r["name"])
            if old is not None:
                if old["state"] == "done" or rec["state"] != "done":
                    rec, old = old, rec
                rec["machine_seconds"] += old["machine_seconds"]  # every attempt in every directory counts
            runs[r["name"]] = rec
    for rec in runs.values():  # a run converted from another continues that run's steps
        src = runs.get(rec["from"]["run"]) if rec["from"] else None
        rec["offset"] = (src["steps"] or 0) if src else 0
    return list(runs.values()), panels, studies


def read_run(study_dir, r):
    st = study.run_state(os.path.join(study_dir, "runs", r["name"]))
    kind, opts = attention_of(r)
    meta = st["meta"]
    train_attempts = [a for a in meta.get("attempts", []) if a.get("action") in ("train", "resume")]
    machine = (train_attempts[-1] if train_attempts else {}).get("machine", {})
    elapsed = {t["step"]: t.get("elapsed_s") for t in st["log"]["train"]}
    steps = st["target_steps"] if st["target_steps"] is not None else (
        None if r["time_budget_s"] else r["config"]["train"].get("steps"))
    return {
        "name": r["name"], "label": r["label"], "panels": r["panels"], "n": r["seq_len"], "kind": kind,
        "options": opts, "k": opts.get("k"), "sharing": opts.get("sharing", DEFAULT_SHARING) if kind == "linformer" else None,
        "timed": r["time_budget_s"] is not None, "budget_s": r["time_budget_s"], "probe": meta.get("probe"),
        "steps": steps, "tokens_per_step": r["tokens_per_step"], "batch": r["batch_size"], "state": st["state"],
        "step": st["step"], "test": st["test"], "test_bpb": st["test"]["bits_per_byte"] if st["state"] == "done" else None,
        "valid": [(e["step"], e["bits_per_byte"]) for e in st["log"]["eval"] if e.get("bits_per_byte") is not None],
        "train": [(t["step"], t["loss"] / LN2) for t in st["log"]["train"] if t.get("loss") is not None],
        "elapsed": elapsed, "train_seconds": st["train_seconds"], "machine_seconds": st["machine_seconds"],
        "cpu": machine.get("cpu"), "threads": machine.get("threads", meta.get("threads")), "commit": machine.get("commit"),
        "study": study_dir, "from": r.get("from"), "offset": 0, "aux": False,
        "converted": study.read_json(os.path.join(study_dir, "runs", r["name"], "converted_eval.json")),
    }


# ---------------------------------------------------------------------------------------------------
# The targets


def reference(runs, n, timed):
    """The exact-attention (flash) run at n, of the same kind of comparison (equal steps or equal time)."""
    for r in runs:
        if r["kind"] == "flash" and r["n"] == n and r["timed"] == timed and not r["aux"]:
            return r
    return None


def gap(r, runs):
    """(bpb - flash's bpb) / flash's bpb at the same n and comparison, or None."""
    ref = reference(runs, r["n"], r["timed"])
    if ref is None or r["test_bpb"] is None or ref["test_bpb"] is None:
        return None
    return (r["test_bpb"] - ref["test_bpb"]) / ref["test_bpb"]


def find(runs, kind, n, k=None, sharing=None, timed=False):
    out = [r for r in runs if r["kind"] == kind and r["n"] == n and r["timed"] == timed and not r["aux"]
           and (k is None or r["k"] == k) and (sharing is None or r["sharing"] == sharing)]
    return out[0] if out else None


def pct(x):
    return "–" if x is None else f"{100 * x:+.2f} %"


def bpb(x):
    return "–" if x is None else f"{x:.4f}"


def non_increasing(points):
    """points: [(x, bpb)] sorted by x; True when each bpb is <= the previous one."""
    return all(b <= a for (_, a), (_, b) in zip(points, points[1:]))


def evaluate_targets(runs, spec=None):
    """The issue's targets from the measured numbers (spec: a grid's "targets", else the issue's,
    DEFAULT_TARGETS). Each: {"id", "target", "measured", "status", "missing"} with status 'met',
    'not met', 'not measured' (runs missing or not in the grid), or 'info: ...' for a row that is no target."""
    if spec and "gaps" in spec:
        return gap_targets(runs, spec["gaps"])
    spec = dict(DEFAULT_TARGETS, **{k: v for k, v in (spec or {}).items() if k != "title"})
    out = []

    for pair in spec["single"]:
        k, n, limit = pair["k"], pair["n"], spec["single_gap"]
        lin = find(runs, "linformer", n, k, DEFAULT_SHARING)
        ref = reference(runs, n, False)
        t = {"id": f"k{k}_n{n}",
             "target": f"Linformer k = {k} at n = {n} within {limit:.0%} of exact attention (equal steps)"}
        out.append(judge_gap(t, lin, ref, runs, limit))

    k, n, limit = spec["sharing"]["k"], spec["sharing"]["n"], spec["sharing_gap"]
    t = {"id": "sharing", "target": f"every sharing mode (n = {n}, k = {k}) within {limit:.0%} of exact attention"}
    parts, missing, worst = [], [], None
    ref = reference(runs, n, False)
    for mode in SHARING_MODES:
        r = find(runs, "linformer", n, k, mode)
        if r is None or r["test_bpb"] is None or ref is None or ref["test_bpb"] is None:
            if r is None or r["test_bpb"] is None:
                missing.append(r["name"] if r else f"sharing {mode} (not in the grid)")
            continue
        g = gap(r, runs)
        worst = g if worst is None else max(worst, g)
        parts.append(f"{mode} {pct(g)}")
    if ref is None or ref["test_bpb"] is None:
        missing.append(ref["name"] if ref else f"flash at n = {n} (not in the grid)")
    if missing:
        t.update(status="not measured", measured=", ".join(parts) or "–", missing=missing)
    else:
        t.update(status="met" if worst <= limit else "not met", measured=", ".join(parts), missing=[])
    out.append(t)

    ns = spec["k_order"]
    t = {"id": "k_order", "target": "larger k closer to exact attention (bits/byte not higher as k grows), n = "
         + " and ".join(str(n) for n in ns)}
    parts, missing, ok = [], [], True
    for n in ns:
        cands = sorted([r for r in runs if r["kind"] == "linformer" and r["n"] == n and not r["timed"] and not r["aux"]
                        and r["sharing"] == DEFAULT_SHARING and r["k"] is not None], key=lambda r: r["k"])
        missing += [r["name"] for r in cands if r["test_bpb"] is None]
        pts = [(r["k"], r["test_bpb"]) for r in cands if r["test_bpb"] is not None]
        if len(cands) < 2:
            missing.append(f"n = {n}: fewer than two k in the grid")
        ok = ok and non_increasing(pts)
        if pts:
            parts.append(f"n = {n}: " + ", ".join(f"k={k} {bpb(b)}" for k, b in pts))
    t.update(status="not measured" if missing else ("met" if ok else "not met"), measured="; ".join(parts) or "–",
             missing=missing)
    out.append(t)

    t = {"id": "n_order", "target": "bits/byte not worse as n grows at fixed k (Fig. 3(d))"}
    fixed = [r for r in runs if "3d" in r["panels"] and r["kind"] == "linformer" and not r["timed"] and not r["aux"]]
    parts, missing, ok = [], [], True
    for k in sorted({r["k"] for r in fixed if r["k"] is not None}):
        cands = sorted([r for r in fixed if r["k"] == k], key=lambda r: r["n"])
        missing += [r["name"] for r in cands if r["test_bpb"] is None]
        pts = [(r["n"], r["test_bpb"]) for r in cands if r["test_bpb"] is not None]
        ok = ok and non_increasing(pts)
        if pts:
            parts.append(f"k = {k}: " + ", ".join(f"n={n} {bpb(b)}" for n, b in pts))
    if not fixed:
        missing.append("no run in panel 3d")
    t.update(status="not measured" if missing else ("met" if ok else "not met"), measured="; ".join(parts) or "–",
             missing=missing)
    out.append(t)

    timed_ns = sorted({r["n"] for r in runs if r["timed"]} | {spec["time"]})
    for n in [spec["time"]] + [m for m in timed_ns if m != spec["time"]]:
        is_target = n == spec["time"]
        flash = reference(runs, n, True)
        lins = [r for r in runs if r["kind"] == "linformer" and r["n"] == n and r["timed"] and not r["aux"]]
        t = {"id": f"time_n{n}", "target": f"equal wall-clock time at n = {n}: Linformer lower held-out bits/byte "
             "than exact attention" + ("" if is_target else " (for information, not a target)")}
        if flash is None or not lins:
            t.update(status="not measured", measured="no such runs in the grid", missing=[])
        elif flash["test_bpb"] is None or any(r["test_bpb"] is None for r in lins):
            t.update(status="not measured", measured="runs not done",
                     missing=[r["name"] for r in [flash] + lins if r["test_bpb"] is None])
        else:
            best = min(lins, key=lambda r: r["test_bpb"])
            t.update(status="met" if best["test_bpb"] < flash["test_bpb"] else "not met", missing=[],
                     measured=f"{best['name']} {bpb(best['test_bpb'])} ({best['steps']} steps) vs {flash['name']} "
                              f"{bpb(flash['test_bpb'])} ({flash['steps']} steps)")
        if not is_target and t["status"] != "not measured":
            t["status"] = "info: " + t["status"]
        out.append(t)
    return out


def judge_gap(t, run, ref, runs, limit):
    """Target t filled in: run's test bits/byte within `limit` of the reference run's (not measured
    when either run is missing or not done)."""
    if run is None or ref is None:
        t.update(status="not measured", measured="no such run in the grid", missing=[])
    elif run["test_bpb"] is None or ref["test_bpb"] is None:
        t.update(status="not measured", measured="runs not done",
                 missing=[x["name"] for x in (run, ref) if x["test_bpb"] is None])
    else:
        g = gap(run, runs)
        t.update(status="met" if g <= limit else "not met", missing=[],
                 measured=f"{bpb(run['test_bpb'])} vs {bpb(ref['test_bpb'])} bits/byte ({pct(g)})")
    return t


def gap_targets(runs, gaps):
    out = []
    for g in gaps:
        kind, n, limit = g["kind"], g["n"], g["max_gap"]
        r, ref = find(runs, kind, n), reference(runs, n, False)
        t = {"id": f"{kind}_n{n}", "target": f"{kind} at n = {n} within {limit:.0%} of exact attention (equal steps)"}
        out.append(judge_gap(t, r, ref, runs, limit))
    return out


# ---------------------------------------------------------------------------------------------------
# Writing


def hms(s):
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 60 else study.fmt_seconds(s)


def attention_label(r):
    if r["kind"] == "linformer":
        extra = {k: v for k, v in r["options"].items() if k not in ("k", "sharing")}
        return f"linformer k={r['k']} {r['sharing']}" + (f" {extra}" if extra else "")
    return r["kind"] + (" " + ", ".join(f"{k}={v}" for k, v in r["options"].items()) if r["options"] else "")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_row(r, runs, timed_panel):
    tokens = "–" if r["steps"] is None else f"{(r['offset'] + r['steps']) * r['tokens_per_step'] / 1e6:.2f} M"
    last_valid = bpb(r["valid"][-1][1]) if r["valid"] and r["state"] == "done" else "–"
    test = bpb(r["test_bpb"]) if r["state"] == "done" else ("not run" if r["state"] == "not started" else r["state"])
    row = [f"`{r['name']}`", attention_label(r), r["n"], r["batch"]]
    if timed_panel:
        probe = r["probe"] or {}
        load = probe.get("load_average")
        row += [f"{r['budget_s']:g} s", (f"{probe['seconds_per_step']:.3f}" + (f" (load {load:g})" if load is not None else ""))
                if probe else "–"]
    ref = reference(runs, r["n"], r["timed"])
    steps = "–" if r["steps"] is None else (f"{r['offset']} + {r['steps']}" if r["from"] else r["steps"])
    row += [steps, tokens, last_valid, test,
            "(reference)" if ref is r else pct(gap(r, runs)),
            hms(r["train_seconds"]) if r["state"] == "done" else "–"]
    return row


def plot_panel(plt, pid, panel, members, runs, path):
    timed = panel.get("x") == "seconds"
    if timed:
        ns = sorted({r["n"] for r in members})
        fig, axes = plt.subplots(1, max(1, len(ns)), figsize=(6 * max(1, len(ns)), 4.2), squeeze=False)
        for ax, n in zip(axes[0], ns):
            for i, r in enumerate(sorted((m for m in members if m["n"] == n), key=lambda m: m["name"])):
                color = f"C{i}"
                xs = [r["elapsed"].get(s) for s, _ in r["valid"]]
                pts = [(x, b) for x, (_, b) in zip(xs, r["valid"]) if x is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, ms=3,
                            label=f"{attention_label(r)} ({r['steps']} steps)")
                if r["test_bpb"] is not None and r["train_seconds"]:
                    ax.plot([r["train_seconds"]], [r["test_bpb"]], "*", color=color, ms=11)
            budgets = sorted({m["budget_s"] for m in members if m["n"] == n and m["budget_s"]})
            for b in budgets:
                ax.axvline(b, ls="--", color="gray", lw=0.8)
                ax.annotate(f"budget {b:g} s", (b, 1), xycoords=("data", "axes fraction"), fontsize=7,
                            ha="right", va="top", rotation=90, color="gray")
            ax.set_xlabel("training time (s)")
            ax.set_ylabel("bits/byte (valid; star: final test)")
            ax.set_title(f"n = {n}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("\n".join(textwrap.wrap(panel.get("title", pid), 120)), fontsize=10)
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, r in enumerate(members):
            color = f"C{i % 10}"
            x0 = r["offset"]  # a converted run continues its source's steps
            if r["train"]:
                ax.plot([x0 + s for s, _ in r["train"]], [b for _, b in r["train"]], "-", color=color, alpha=0.25, lw=0.8)
            if r["valid"]:
                ax.plot([x0 + s for s, _ in r["valid"]], [b for _, b in r["valid"]], "o-", color=color, ms=3,
                        label=r["label"] + ("" if r["state"] == "done" else f" ({r['state']})"))
        valid = [b for r in members for _, b in r["valid"]]
        low = min([b for r in members for _, b in r["train"]] + valid) if valid else None
        if valid and max(valid) > low:  # the early training loss would flatten the validation curves
            span = max(valid) - low
            ax.set_ylim(low - 0.05 * span, max(valid) + 0.3 * span)
        ax.set_xlabel("step")
        ax.set_ylabel("bits/byte (markers: valid; faint: training loss)")
        ax.set_title("\n".join(textwrap.wrap(panel.get("title", pid), 80)), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs, panels, studies, out, img_dir, spectrum=None, plots=True, command=None):
    plt = None
    if plots:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise study.UsageError("matplotlib is not installed: run `bash scripts/study.sh report ...` (it makes the "
                                   "venv), or pass --no-plots")
        os.makedirs(img_dir, exist_ok=True)
    out_dir = os.path.dirname(os.path.abspath(out))
    rel = lambda p: os.path.relpath(os.path.abspath(p), out_dir)  # noqa: E731
    done = [r for r in runs if r["state"] == "done"]
    clm = all(s["definition"]["base"].get("model", {}).get("task") == "clm" for _, s in studies)
    L = []
    L.append("# Quality study: " + ("causal attention kinds against exact attention on GCIDE byte-level causal LM" if clm
                                    else "Linformer against exact attention on GCIDE byte-level MLM"))
    L.append("")
    L.append(f"Written by `{command or 'scripts/quality_report.py'}` on "
             f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
             f"{len(studies)} study director{'y' if len(studies) == 1 else 'ies'} made by scripts/study.py "
             "(`bash scripts/study.sh` runs what is not done and writes this report: docs/study.md). "
             f"Every figure below is measured; {len(done)} of {len(runs)} runs are done. Bits per byte are the "
             + ("causal-LM cross-entropy on every predicted byte" if clm else "masked-LM cross-entropy on masked bytes")
             + " in bits (lower is better); \"test\" is the held-out test "
             "split after the last step, \"valid\" the last validation evaluation during training. The gap is "
             "(bits/byte − flash's) / flash's at the same n: equal steps for step runs, the same time budget "
             "for the equal-time runs.")
    L.append("")
    # Setup
    L.append("## Setup")
    L.append("")
    for d, s in studies:
        g = s["definition"]
        L.append(f"- study `{os.path.basename(d)}`: grid `{s['grid']}` (definition hash `{s['hash'][:12]}`, "
                 f"from {s.get('grids_file', '?')}): {g.get('description', '')}")
        L.append(f"  - {g['tokens_per_step']} tokens per step for every run (batch = tokens / n); test evaluation: "
                 f"{g.get('test_batches', 50)} batches; base recipe (`linformer train --config`):")
        L.append(f"  - model `{_compact(g['base'].get('model', {}))}`")
        L.append(f"  - train `{_compact(g['base'].get('train', {}))}`")
    machines = sorted({(r["cpu"], r["threads"]) for r in runs if r["cpu"]}, key=str)
    commits = sorted({r["commit"] for r in runs if r["commit"]})
    total_machine = sum(r["machine_seconds"] for r in runs)
    total_train = sum(r["train_seconds"] or 0 for r in done)
    L.append(f"- machines: {'; '.join(f'{c}, {t} threads' for c, t in machines) or '–'}")
    L.append(f"- commits: {', '.join(f'`{c[:12]}`' + (' (dirty)' if c.endswith('-dirty') else '') for c in commits) or '–'}")
    L.append(f"- **total machine time: {hms(total_machine)}** (every probe, training, resume and evaluation, "
             f"{total_machine:.0f} s); training time of the finished runs: {hms(total_train)}")
    L.append("")
    # Targets
    spec = next((s["definition"]["targets"] for _, s in studies if "targets" in s["definition"]), None)
    L.append(f"## {(spec or {}).get('title', DEFAULT_TARGETS_TITLE)}")
    L.append("")
    targets = evaluate_targets(runs, spec)
    L.append(table(["target", "measured (test bits/byte)", "status"],
                   [[t["target"], t["measured"], "**not met**" if t["status"] == "not met" else t["status"]]
                    for t in targets]))
    L.append("")
    # What was found: STUDY_DIR/findings.md, written by hand, kept with the runs it explains.
    findings = [open(os.path.join(d, "findings.md"), encoding="utf-8").read().strip()
                for d, _ in studies if os.path.isfile(os.path.join(d, "findings.md"))]
    for t in targets:
        if t["status"] == "not met":
            reason = "see 'What was found' below" if findings else "_(to be filled in: what was found)_"
            L.append(f"- Not met: {t['target']}. Reason found: {reason}")
        elif t["status"] == "not measured" and t["missing"]:
            L.append(f"- Not measured yet: {t['target']} (missing: {', '.join(t['missing'])})")
    L.append("")
    if findings:
        L.append("### What was found")
        L.append("")
        L.extend(findings)
        L.append("")
    # Panels
    for pid, panel in panels.items():
        members = [r for r in runs if pid in r["panels"]]
        if not members:
            continue
        timed = panel.get("x") == "seconds"
        L.append(f"## {panel.get('title', pid)}")
        L.append("")
        header = ["run", "attention", "n", "batch"] + (["budget", "probe s/step"] if timed else []) + \
                 ["steps", "tokens", "valid", "test", "gap to flash", "train time"]
        L.append(table(header, [run_row(r, runs, timed) for r in members]))
        L.append("")
        if plt is not None and any(r["valid"] for r in members):
            path = os.path.join(img_dir, f"quality_{pid}.png")
            plot_panel(plt, pid, panel, members, runs, path)
            L.append(f"![{panel.get('title', pid)}]({rel(path)})")
            L.append("")
    # Conversions
    converted = [r for r in runs if r["from"]]
    if converted:
        L.append("## Runs continued from another run's checkpoint (`linformer convert`)")
        L.append("")
        L.append("Each converts its source run's final checkpoint (fresh optimizer, the warm-up and schedule of its own "
                 "options) and fine-tunes it; \"before\" is the converted model on the validation split before any step; "
                 "\"within 2 %\" the first fine-tuning step whose validation bits/byte is within 2 % of the source's last "
                 "(at the source's n; for a change of n a reference point, not a target).")
        L.append("")
        rows = []
        by_name = {r["name"]: r for r in runs}
        for r in converted:
            src = by_name.get(r["from"]["run"])
            src_valid = src["valid"][-1][1] if src and src["valid"] else None
            before = r["converted"]["bits_per_byte"] if r["converted"] else None
            hit = next((s for s, b in r["valid"] if src_valid is not None and b <= 1.02 * src_valid), None)
            rows.append([f"`{r['name']}`", f"`{r['from']['run']}`", f"`{' '.join(r['from'].get('convert', []))}`",
                         bpb(src_valid), bpb(before), r["valid"][0][0] if r["valid"] else "–",
                         bpb(r["valid"][0][1]) if r["valid"] else "–",
                         "–" if hit is None else hit, bpb(r["valid"][-1][1]) if r["valid"] else "–", bpb(r["test_bpb"])])
        L.append(table(["run", "from", "convert", "source's last valid", "before", "first eval step", "valid there",
                        "within 2 % at step", "last valid", "test"], rows))
        L.append("")
    # Spectrum
    if spectrum:
        pngs = sorted(f for f in os.listdir(spectrum) if f.lower().endswith(".png")) if os.path.isdir(spectrum) else []
        L.append("## Spectrum of the context-mapping matrices (`linformer spectrum`)")
        L.append("")
        if not pngs:
            L.append(f"No PNG found in `{spectrum}` yet.")
        for f in pngs:
            src = dst = os.path.abspath(os.path.join(spectrum, f))
            if not src.startswith(out_dir + os.sep):  # keep the report's images beside it
                dst = os.path.join(os.path.abspath(img_dir), "spectrum", f)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
            L.append(f"![{f}]({rel(dst)})")
            L.append("")
        L.append("")
    # Not done
    pending = [r for r in runs if r["state"] != "done"]
    L.append("## Runs not done yet")
    L.append("")
    if pending:
        L.append(table(["run", "state", "step"], [[f"`{r['name']}`", "not run" if r["state"] == "not started" else r["state"],
                                                   f"{r['step']}/{r['steps'] if r['steps'] is not None else '?'}"]
                                                  for r in pending]))
    else:
        L.append("None: every run of the grid is done.")
    L.append("")
    # Everything
    L.append("## Every run")
    L.append("")
    rows = []
    for r in runs:
        rows.append([f"`{r['name']}`", ", ".join(r["panels"]), attention_label(r), r["n"], r["batch"],
                     r["steps"] if r["steps"] is not None else "–", bpb(r["test_bpb"]),
                     r["test"]["count"] if r["test_bpb"] is not None and "count" in r["test"] else "–",
                     hms(r["train_seconds"]), hms(r["machine_seconds"]) if r["machine_seconds"] else "–",
                     f"{r['cpu']}, {r['threads']} threads" if r["cpu"] else "–",
                     f"`{r['commit'][:12]}`" if r["commit"] else "–"])
    L.append(table(["run", "panels", "attention", "n", "batch", "steps", "test bits/byte", "scored test bytes",
                    "train time", "machine time", "machine", "commit"], rows))
    L.append("")
    os.makedirs(out_dir, exist_ok=True)
    kept = ""
    if os.path.isfile(out):
        with open(out, encoding="utf-8") as f:
            old = f.read()
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER):]
    with open(out, "w") as f:
        f.write("\n".join(L) + ("\n" + kept if kept else ""))
    return targets


def _compact(obj):
    import json
    return json.dumps(obj, sort_keys=True, separators=(", ", ": "))


def main(argv=None):
    p = argparse.ArgumentParser(prog="quality_report.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", action="append", required=True, help="a study directory (repeatable)")
    p.add_argument("--out", default="docs/quality.md", help="the report (default docs/quality.md)")
    p.add_argument("--img-dir", default=None, help="the plots (default: img/quality beside the report)")
    p.add_argument("--spectrum", help="a directory of `linformer spectrum` output: its PNGs are embedded")
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    args = p.parse_args(argv)
    img_dir = args.img_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "img", "quality")
    try:
        runs, panels, studies = load_runs(args.dir)
        targets = write_report(runs, panels, studies, args.out, img_dir, args.spectrum, not args.no_plots,
                               command=" ".join(["python3 scripts/quality_report.py"] + list(sys.argv[1:] if argv is None else argv)))
    except study.UsageError as e:
        print(f"quality_report: error: {e}", file=sys.stderr)
        return 2
    except study.StudyError as e:
        print(f"quality_report: error: {e}", file=sys.stderr)
        return 1
    for t in targets:
        print(f"quality_report: {t['status']}: {t['target']}: {t['measured']}")
    print(f"quality_report: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
