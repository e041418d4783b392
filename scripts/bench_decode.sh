#!/usr/bin/env bash
# Generation speed against PyTorch (issue 17 item 5), interleaved in one run: for each round and each
# context t, our decode benchmark (linformer_bench's BM_Decode at that t: every causal kind,
# bench/bench_decode.cpp) and then the PyTorch peer at the same t (scripts/peer_decode.py: a plain
# KV-cache layer, its SDPA variant, lucidrains' LocalMHA with its cache), back to back, so both see the
# same machine. Then scripts/decode_table.py writes every measurement and the table of medians.
#
# Usage: bash scripts/bench_decode.sh [--t LIST] [--rounds R] [--out-dir DIR] [--build-dir DIR]
#            [--skip-build] [--smoke]
#   --t LIST        contexts (default 1024,2048,4096,8192,16384)
#   --rounds R      interleaved rounds; the table takes the median (default 3)
#   --out-dir DIR   where decode.csv, decode.md and the raw files go (default bench/results/<cpu>/decode)
#   --smoke         a pipeline check: t = 256,512, one round, under <build-dir>/bench-decode-smoke
#                   (timings meaningless, never for the docs)
#   --skip-build    use the existing <build-dir>/linformer_bench
# Environment:
#   LINFORMER_NUM_THREADS  threads for both sides (default 2)
#   PEER_PYTHON            the peer's python, with the pins of scripts/requirements-peer.txt (default
#                          .venv-peer/bin/python, else /work/.venv-peer/bin/python)
# The decode.md table goes into docs/benchmarks.md's "Generation" section (bench/notes.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bench_decode: $*"; }
die() { echo "bench_decode: error: $*" >&2; exit 2; }

TS=1024,2048,4096,8192,16384 ROUNDS=3 OUT_DIR="" BUILD_DIR=build SKIP_BUILD=0 SMOKE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --t) TS=${2:?--t needs a list}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
    --out-dir) OUT_DIR=${2:?--out-dir needs a folder}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a folder}; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --smoke) SMOKE=1 TS=256,512 ROUNDS=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got '$ROUNDS'"
[[ $TS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--t must be a comma list of positive integers, got '$TS'"
if [[ -z $OUT_DIR ]]; then
  if [[ $SMOKE -eq 1 ]]; then OUT_DIR=$BUILD_DIR/bench-decode-smoke; else OUT_DIR=bench/results/$(python3 scripts/machine.py)/decode; fi
fi
export LINFORMER_NUM_THREADS=${LINFORMER_NUM_THREADS:-2}
# The CLI sets this by re-executing itself (bench/notes.md: a long spin holds a core that the thread it
# waits for needs); a decode step is many small threaded regions.
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}

PEER=${PEER_PYTHON:-}
if [[ -z $PEER ]]; then
  for p in .venv-peer/bin/python /work/.venv-peer/bin/python; do [[ -x $p ]] && { PEER=$p; break; }; done
fi
[[ -n $PEER ]] && "$PEER" -c 'import torch, local_attention' 2>/dev/null ||
  die "no peer python with torch and local-attention: python3 -m venv .venv-peer && .venv-peer/bin/pip install -r scripts/requirements-peer.txt (or set PEER_PYTHON)"

if [[ $SKIP_BUILD -eq 0 ]]; then
  [[ -f $BUILD_DIR/CMakeCache.txt ]] || cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target linformer_bench
fi
BENCH=$BUILD_DIR/linformer_bench
[[ -x $BENCH ]] || die "$BENCH not found (build it, or drop --skip-build)"

RAW=$BUILD_DIR/bench-decode-raw  # the per-call files; decode.csv holds every row of them
rm -rf "$RAW"
mkdir -p "$RAW" "$OUT_DIR"
# Before machine.txt is truncated: rewriting a committed one would itself count as a change.
GIT_DESC="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpu: $(python3 scripts/machine.py describe)"
  echo "git: $GIT_DESC"
  echo "threads: $LINFORMER_NUM_THREADS (LINFORMER_NUM_THREADS for ours, --threads for PyTorch); GOMP_SPINCOUNT=$GOMP_SPINCOUNT"
  echo "load average at start: $(cut -d' ' -f1 /proc/loadavg)"
  echo "peer: $("$PEER" -c 'import sys, torch, importlib.metadata as m; print("Python", sys.version.split()[0] + ", torch", torch.__version__ + ", local-attention", m.version("local-attention"))' 2>/dev/null)"
  echo "command: bash scripts/bench_decode.sh --t $TS --rounds $ROUNDS"
} >"$OUT_DIR/machine.txt"
cat "$OUT_DIR/machine.txt"

IFS=, read -r -a T_LIST <<<"$TS"
for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${T_LIST[@]}"; do
    say "round $round, t = $t: ours"
    LINFORMER_DECODE_CONTEXTS=$t "$BENCH" --benchmark_filter="^BM_Decode/.*/t:$t/" \
      --benchmark_out="$RAW/ours_r${round}_t$t.json" --benchmark_out_format=json
    say "round $round, t = $t: PyTorch"
    "$PEER" scripts/peer_decode.py --out "$RAW/peer.csv" --t "$t" --round "$round" --threads "$LINFORMER_NUM_THREADS"
  done
done
python3 scripts/decode_table.py --ours "$RAW" --peer "$RAW/peer.csv" --csv "$OUT_DIR/decode.csv" --md "$OUT_DIR/decode.md"
cat "$OUT_DIR/decode.md"
