#!/usr/bin/env bash
# How the thread default degrades when another process holds a core: one small training step
# (`linformer bench --what model_train_step`), timed with the machine as it is and with a busy loop
# pinned to core 0, for --threads 1, the default thread count with the CLI's wait policy
# (GOMP_SPINCOUNT=1000, cli/main.cpp), and the default with passive waiting, the earlier
# GOMP_SPINCOUNT=10000 and libgomp's own 300 000. Prints one
# table row per (load, setting): the median of ROUNDS bench runs (each itself the median of 3 steps),
# the fastest and slowest, and the 1-minute load average when the row was measured. The machine's
# other load counts: run it on a quiet machine for figures to compare.
#
#   bash scripts/contention_probe.sh [--bin build/linformer] [--rounds 3] [--n 256] [--k 64]
#                                    [--d-model 128] [--layers 2] [--batch 4]
set -euo pipefail

BIN=build/linformer ROUNDS=3 N=256 K=64 D=128 LAYERS=2 BATCH=4
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) BIN=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --n) N=$2; shift ;;
    --k) K=$2; shift ;;
    --d-model) D=$2; shift ;;
    --layers) LAYERS=$2; shift ;;
    --batch) BATCH=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "contention_probe: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -x $BIN ]] || { echo "contention_probe: '$BIN' is not an executable: build it (bash scripts/build.sh) or pass --bin" >&2; exit 2; }
command -v taskset >/dev/null || { echo "contention_probe: needs taskset (util-linux)" >&2; exit 1; }

# The defaults under test: what a user without these variables gets.
unset OMP_WAIT_POLICY GOMP_SPINCOUNT LINFORMER_NUM_THREADS

TMP=$(mktemp -d)
BUSY=""
cleanup() {
  [[ -n $BUSY ]] && kill "$BUSY" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# The median step time (ms) of one bench run; extra arguments go before `bench` (env is the caller's).
step_ms() {
  "$BIN" "$@" bench --kinds linformer --what model_train_step --n "$N" --k "$K" --d-model "$D" --heads 4 \
    --layers "$LAYERS" --batch "$BATCH" --repeats 3 --warmup 1 --csv "$TMP/b.csv" >/dev/null 2>&1
  awk -F, '$3 == "model_train_step" { print $10 }' "$TMP/b.csv"
}

# median min max of the numbers on stdin
stats() { sort -g | awk '{ v[NR] = $1 } END { printf "%.1f %.1f %.1f\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

load1() { cut -d' ' -f1 /proc/loadavg; }

printf '%s cores; %s; step: linformer k=%s, n=%s, d=%s, %s layers, batch %s; %s rounds\n\n' \
  "$(nproc)" "$("$BIN" --version)" "$K" "$N" "$D" "$LAYERS" "$BATCH" "$ROUNDS"
printf '| other load | setting | median ms | min | max | load avg (1 min) |\n|---|---|---|---|---|---|\n'
for busy in none core0; do
  if [[ $busy == core0 ]]; then
    taskset -c 0 bash -c 'while :; do :; done' &
    BUSY=$!
    sleep 1
  fi
  for setting in "threads 1" "default threads, GOMP_SPINCOUNT=1000 (CLI default)" "default threads, passive" \
                 "default threads, GOMP_SPINCOUNT=10000" "default threads, GOMP_SPINCOUNT=300000"; do
    : > "$TMP/times"
    for ((r = 0; r < ROUNDS; ++r)); do
      case $setting in
        "threads 1") step_ms --threads 1 ;;
        *"(CLI default)") step_ms ;;
        *passive) OMP_WAIT_POLICY=passive step_ms ;;
        *10000) GOMP_SPINCOUNT=10000 step_ms ;;
        *300000) GOMP_SPINCOUNT=300000 step_ms ;;
      esac >> "$TMP/times"
    done
    read -r med lo hi < <(stats < "$TMP/times")
    label=$([[ $busy == core0 ]] && echo "busy loop on core 0" || echo "none added")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$setting" "$med" "$lo" "$hi" "$(load1)"
  done
  if [[ -n $BUSY ]]; then
    kill "$BUSY" 2>/dev/null || true
    wait "$BUSY" 2>/dev/null || true
    BUSY=""
  fi
done
