#!/bin/bash
# Before (d18272e, start of session) vs after (main), interleaved, two rounds, same machine.
set -e
ARGS="--kinds linformer,full,flash,local --what layer_forward,layer_forward_backward,model_train_step,model_inference --n 1024,4096 --k 256 --repeats 5 --warmup 1 --layers 2 --markdown /dev/null"
for round in 1 2; do
  "${BEFORE:-/tmp/oldsrc/build/linformer}" bench $ARGS --csv before_$round.csv >/dev/null 2>&1
  "${AFTER:-build/linformer}" bench $ARGS --csv after_$round.csv >/dev/null 2>&1
done
