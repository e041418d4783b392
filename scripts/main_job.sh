#!/usr/bin/env bash
# The main job: install what is needed, build Release, train a small Linformer masked-LM on the GCIDE
# dictionary (Debian's dict-gcide) for about five minutes on two cores, report the held-out bits per
# byte against the text's unigram entropy, and fill the masked characters of a sample sentence.
# Environment: LINFORMER_NUM_THREADS (default 2), STEPS (default 1500), RUN (default runs/gcide-mlm).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build

export LINFORMER_NUM_THREADS="${LINFORMER_NUM_THREADS:-2}"
RUN="${RUN:-runs/gcide-mlm}"
STEPS="${STEPS:-1500}"
rm -rf "$RUN"

echo
echo "main_job: training a Linformer masked LM on /usr/share/dictd/gcide.dict.dz ($STEPS steps)"
build/linformer train \
  --data /usr/share/dictd/gcide.dict.dz \
  --out "$RUN" \
  --task mlm --d-model 128 --layers 4 --heads 4 --d-ff 512 --seq-len 32 \
  --attention linformer --attention-options '{"k": 16, "sharing": "headwise"}' \
  --batch-size 128 --steps "$STEPS" --warmup 50 --lr 2e-3 --dropout 0 \
  --eval-every 250 --eval-batches 20 --save-every 250 --log-every 50

echo
echo "main_job: held-out test split"
build/linformer eval --checkpoint "$RUN" --split test --batches 40

echo
sentence="The q_ick br_wn fox jumps ov_r the l_zy dog; a diction_ry defin_s w_rds."
echo "main_job: filling the masks of: $sentence"
build/linformer predict --checkpoint "$RUN" --text "$sentence"
echo
echo "main_job: the run's log is $RUN/log.jsonl; its checkpoints are under $RUN/checkpoints/"
