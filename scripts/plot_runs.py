#!/usr/bin/env python3
"""Draws training curves of linformer runs to one PNG: `linformer plot` runs it (CMake copies it
beside the binary), after checking every log; it can also be run by hand:

  python3 plot_runs.py --out FILE.png --metric loss --metric bits_per_byte LABEL=RUN/log.jsonl ...

One panel per metric, one series per run, x = the optimizer step. The metrics and where they come from
(src/train/trainer.cpp writes the records): loss, lr, grad_norm, tokens_per_s from the "train" records
(loss is the mean over the logging interval); valid_loss, bits_per_byte, accuracy from the "eval"
records (the held-out split). Any failure is one line on stderr and exit status 1.
"""
import argparse
import json
import os
import sys
import tempfile

# metric -> (record type, field, axis label)
METRICS = {
    "loss": ("train", "loss", "train loss (nats, interval mean)"),
    "lr": ("train", "lr", "learning rate"),
    "grad_norm": ("train", "grad_norm", "gradient norm (before clipping)"),
    "tokens_per_s": ("train", "tokens_per_s", "tokens / s"),
    "valid_loss": ("eval", "loss", "held-out loss (nats)"),
    "bits_per_byte": ("eval", "bits_per_byte", "held-out bits per byte"),
    "accuracy": ("eval", "accuracy", "held-out accuracy"),
}
# Told apart without colour too: each run has its own colour, line style and marker.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def series(path, metric):
    kind, field, _ = METRICS[metric]
    xs, ys = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if record.get("type") == kind and isinstance(record.get(field), (int, float)) and "step" in record:
                xs.append(record["step"])
                ys.append(record[field])
    return xs, ys


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--metric", action="append", choices=sorted(METRICS), required=True)
    parser.add_argument("runs", nargs="+", help="LABEL=PATH/log.jsonl")
    args = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        fail(f"matplotlib is not available to {sys.executable} ({e}): install Debian's python3-matplotlib "
             "(scripts/setup.sh does) or point LINFORMER_PYTHON at a python that has it")

    runs = [r.split("=", 1) if "=" in r else (os.path.basename(os.path.dirname(r)) or r, r) for r in args.runs]
    fig, axes = plt.subplots(len(args.metric), 1, figsize=(8, 3.2 * len(args.metric)), squeeze=False,
                             constrained_layout=True)
    for ax, metric in zip(axes[:, 0], args.metric):
        drawn = 0
        for i, (label, path) in enumerate(runs):
            xs, ys = series(path, metric)
            if not xs:
                continue
            ax.plot(xs, ys, color=COLOURS[i % len(COLOURS)], linestyle=STYLES[i // len(COLOURS) % len(STYLES)],
                    marker=MARKERS[i % len(MARKERS)], markersize=3 if len(xs) > 30 else 5,
                    markevery=max(1, len(xs) // 20), linewidth=1.5, label=label)
            drawn += 1
        ax.set_ylabel(METRICS[metric][2])
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if metric == "lr" or metric == "grad_norm":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if drawn:
            ax.legend(fontsize="small", loc="best")
        else:
            ax.text(0.5, 0.5, f"no run logged {metric}", ha="center", va="center", transform=ax.transAxes)
    # Written beside the target and renamed over it: a reader never sees half a PNG.
    out_dir = os.path.dirname(os.path.abspath(args.out))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".plot-", suffix=".png", dir=out_dir)
    except OSError as e:
        fail(f"cannot write '{args.out}': {e.strerror}")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.out)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        fail(f"cannot write '{args.out}': {e.strerror}")


if __name__ == "__main__":
    main()
