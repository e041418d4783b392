#!/usr/bin/env bash
# The quality cost of bf16 mixed precision (issue 15 item 4): the quality study's reference run
# (studies/fig3's n512_linformer_k128: 600 steps × 4096 tokens of GCIDE, 4 layers, d = 128) trained and
# evaluated at each precision with the same binary, seed and data; writes studies/precision/summary.md.
# Resumable: a run with its test evaluation already written is skipped, a killed one continues from
# its last checkpoint.   Usage: bash scripts/precision_quality.sh [PRECISION ...]   (default: fp32 bf16)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=build/linformer
config=studies/fig3/runs/n512_linformer_k128/train_config.json
out=studies/precision
precisions=("$@")
[ $# -eq 0 ] && precisions=(fp32 bf16)
[ -x "$bin" ] || { echo "precision_quality: build first (bash scripts/build.sh)" >&2; exit 1; }
cpu_name() {  # "AMD EPYC (family 25 model 17)"
  local field
  field() { grep -m1 "^$1\s*:" /proc/cpuinfo | cut -d: -f2 | xargs; }
  echo "$(field 'model name') (family $(field 'cpu family') model $(field model))"
}
for p in "${precisions[@]}"; do
  run="$out/n512_linformer_k128_$p"
  [ -f "$run/test_eval.json" ] && { echo "precision_quality: $run done"; continue; }
  resume=()
  [ -d "$run/checkpoints" ] && resume=(--resume)
  start=$(date +%s)
  "$bin" --threads 2 --precision "$p" train --config "$config" --out "$run" "${resume[@]}" > "$run.log" 2>&1 ||
    { mkdir -p "$run"; cat "$run.log" >&2; exit 1; }
  mv "$run.log" "$run/output.log"
  echo "{\"precision\": \"$p\", \"train_wall_s\": $(( $(date +%s) - start )), \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"cpu\": \"$(cpu_name)\"}" > "$run/machine.json"
  "$bin" --threads 2 --precision "$p" eval --checkpoint "$run" --split test --batches 50 --json > "$run/test_eval.json.tmp"
  mv "$run/test_eval.json.tmp" "$run/test_eval.json"
done
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for run in sorted(out.glob("n512_linformer_k128_*")):
    if not (run / "test_eval.json").exists():
        continue
    test = json.loads((run / "test_eval.json").read_text())
    machine = json.loads((run / "machine.json").read_text())
    valid = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"valid"' in l and '"eval"' in l]
    rows.append((machine["precision"], test["bits_per_byte"], valid[-1]["bits_per_byte"] if valid else float("nan"),
                 machine["train_wall_s"], machine["load_average"], machine["cpu"]))
lines = ["| precision | test bits/byte | last valid bits/byte | training wall s | load average |", "|---|---|---|---|---|"]
lines += [f"| {p} | {t:.4f} | {v:.4f} | {w} | {l} |" for p, t, v, w, l, _ in rows]
ref = {r[0]: r[1] for r in rows}
curves = {}
for run in sorted(out.glob("n512_linformer_k128_*")):
    if (run / "machine.json").exists():
        evals = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"type":"eval"' in l]
        curves[json.loads((run / "machine.json").read_text())["precision"]] = {e["step"]: e["bits_per_byte"] for e in evals}
if "fp32" in curves and "bf16" in curves:
    steps = sorted(set(curves["fp32"]) & set(curves["bf16"]))
    lines.append("\n| step | fp32 valid bits/byte | bf16 valid bits/byte | bf16 − fp32 |\n|---|---|---|---|")
    lines += [f"| {s} | {curves['fp32'][s]:.4f} | {curves['bf16'][s]:.4f} | {(curves['bf16'][s] / curves['fp32'][s] - 1) * 100:+.2f} % |"
              for s in steps]
if "fp32" in ref and "bf16" in ref:
    gap = (ref["bf16"] - ref["fp32"]) / ref["fp32"] * 100
    lines.append(f"\nbf16 against fp32 on the test split: {gap:+.2f} % (target: within 1 %: {'met' if abs(gap) <= 1 else 'not met'}).")
if rows:
    lines.append(f"\nCPU: {rows[0][5]}; 2 threads; the same binary, seed and data for every precision.")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
