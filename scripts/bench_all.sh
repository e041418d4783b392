#!/usr/bin/env bash
# The benchmark against PyTorch in one command (issues 4 and 15): builds the CLI, measures this
# machine's CPU into its own folder bench/results/<cpu>/ (scripts/machine.py names it), and
# regenerates docs/benchmarks.md with one section per CPU folder found (scripts/bench_report.py):
# this CPU's from the new measurements, every other CPU's from its committed CSVs, unchanged. No
# table or plot mixes CPUs.
#
# Usage: bash scripts/bench_all.sh [--targets | --full] [--quick] [--steps LIST] [--skip-build]
#            [--report-only] [--out-doc PATH] [--img-dir DIR] [--results DIR] [--build-dir DIR]
#   --targets       (the default) what issue 15's target table needs: about 12 min of measuring on
#                   2 cores (estimated from the Zen 4 CSVs: ours 1.5, peer 0.5, precision 5.5, flash
#                   1.5, gemm 2.5), plus the builds (on a fresh machine ~15 min more: the CLI, the
#                   three GEMM backends, MKL's download):
#                     ours, peer   the Linformer layer at n = 4096, k = 256 and flash at n = 4096, 16384
#                                  (forward, forward+backward; ours and PyTorch) -> <cpu>/targets/
#                     precision    the 6-layer model's training step and inference, ours against PyTorch
#                                  in fp32 and, where this CPU has them, bf16 (autocast) and int8,
#                                  interleaved (scripts/precision_bench.py) -> <cpu>/precision.csv
#                     flash        flash against SDPA at n = 1024, 4096, interleaved
#                                  (scripts/flash_vs_sdpa.py) -> <cpu>/flash_vs_sdpa.csv
#                     gemm         every GEMM backend at every model shape and sgemm 2048³
#                                  (scripts/gemm_backends.sh) -> <cpu>/gemm_backends.csv
#   --full          the same, but ours/peer measure issue 4's whole grid instead (every kind,
#                   n = 512..65536, k = 128..2048, and the model of linformer, flash and full at
#                   n = 4096) -> <cpu>/full/. Hours (the peer's long-n rows dominate).
#   --quick         a pipeline check in a few minutes: one round and one timed run per step, fewer n,
#                   the GEMM of oneDNN only; writes under <build-dir>/bench-quick/ (ignored by git)
#                   unless --results / --out-doc say otherwise, so it never touches docs/benchmarks.md.
#   --steps LIST    run only these steps (comma list of ours, peer, precision, flash, gemm); the other
#                   files of this CPU stay as they are (e.g. --steps precision after a change to bf16)
#   --report-only   measure nothing: the whole report again from every CPU folder's committed files
#                   (e.g. after editing bench/notes.md)
#   --skip-build    use the existing <build-dir>/linformer
#   --out-doc PATH  the report (default docs/benchmarks.md; quick: <build-dir>/bench-quick/benchmarks.md)
#   --img-dir DIR   the plots, one folder per CPU under it (default: img/bench beside the report)
#   --results DIR   the CPU folders (default bench/results)
#   --build-dir DIR the CMake build folder (default build)
# A step that fails is reported and the others still run; the report then says "not measured" for
# what it would have measured, and the script exits non-zero.
# Environment:
#   LINFORMER_NUM_THREADS  threads for both sides (default 2)
#   PEER_PYTHON            the python that runs the peer (needs torch and linformer); default: the
#                          venv below if it has the pinned torch/linformer, else /opt/golden-venv
#                          if it has them, else they are installed into the venv
#   BENCH_VENV             the venv of the report (matplotlib, numpy) (default .venv-bench)
#   TORCH_INDEX_URL        extra pip index for a CPU-only torch (default PyTorch's CPU wheel index)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bench_all: $*"; }
die() { echo "bench_all: error: $*" >&2; exit 1; }

MODE=targets QUICK=0 SKIP_BUILD=0 REPORT_ONLY=0 STEP_LIST=""
OUT_DOC="" IMG_DIR="" RESULTS="" BUILD_DIR=build
ALL_STEPS=(ours peer precision flash gemm)
ARGS=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --targets) MODE=targets ;;
    --full) MODE=full ;;
    --quick) QUICK=1 ;;
    --steps) STEP_LIST=${2:?--steps needs a list}; shift ;;
    --out-doc) OUT_DOC=${2:?--out-doc needs a path}; shift ;;
    --img-dir) IMG_DIR=${2:?--img-dir needs a folder}; shift ;;
    --results) RESULTS=${2:?--results needs a folder}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a folder}; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --report-only) REPORT_ONLY=1 SKIP_BUILD=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

if [[ $REPORT_ONLY -eq 1 ]]; then
  STEPS=()
elif [[ -n $STEP_LIST ]]; then
  IFS=, read -r -a STEPS <<<"$STEP_LIST"
  for s in "${STEPS[@]}"; do
    [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || die "unknown step '$s' (choose from ${ALL_STEPS[*]})"
  done
else
  STEPS=("${ALL_STEPS[@]}")
fi
wants() { [[ " ${STEPS[*]:-} " == *" $1 "* ]]; }

THREADS=${LINFORMER_NUM_THREADS:-2}
export LINFORMER_NUM_THREADS=$THREADS
VENV=${BENCH_VENV:-.venv-bench}
REQ=scripts/requirements-bench.txt
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
BIN=$BUILD_DIR/linformer

if [[ $QUICK -eq 1 ]]; then
  : "${RESULTS:=$BUILD_DIR/bench-quick}" "${OUT_DOC:=$BUILD_DIR/bench-quick/benchmarks.md}"
else
  : "${RESULTS:=bench/results}" "${OUT_DOC:=docs/benchmarks.md}"
fi
: "${IMG_DIR:=$(dirname "$OUT_DOC")/img/bench}"
CPU_DIR=$RESULTS/$(python3 scripts/machine.py)  # this CPU's folder
RUN_DIR=$CPU_DIR/$MODE                           # this mode's layer (and model) measurements

# The sizes. The targets are at n = 4096, k = 256 in every mode, so that quick runs compute them too.
T_N=4096 T_K=256
# Five interleaved rounds of the model: its targets are ratios near their thresholds, and single
# rounds on a 2-core machine spread by 10-15 %.
REPEATS=3 WARMUP=1 ROUNDS=5 FLASH_ROUNDS=5 FLASH_NS=1024,4096 GEMM_ENV=()
if [[ $MODE == full ]]; then
  NS=512,1024,2048,4096,8192,16384,32768,65536 KS=128,256,512,1024,2048 MODEL_KINDS=linformer,flash,full
  PEER_KINDS=linformer,full,sdpa
else
  # flash at 16384 too: its memory must grow linearly in n.
  NS=$T_N,16384 KS=$T_K LAYER_KINDS=linformer,flash PEER_NS=$T_N PEER_KINDS=linformer,sdpa
fi
if [[ $QUICK -eq 1 ]]; then
  REPEATS=1 ROUNDS=1 FLASH_ROUNDS=1 FLASH_NS=$T_N GEMM_ENV=(BACKENDS=dnnl ROUNDS=1 MIN_TIME=0.05)
  if [[ $MODE == full ]]; then NS=512,1024,2048,4096 KS=128,256 MODEL_KINDS=linformer; else NS=$T_N,8192; fi
fi
mkdir -p "$CPU_DIR"

say "mode=$MODE quick=$QUICK steps=${STEPS[*]:-none} threads=$THREADS cpu=$CPU_DIR report=$OUT_DOC plots=$IMG_DIR"

# Runs a command after printing it.
run() {
  say "\$ $*"
  "$@"
}
# record FILE COMMAND...: runs the command like run() and appends it to FILE, whose lines go into the
# report's command block. `env VAR=value` in front of a command shows there as it ran.
record() {
  local file=$1
  shift
  printf '%s\n' "$*" >> "$file"
  run "$@"
}
FAILED=()
# step NAME COMMAND...: runs one step in a subshell that stops at its first error (set -e would be
# ignored inside an `if`); a failure is reported and the other steps go on.
step() {
  local name=$1 rc
  shift
  say "--- step $name"
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  if [[ $rc -ne 0 ]]; then
    FAILED+=("$name")
    say "WARNING: step $name failed (exit $rc); the report will say 'not measured' for what it measures"
  fi
}

# --- 1. Is the machine idle? -------------------------------------------------------------------
LOAD=$(cut -d' ' -f1 /proc/loadavg)
if [[ ${#STEPS[@]} -eq 0 ]]; then
  :  # nothing measured: the load does not matter
elif awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
  say "WARNING: 1-minute load average is $LOAD (> 0.5): another process is running; on $(nproc) cores" \
      "the timings will not be comparable. Stop it and run again for numbers worth publishing."
else
  say "load average $LOAD: idle enough"
fi

# --- 2. Build ----------------------------------------------------------------------------------
if [[ $SKIP_BUILD -eq 0 ]]; then
  run bash scripts/build.sh "$BUILD_DIR"
fi
[[ ${#STEPS[@]} -eq 0 || -x $BIN ]] || die "$BIN not found (build it, or drop --skip-build)"

# --- 3. Python environments --------------------------------------------------------------------
# Exits 0 when the given python has torch and linformer at the versions pinned in $REQ.
has_peer_deps() {
  "$1" - "$REQ" <<'EOF' 2>/dev/null
import sys
import importlib.metadata as md
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pins[name.strip().lower()] = version.strip()
for name in ("torch", "linformer"):
    have = md.version(name).split("+")[0]  # 2.15.0+cpu counts as 2.15.0
    if name in pins and have != pins[name]:
        sys.exit(1)
import torch, linformer  # noqa: E401,F401  (importable, not only installed)
EOF
}

# The report needs matplotlib and numpy only: install those pins first (small), unless present.
source scripts/report_venv.sh
ensure_report_venv "$VENV" "$REQ"

# The peer's python (looked for in any case, for machine.txt; installed only for a step that runs it).
PEER=""
if [[ -n ${PEER_PYTHON:-} ]]; then
  PEER=$PEER_PYTHON
  has_peer_deps "$PEER" || say "WARNING: PEER_PYTHON=$PEER lacks torch/linformer at the versions of $REQ"
elif has_peer_deps "$VENV/bin/python"; then
  PEER=$VENV/bin/python
elif [[ -x /opt/golden-venv/bin/python ]] && has_peer_deps /opt/golden-venv/bin/python; then
  PEER=/opt/golden-venv/bin/python
  say "using /opt/golden-venv for the peer (it has the pinned torch and linformer)"
elif wants peer || wants precision || wants flash; then
  say "installing torch and linformer into $VENV (CPU wheels from $TORCH_INDEX_URL if reachable)"
  run "$VENV/bin/pip" install -q --extra-index-url "$TORCH_INDEX_URL" -r "$REQ"
  PEER=$VENV/bin/python
fi
say "peer python: ${PEER:-none}"

# --- 4. The machine ----------------------------------------------------------------------------
# 'key: value' lines for the report's machine block.
machine_info() {
  cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | head -1; }
  CXX=$(cache CMAKE_CXX_COMPILER)
  echo "date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "cpu: $(python3 scripts/machine.py describe)"
  echo "caches: $(lscpu | sed -n -E 's/^(L1d|L2|L3) cache: *(.*)/\1 \2/p' | paste -sd ';' - | sed 's/;/; /g')"
  echo "cores: $(nproc) available ($(lscpu | sed -n 's/^CPU(s): *//p' | head -1) CPUs, $(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
  echo "vector ISA: $(python3 scripts/machine.py flags)"
  local have=()
  for p in fp32 bf16 int8; do "$BIN" --precision "$p" info >/dev/null 2>&1 && have+=("$p"); done
  echo "precisions: ${have[*]} (those \`linformer --precision P info\` accepts on this CPU)"
  echo "memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  # shellcheck disable=SC1091
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "compiler: $("${CXX:-c++}" --version 2>/dev/null | head -1)"
  echo "build: $BUILD_DIR, CMAKE_BUILD_TYPE=$(cache CMAKE_BUILD_TYPE), LINFORMER_GEMM=$(cache LINFORMER_GEMM), LINFORMER_NATIVE=$(cache LINFORMER_NATIVE)"
  echo "oneDNN package: $(dpkg-query -W -f='${Package} ${Version}' libdnnl-dev 2>/dev/null || echo 'not installed')"
  echo "OpenBLAS package: $(dpkg-query -W -f='${Package} ${Version}' libopenblas-dev 2>/dev/null || echo 'not installed')"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "threads: $THREADS (LINFORMER_NUM_THREADS for ours, --threads for PyTorch)"
  echo "load average at start: $LOAD"
  if [[ -n $PEER ]]; then
    "$PEER" - <<'EOF' 2>/dev/null || echo "peer: could not import torch"
import platform, re, importlib.metadata as md
import torch
cfg = torch.__config__.show()
blas = re.search(r"BLAS_INFO=([^,\s]+)", cfg)
cap = re.search(r"CPU capability usage: (\S+)", cfg)
print(f"peer: Python {platform.python_version()}, torch {torch.__version__} (BLAS {blas.group(1) if blas else '?'}, "
      f"CPU capability {cap.group(1) if cap else '?'}), linformer {md.version('linformer')}")
EOF
  fi
}
# machine.txt belongs to the run folder's layer measurements, so only they rewrite it.
if wants ours || wants peer; then
  mkdir -p "$RUN_DIR"
  machine_info > "$RUN_DIR/machine.txt.new" && mv "$RUN_DIR/machine.txt.new" "$RUN_DIR/machine.txt"  # a truncated tracked file would read as a change
  say "machine: $RUN_DIR/machine.txt"
  sed 's/^/  /' "$RUN_DIR/machine.txt"
fi

# --- 5. The measurements -----------------------------------------------------------------------
# Each step's commands go to a file of its own (<step>_commands.txt beside what it writes), so that a
# run of some steps keeps the others' commands for the report.
ours_step() {
  local cmds=$RUN_DIR/ours_commands.txt
  : > "$cmds"
  rm -f "$RUN_DIR"/ours_*.csv "$RUN_DIR"/ours_*.md  # no rows of an earlier run in this run's tables
  if [[ $MODE == full ]]; then
    # Every registered kind; Linformer over every k ≤ n.
    record "$cmds" env LINFORMER_NUM_THREADS="$THREADS" "$BIN" bench --what layer_forward,layer_forward_backward \
        --n "$NS" --k "$KS" --repeats "$REPEATS" --warmup "$WARMUP" --csv "$RUN_DIR/ours_layers.csv" --markdown "$RUN_DIR/ours_layers.md"
    # Full and flash models at n = 4096 cost about a minute together; they show what Linformer saves
    # inside the whole model.
    record "$cmds" env LINFORMER_NUM_THREADS="$THREADS" "$BIN" bench --kinds "$MODEL_KINDS" \
        --what model_train_step,model_train_step_checkpointed,model_inference --n $T_N --k $T_K \
        --repeats "$REPEATS" --warmup "$WARMUP" --csv "$RUN_DIR/ours_model.csv" --markdown "$RUN_DIR/ours_model.md"
  else
    record "$cmds" env LINFORMER_NUM_THREADS="$THREADS" "$BIN" bench --kinds "$LAYER_KINDS" \
        --what layer_forward,layer_forward_backward --n "$NS" --k "$KS" --repeats "$REPEATS" --warmup "$WARMUP" \
        --csv "$RUN_DIR/ours_layers.csv" --markdown "$RUN_DIR/ours_layers.md"
  fi
}
peer_step() {
  local cmds=$RUN_DIR/peer_commands.txt
  : > "$cmds"
  rm -f "$RUN_DIR"/peer_*.csv
  if [[ $MODE == full ]]; then
    record "$cmds" "$PEER" scripts/peer_bench.py --out "$RUN_DIR/peer_layers.csv" --kinds "$PEER_KINDS" \
        --what forward,forward_backward --n "$NS" --k "$KS" --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
    record "$cmds" "$PEER" scripts/peer_bench.py --out "$RUN_DIR/peer_model.csv" --kinds linformer_model \
        --n $T_N --k $T_K --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
  else
    record "$cmds" "$PEER" scripts/peer_bench.py --out "$RUN_DIR/peer_layers.csv" --kinds "$PEER_KINDS" \
        --what forward,forward_backward --n "$PEER_NS" --k "$KS" --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
  fi
}
precision_step() {
  : > "$CPU_DIR/precision_commands.txt"
  record "$CPU_DIR/precision_commands.txt" "$PEER" scripts/precision_bench.py --rounds "$ROUNDS" --repeats "$REPEATS" \
      --n $T_N --k $T_K --threads "$THREADS" --binary "$BIN" --out "$CPU_DIR"
}
flash_step() {
  : > "$CPU_DIR/flash_commands.txt"
  record "$CPU_DIR/flash_commands.txt" "$PEER" scripts/flash_vs_sdpa.py --out "$CPU_DIR/flash_vs_sdpa.csv" \
      --n "$FLASH_NS" --rounds "$FLASH_ROUNDS" --repeats "$REPEATS" --threads "$THREADS" --linformer "$BIN"
}
gemm_step() {
  : > "$CPU_DIR/gemm_commands.txt"
  record "$CPU_DIR/gemm_commands.txt" env "${GEMM_ENV[@]}" THREADS="$THREADS" OUT_DIR="$CPU_DIR" bash scripts/gemm_backends.sh
}
for s in "${ALL_STEPS[@]}"; do
  if wants "$s"; then step "$s" "${s}_step"; fi
done

# --- 6. The report -----------------------------------------------------------------------------
REPORT=("$VENV/bin/python" scripts/bench_report.py --results "$RESULTS" --out "$OUT_DOC" --img-dir "$IMG_DIR"
        --notes bench/notes.md --command "LINFORMER_NUM_THREADS=$THREADS bash scripts/bench_all.sh ${ARGS[*]:-}")
run "${REPORT[@]}"
if [[ ${#FAILED[@]} -gt 0 ]]; then
  die "the report is written, but these steps failed: ${FAILED[*]} (their output above)"
fi
say "done: $OUT_DOC (plots in $IMG_DIR; data in $CPU_DIR)"
