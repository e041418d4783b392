#!/usr/bin/env bash
# The probes behind the long-sequence recipe (docs/long_sequences.md): short byte-level MLM runs on
# GCIDE at n = 512, each changing one thing, all with the same tokens (300 steps of 8 × 512 bytes) and
# the same evaluation (10 validation batches, 15 % of the bytes masked per position whatever the
# training masking: a probe trained at another --mask-prob is evaluated again at 0.15). Resumable: a probe whose run directory holds a final
# summary is skipped. Writes one CSV row per probe.
# Usage: scripts/recipe_probes.sh [OUT_DIR (default runs/recipe-probes)] [CSV (default docs/data/recipe_probes.csv)]
# Environment: LINFORMER (default build/linformer), LINFORMER_NUM_THREADS (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-runs/recipe-probes}
CSV=${2:-docs/data/recipe_probes.csv}
BIN=${LINFORMER:-build/linformer}
export LINFORMER_NUM_THREADS=${LINFORMER_NUM_THREADS:-2}
mkdir -p "$OUT" "$(dirname "$CSV")"

BASE=(--data /usr/share/dictd/gcide.dict.dz --task mlm --d-model 128 --layers 4 --heads 4 --d-ff 512 --dropout 0
      --seq-len 512 --eval-every 100 --eval-batches 10 --log-every 50 --save-every 0)
LIN="--attention linformer --attention-options '{\"k\": 128}'"
FLASH="--attention flash"
NEW="--scale-tied-output --position sinusoidal"
# name | steps | batch | lr | flags (one line per probe)
PROBES=(
  "A_base|300|8|2e-3|$LIN"
  "B_scale|300|8|2e-3|$LIN --scale-tied-output"
  "C_scale_sin|300|8|2e-3|$LIN $NEW"
  "D_scale_sin_conv5|300|8|2e-3|$LIN $NEW --conv-kernel 5"
  "E_scale_learned_conv5|300|8|2e-3|$LIN --scale-tied-output --conv-kernel 5"
  "F_flash_scale_sin_conv5|300|8|2e-3|$FLASH $NEW --conv-kernel 5"
  "G_flash_scale_sin|300|8|2e-3|$FLASH $NEW"
  "H_lr4e-3|300|8|4e-3|$LIN $NEW --conv-kernel 5"
  "I_conv9|300|8|2e-3|$LIN $NEW --conv-kernel 9"
  "J_conv3|300|8|2e-3|$LIN $NEW --conv-kernel 3"
  "K_lr1e-3|300|8|1e-3|$LIN $NEW --conv-kernel 5"
  "L_b16_150|150|16|2e-3|$LIN $NEW --conv-kernel 5"
  "M_noscale|300|8|2e-3|$LIN --position sinusoidal --conv-kernel 5"
  "N_lr8e-3|300|8|8e-3|$LIN $NEW --conv-kernel 5"
  "O_mask25|300|8|4e-3|$LIN $NEW --conv-kernel 5 --mask-prob 0.25"
  "P_mask40|300|8|4e-3|$LIN $NEW --conv-kernel 5 --mask-prob 0.4"
  "Q_span3|300|8|4e-3|$LIN $NEW --conv-kernel 5 --mask-span 3"
)

echo "name,steps,batch,seq_len,lr,flags,train_loss_step50,valid_bits_per_byte,valid_accuracy,tokens_per_s,elapsed_s" > "$CSV"
# The probes were run when train's defaults were learned positions, no convolution and no output
# scaling: a probe that leaves one of them out gets that old default, so each keeps its meaning.
with_probe_defaults() {
  local f="$1"
  [[ $f == *--position* ]] || f+=" --position learned"
  [[ $f == *--conv-kernel* ]] || f+=" --conv-kernel 0"
  [[ $f == *scale-tied-output* ]] || f+=" --no-scale-tied-output"
  echo "$f"
}

for p in "${PROBES[@]}"; do
  IFS='|' read -r name steps batch lr flags <<< "$p"
  dir="$OUT/$name"
  run_flags=$(with_probe_defaults "$flags")
  if ! grep -q '"type":"summary"' "$dir/log.jsonl" 2>/dev/null; then
    rm -rf "$dir"
    echo "recipe_probes: $name"
    eval "\"$BIN\" train ${BASE[*]@Q} --out \"$dir\" --steps $steps --batch-size $batch --lr $lr --warmup $((steps / 6)) $run_flags" \
      > "$OUT/$name.log" 2>&1
  fi
  eval_json=""
  if [[ $flags == *--mask-prob* ]]; then
    eval_json=$("$BIN" eval --checkpoint "$dir" --split valid --batches 10 --mask-prob 0.15 --json | tail -1)
  fi
  python3 - "$dir/log.jsonl" "$name" "$steps" "$batch" "$lr" "$flags" "$eval_json" >> "$CSV" <<'PY'
import json, sys
path, name, steps, batch, lr, flags, eval_json = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
first = next(r["loss"] for r in rows if r.get("type") == "train" and r["step"] == 50)
ev = json.loads(eval_json) if eval_json else [r for r in rows if r.get("type") == "eval"][-1]
s = next(r for r in rows if r.get("type") == "summary")
flags = flags.replace('"', '""')
print(f'{name},{steps},{batch},512,{lr},"{flags}",{first:.3f},{ev["bits_per_byte"]:.4f},{ev["accuracy"]:.4f},{s["tokens_per_s"]:.0f},{s["elapsed_s"]:.0f}')
PY
done
echo "recipe_probes: wrote $CSV"
