#!/usr/bin/env bash
# The main job: install what is needed, build Release, train a Linformer masked LM on the GCIDE
# dictionary (Debian's dict-gcide) at n = 512 bytes for under ten minutes on two cores, report the
# held-out bits per byte against the text's unigram entropy, fill the masked characters of a sample
# sentence, and measure what exact attention (flash) costs against Linformer at the same n.
# Environment: LINFORMER_NUM_THREADS (default 2), STEPS (default 1500), RUN (default runs/gcide-mlm).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build

export LINFORMER_NUM_THREADS="${LINFORMER_NUM_THREADS:-2}"
RUN="${RUN:-runs/gcide-mlm}"
STEPS="${STEPS:-1500}"
rm -rf "$RUN"

# The recipe that makes long byte sequences learn (docs/quality.md): a depthwise convolution of 5
# taps before each attention, sinusoidal positions, the tied output scaled by d^-1/2, and 10 % of the
# training crops cut short (so that a short text to fill is not the first short input the model sees).
echo
echo "main_job: training a Linformer masked LM (n = 512, k = 128) on /usr/share/dictd/gcide.dict.dz ($STEPS steps)"
build/linformer train \
  --data /usr/share/dictd/gcide.dict.dz \
  --out "$RUN" \
  --task mlm --d-model 128 --layers 4 --heads 4 --d-ff 512 --seq-len 512 \
  --attention linformer --attention-options '{"k": 128, "sharing": "headwise"}' \
  --position sinusoidal --conv-kernel 5 --scale-tied-output \
  --batch-size 8 --steps "$STEPS" --warmup $((STEPS / 6)) --lr 4e-3 --dropout 0 --short-seq-prob 0.1 \
  --eval-every 250 --eval-batches 10 --save-every 250 --log-every 50

echo
echo "main_job: held-out test split"
build/linformer eval --checkpoint "$RUN" --split test --batches 40

echo
sentence="The q_ick br_wn fox jumps ov_r the l_zy dog; a diction_ry defin_s w_rds."
echo "main_job: filling the masks of: $sentence"
build/linformer predict --checkpoint "$RUN" --text "$sentence"

echo
echo "main_job: one training step of this model's size with Linformer (k = 128) and with exact attention (flash):"
echo "main_job: at the trained n = 512 (batch 8), and at n = 4096 (batch 1), where the difference grows"
for shape in "512 8" "4096 1"; do
  set -- $shape
  build/linformer bench --kinds linformer,flash --what model_train_step --n "$1" --k 128 \
    --d-model 128 --heads 4 --layers 4 --batch "$2" --repeats 3 --csv ''
done
echo
echo "main_job: the run's log is $RUN/log.jsonl; its checkpoints are under $RUN/checkpoints/"
