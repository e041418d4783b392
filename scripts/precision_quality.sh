#!/usr/bin/env bash
# The quality cost of the reduced precisions (issue 15 items 4 and 5) on the quality study's reference
# run (studies/fig3's n512_linformer_k128: 600 steps × 4096 tokens of GCIDE, 4 layers, d = 128):
#   fp32, bf16  trained and evaluated at that precision with the same binary, seed and data;
#   int8        inference-only: the fp32 reference run's checkpoint evaluated in int8 and, with the same
#               binary in the same call, in fp32 (the cost is the difference between the two).
# Writes studies/precision/summary.md. Resumable: a precision with its test evaluation already written
# is skipped, a killed training continues from its last checkpoint.
# Usage: bash scripts/precision_quality.sh [PRECISION ...]   (default: fp32 bf16 int8)
# Environment: PRECISION_QUALITY_REFERENCE, the fp32 reference run that int8 evaluates (default
# studies/fig3/runs/n512_linformer_k128, ignored by git: scripts/study.py makes it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=build/linformer
config=studies/fig3/runs/n512_linformer_k128/train_config.json
reference=${PRECISION_QUALITY_REFERENCE:-studies/fig3/runs/n512_linformer_k128}
out=studies/precision
precisions=("$@")
[ $# -eq 0 ] && precisions=(fp32 bf16 int8)
[ -x "$bin" ] || { echo "precision_quality: build first (bash scripts/build.sh)" >&2; exit 1; }
cpu_name() {  # "AMD EPYC (family 25 model 17)"
  local field
  field() { grep -m1 "^$1\s*:" /proc/cpuinfo | cut -d: -f2 | xargs; }
  echo "$(field 'model name') (family $(field 'cpu family') model $(field model))"
}
# int8 has no training: it evaluates the fp32 reference run's last checkpoint, in int8 and in fp32.
evaluate_reference() {
  local p=$1 run="$out/n512_linformer_k128_$1" checkpoint start
  if [ ! -f "$reference/checkpoints/latest" ]; then
    cat >&2 <<EOF_MISSING
precision_quality: $p is evaluated on the fp32 reference run's checkpoint, and $reference/checkpoints
holds none. It is the fp32 run of the quality study (ignored by git); make it with
  python3 scripts/study.py run --grid fig3 --dir studies/fig3 --only n512_linformer_k128 --threads 2
(about 25 minutes on 2 cores), or point PRECISION_QUALITY_REFERENCE at a copy of that run.
EOF_MISSING
    exit 1
  fi
  checkpoint="$reference/checkpoints/$(cat "$reference/checkpoints/latest")"
  mkdir -p "$run"
  start=$(date +%s)
  "$bin" --threads 2 --precision "$p" eval --checkpoint "$checkpoint" --split test --batches 50 --json > "$run/test_eval.json.tmp"
  local eval_s=$(( $(date +%s) - start ))
  "$bin" --threads 2 --precision fp32 eval --checkpoint "$checkpoint" --split test --batches 50 --json > "$run/test_eval_fp32.json"
  echo "{\"precision\": \"$p\", \"inference_only\": true, \"checkpoint\": \"$(basename "$checkpoint")\", \"eval_wall_s\": $eval_s, \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"cpu\": \"$(cpu_name)\"}" > "$run/machine.json"
  mv "$run/test_eval.json.tmp" "$run/test_eval.json"
}
for p in "${precisions[@]}"; do
  run="$out/n512_linformer_k128_$p"
  [ -f "$run/test_eval.json" ] && { echo "precision_quality: $run done"; continue; }
  if [ "$p" = int8 ]; then
    evaluate_reference "$p"
    continue
  fi
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
    if machine.get("inference_only"):  # evaluated on the fp32 run's checkpoint: no training of its own
        rows.append((machine["precision"], test["bits_per_byte"], None, None, machine["load_average"], machine["cpu"],
                     (json.loads((run / "test_eval_fp32.json").read_text()), test)))
        continue
    valid = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"valid"' in l and '"eval"' in l]
    rows.append((machine["precision"], test["bits_per_byte"], valid[-1]["bits_per_byte"] if valid else float("nan"),
                 machine["train_wall_s"], machine["load_average"], machine["cpu"], None))
order = {"fp32": 0, "bf16": 1, "int8": 2}
rows.sort(key=lambda r: order.get(r[0], 9))
lines = ["| precision | test bits/byte | last valid bits/byte | training wall s | load average |", "|---|---|---|---|---|"]
for p, t, v, w, l, _, _ in rows:
    if v is None:
        lines.append(f"| {p} (inference only: the fp32 run's checkpoint) | {t:.4f} | – | – | {l} |")
    else:
        lines.append(f"| {p} | {t:.4f} | {v:.4f} | {w} | {l} |")
ref = {r[0]: r[1] for r in rows}
curves = {}
for run in sorted(out.glob("n512_linformer_k128_*")):
    if (run / "machine.json").exists() and (run / "log.jsonl").exists():
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
for p, t, v, w, l, _, evals in rows:
    if v is None:
        fp32, low = evals
        gap = (low["bits_per_byte"] - fp32["bits_per_byte"]) / fp32["bits_per_byte"] * 100
        lines.append(f"\n{p} against fp32 on the test split, the same checkpoint evaluated by the same binary in the same "
                     f"run: {low['bits_per_byte']:.5f} against {fp32['bits_per_byte']:.5f} bits/byte ({gap:+.3f} %), "
                     f"masked-byte accuracy {low['accuracy']:.4f} against {fp32['accuracy']:.4f} ({low['count']} bytes). "
                     f"Only the linear layers are quantised (dynamic: s8 weights per output channel, u8 inputs per "
                     f"call); the model was trained in fp32.")
if rows:
    lines.append(f"\nCPU: {rows[0][5]}; 2 threads; the same binary, seed and data for every precision.")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
