#!/bin/bash
# Issue 14, final tree: before (main a406bae, kinds calling cpu/ kernels) vs after (main at the end of
# issue 14: ops layer, Buffer<T> activations, op profiler hooks; every op through
# src/ops/), interleaved, two rounds, one machine. BEFORE and AFTER are the two `linformer` binaries.
set -e
LAYERS="--kinds linformer,full,flash,local,bigbird,reformer,sinkhorn,performer,aft_conv,mixer --what layer_forward,layer_forward_backward --n 1024,4096 --k 256 --repeats 5 --warmup 1 --markdown /dev/null"
MODEL="--kinds linformer,full --what model_train_step,model_inference --n 1024,4096 --k 256 --layers 2 --repeats 5 --warmup 1 --markdown /dev/null"
for round in ${ROUNDS:-1 2}; do
  for side in before after; do
    bin=$([ $side = before ] && echo "$BEFORE" || echo "$AFTER")
    "$bin" bench $LAYERS --csv ${side}_layers_$round.csv >/dev/null 2>&1
    "$bin" bench $MODEL --csv ${side}_model_$round.csv >/dev/null 2>&1
  done
done
