#!/usr/bin/env bash
# The main job, for now: install, build, benchmark the attention layer (Linformer against full
# softmax attention), and list the attention kinds the build knows.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build

echo
echo "main_job: attention layer benchmark (d=512, h=8, batch 1; threads: ${LINFORMER_NUM_THREADS:-all cores})"
build/linformer_bench --benchmark_filter='Attention' --benchmark_counters_tabular=true

echo
echo "main_job: attention kinds"
build/linformer info --list-attention
