#!/usr/bin/env python3
"""The plots of `linformer spectrum` (the Linformer paper's Fig. 1 and the approximation errors),
drawn from the CSVs that command writes into DIR:

  python3 scripts/plot_spectrum.py DIR [--heatmap-k K]

writes into DIR
  cumulative.png  the normalised cumulative singular values of P against their index, one curve per
                  layer (mean over sequences and heads, the band from min to max): Fig. 1 left;
  heatmap.png     that value at index k per layer × head (mean over sequences): Fig. 1 right; k is
                  --heatmap-k, else the heatmap_k of spectrum.json;
  errors.png      against k, per layer: the relative error of the best rank-k approximation of P, and
                  of Linformer's output with Theorem 2's fixed projections against the exact output.

`linformer spectrum` runs this itself when it finds a python3 with matplotlib ($LINFORMER_PYTHON,
the repository's .venv-bench, or python3 on the PATH). Standard library + matplotlib (Agg) only.
"""
import argparse
import csv
import json
import os
import sys


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the --out directory of `linformer spectrum`")
    ap.add_argument("--heatmap-k", type=int, default=None, help="k of the heatmap (one of the CSV's k)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(args.dir, "spectrum.json")) as f:
        meta = json.load(f)
    n, layers, heads = meta["n"], meta["layers"], meta["heads"]
    title = f"{meta.get('checkpoint', '')}: n = {n}, {meta['sequences']} sequences ({meta.get('split', '')})"

    # Fig. 1 left: cumulative curves per layer.
    cum = read_csv(os.path.join(args.dir, "cumulative.csv"))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cmap = plt.get_cmap("viridis")
    for layer in range(layers):
        rows = [r for r in cum if int(r["layer"]) == layer]
        idx = [int(r["index"]) for r in rows]
        color = cmap(layer / max(1, layers - 1))
        ax.plot(idx, [float(r["mean"]) for r in rows], color=color, label=f"layer {layer}")
        ax.fill_between(idx, [float(r["min"]) for r in rows], [float(r["max"]) for r in rows], color=color, alpha=0.15)
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("normalised cumulative singular value c_i")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "cumulative.png"), dpi=120)
    plt.close(fig)

    # Fig. 1 right: the heatmap at k.
    heat = read_csv(os.path.join(args.dir, "heatmap.csv"))
    ks = sorted({int(r["k"]) for r in heat})
    k = args.heatmap_k if args.heatmap_k is not None else int(meta.get("heatmap_k", ks[len(ks) // 2]))
    if k not in ks:
        sys.exit(f"plot_spectrum: --heatmap-k {k} is not among the heatmap's k: {ks}")
    grid = [[0.0] * heads for _ in range(layers)]
    for r in heat:
        if int(r["k"]) == k:
            grid[int(r["layer"])][int(r["head"])] = float(r["mean"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * heads, 1.2 + 0.6 * layers))
    im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    for layer in range(layers):
        for head in range(heads):
            ax.text(head, layer, f"{grid[layer][head]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(heads))
    ax.set_yticks(range(layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"cumulative singular value at index {k} of {n}", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "heatmap.png"), dpi=120)
    plt.close(fig)

    # The errors against k.
    err = read_csv(os.path.join(args.dir, "errors.csv"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for layer in range(layers):
        rows = [r for r in err if int(r["layer"]) == layer]
        kk = [int(r["k"]) for r in rows]
        color = cmap(layer / max(1, layers - 1))
        # The best rank-n error is exactly 0: a log axis shows the k < n points.
        pts = [(x, float(r["rank_k_mean"])) for x, r in zip(kk, rows) if float(r["rank_k_mean"]) > 0]
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"layer {layer}")
        axes[1].plot(kk, [float(r["linformer_mean"]) for r in rows], "o-", color=color, label=f"layer {layer}")
    axes[0].set_title("best rank-k approximation of P: ‖P − P_k‖_F / ‖P‖_F", fontsize=9)
    axes[1].set_title(f"Linformer, fixed E = δR, F = e^(−δ)R (δ = {meta['delta']}): ‖Ō − PV‖_F / ‖PV‖_F", fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("relative error (mean over sequences and heads)")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "errors.png"), dpi=120)
    plt.close(fig)
    print(f"plot_spectrum: wrote cumulative.png, heatmap.png, errors.png in {args.dir}")


if __name__ == "__main__":
    main()
