#!/usr/bin/env bash
# The speed/memory benchmark of issue 4 in one command: builds the CLI, measures our layers and model
# (`linformer bench`) and the PyTorch peer (scripts/peer_bench.py) over the same grid, records the
# machine, and writes the report (scripts/bench_report.py: markdown + PNG plots).
#
# Usage: bash scripts/bench_all.sh [--quick] [--out-doc PATH] [--img-dir DIR] [--results DIR]
#            [--build-dir DIR] [--skip-build] [--skip-ours] [--skip-peer] [--report-only]
#   (no option)     the whole grid: n = 512..65536, k = 128..2048, 3 timed runs after 1 warm-up;
#                   results in bench/results/, report in docs/benchmarks.md + docs/img/bench/.
#                   Hours of machine time (the peer's long-n and model rows dominate).
#   --quick         n = 512..4096, k = 128,256, 1 timed run: checks the pipeline in a few minutes.
#                   Writes under <build-dir>/bench-quick/ (ignored by git) unless --results /
#                   --out-doc say otherwise, so it never overwrites docs/benchmarks.md by default.
#   --out-doc PATH  the report (default docs/benchmarks.md; quick: <build-dir>/bench-quick/benchmarks.md)
#   --img-dir DIR   the plots (default: img/bench beside the report)
#   --results DIR   the CSVs, machine.txt, {ours,peer}_commands.txt, ratios.txt (default bench/results)
#   --build-dir DIR the CMake build folder (default build)
#   --skip-build    use the existing <build-dir>/linformer
#   --skip-ours / --skip-peer   keep that side's existing CSVs (e.g. to redo one side only)
#   --report-only   = --skip-build --skip-ours --skip-peer: the report again from the existing CSVs
#                   (e.g. after editing bench/notes.md); machine.txt is kept as the run wrote it
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

QUICK=0 SKIP_BUILD=0 SKIP_OURS=0 SKIP_PEER=0
OUT_DOC="" IMG_DIR="" RESULTS="" BUILD_DIR=build
ARGS=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out-doc) OUT_DOC=${2:?--out-doc needs a path}; shift ;;
    --img-dir) IMG_DIR=${2:?--img-dir needs a folder}; shift ;;
    --results) RESULTS=${2:?--results needs a folder}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a folder}; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --skip-ours) SKIP_OURS=1 ;;
    --skip-peer) SKIP_PEER=1 ;;
    --report-only) SKIP_BUILD=1 SKIP_OURS=1 SKIP_PEER=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

THREADS=${LINFORMER_NUM_THREADS:-2}
export LINFORMER_NUM_THREADS=$THREADS
VENV=${BENCH_VENV:-.venv-bench}
REQ=scripts/requirements-bench.txt
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
BIN=$BUILD_DIR/linformer

# The grid. Quick mode keeps the model at the targets' n = 4096, k = 256 so that they are computed.
if [[ $QUICK -eq 1 ]]; then
  NS=512,1024,2048,4096 KS=128,256 REPEATS=1 WARMUP=1
  : "${RESULTS:=$BUILD_DIR/bench-quick}" "${OUT_DOC:=$BUILD_DIR/bench-quick/benchmarks.md}"
  MODEL_KINDS=linformer
else
  NS=512,1024,2048,4096,8192,16384,32768,65536 KS=128,256,512,1024,2048 REPEATS=3 WARMUP=1
  : "${RESULTS:=bench/results}" "${OUT_DOC:=docs/benchmarks.md}"
  # Full and flash models at n = 4096 cost about a minute together; they show what Linformer saves
  # inside the whole model.
  MODEL_KINDS=linformer,flash,full
fi
MODEL_N=4096 MODEL_K=256
: "${IMG_DIR:=$(dirname "$OUT_DOC")/img/bench}"
mkdir -p "$RESULTS"

say "quick=$QUICK threads=$THREADS results=$RESULTS report=$OUT_DOC plots=$IMG_DIR"

# Runs a command after printing it.
run() {
  say "\$ $*"
  "$@"
}
# record FILE ENV_PREFIX COMMAND...: runs the command like run() and appends it (with the
# environment prefix it runs under) to FILE, whose lines go into the report's command block.
record() {
  local file=$1 prefix=$2
  shift 2
  printf '%s%s\n' "$prefix" "$*" >> "$file"
  run "$@"
}

MEASURE=$(( SKIP_OURS == 0 || SKIP_PEER == 0 ))

# --- 1. Is the machine idle? -------------------------------------------------------------------
LOAD=$(cut -d' ' -f1 /proc/loadavg)
if [[ $MEASURE -eq 0 ]]; then
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
[[ -x $BIN ]] || die "$BIN not found (build it, or drop --skip-build)"

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

# The peer's python (also looked for with --skip-peer, for machine.txt; installed only without it).
PEER=""
if [[ -n ${PEER_PYTHON:-} ]]; then
  PEER=$PEER_PYTHON
  has_peer_deps "$PEER" || say "WARNING: PEER_PYTHON=$PEER lacks torch/linformer at the versions of $REQ"
elif has_peer_deps "$VENV/bin/python"; then
  PEER=$VENV/bin/python
elif [[ -x /opt/golden-venv/bin/python ]] && has_peer_deps /opt/golden-venv/bin/python; then
  PEER=/opt/golden-venv/bin/python
  say "using /opt/golden-venv for the peer (it has the pinned torch and linformer)"
elif [[ $SKIP_PEER -eq 0 ]]; then
  say "installing torch and linformer into $VENV (CPU wheels from $TORCH_INDEX_URL if reachable)"
  run "$VENV/bin/pip" install -q --extra-index-url "$TORCH_INDEX_URL" -r "$REQ"
  PEER=$VENV/bin/python
fi
say "peer python: ${PEER:-none}"

# --- 4. The machine ----------------------------------------------------------------------------
# 'key: value' lines for the report's machine section.
machine_info() {
  cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null | head -1; }
  CXX=$(cache CMAKE_CXX_COMPILER)
  echo "date: $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1) (family $(lscpu | sed -n 's/^CPU family: *//p' | head -1), model $(lscpu | sed -n 's/^Model: *//p' | head -1))"
  echo "caches: $(lscpu | sed -n -E 's/^(L1d|L2|L3) cache: *(.*)/\1 \2/p' | paste -sd ';' - | sed 's/;/; /g')"
  echo "cores: $(nproc) available ($(lscpu | sed -n 's/^CPU(s): *//p' | head -1) CPUs, $(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
  echo "vector ISA: $(grep -m1 -o -w -E 'avx2|avx512f|avx512bw|avx512_bf16|amx_tile|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
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
# Written when something is measured (a report-only run keeps the file of the run that measured).
MACHINE=$RESULTS/machine.txt
if [[ $MEASURE -eq 1 || ! -f $MACHINE ]]; then
  machine_info > "$MACHINE"
fi
say "machine: $MACHINE"
sed 's/^/  /' "$MACHINE"

# --- 5. Ours -----------------------------------------------------------------------------------
# The commands of each side go to a file of their own, so that a run with --skip-ours or --skip-peer
# keeps the other side's commands for the report.
if [[ $SKIP_OURS -eq 0 ]]; then
  : > "$RESULTS/ours_commands.txt"
  # ours_family.csv holds rows measured separately for kinds added after a full run; this run
  # measures every registered kind, so they would only shadow its rows.
  rm -f "$RESULTS/ours_family.csv" "$RESULTS/ours_family.md"
  # Every registered kind; Linformer over every k ≤ n.
  record "$RESULTS/ours_commands.txt" "LINFORMER_NUM_THREADS=$THREADS " "$BIN" bench --what layer_forward,layer_forward_backward --n "$NS" --k "$KS" \
      --repeats "$REPEATS" --warmup "$WARMUP" --csv "$RESULTS/ours_layers.csv" --markdown "$RESULTS/ours_layers.md"
  record "$RESULTS/ours_commands.txt" "LINFORMER_NUM_THREADS=$THREADS " "$BIN" bench --kinds "$MODEL_KINDS" --what model_train_step,model_train_step_checkpointed,model_inference --n "$MODEL_N" --k "$MODEL_K" \
      --repeats "$REPEATS" --warmup "$WARMUP" --csv "$RESULTS/ours_model.csv" --markdown "$RESULTS/ours_model.md"
fi

# --- 6. The PyTorch peer -----------------------------------------------------------------------
if [[ $SKIP_PEER -eq 0 ]]; then
  : > "$RESULTS/peer_commands.txt"
  record "$RESULTS/peer_commands.txt" "" "$PEER" scripts/peer_bench.py --out "$RESULTS/peer_layers.csv" --kinds linformer,full,sdpa \
      --what forward,forward_backward --n "$NS" --k "$KS" --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
  record "$RESULTS/peer_commands.txt" "" "$PEER" scripts/peer_bench.py --out "$RESULTS/peer_model.csv" --kinds linformer_model \
      --n "$MODEL_N" --k "$MODEL_K" --threads "$THREADS" --repeats "$REPEATS" --warmup "$WARMUP"
fi

# --- 7. The report -----------------------------------------------------------------------------
OURS_CSV=() PEER_CSV=()
for f in ours_layers ours_model ours_family; do [[ -f $RESULTS/$f.csv ]] && OURS_CSV+=("$RESULTS/$f.csv"); done
for f in peer_layers peer_model; do [[ -f $RESULTS/$f.csv ]] && PEER_CSV+=("$RESULTS/$f.csv"); done
[[ ${#OURS_CSV[@]} -gt 0 || ${#PEER_CSV[@]} -gt 0 ]] || die "no CSV in $RESULTS"
REPORT=("$VENV/bin/python" scripts/bench_report.py --out "$OUT_DOC" --img-dir "$IMG_DIR" --notes bench/notes.md
        --machine-info "$MACHINE" --command "LINFORMER_NUM_THREADS=$THREADS bash scripts/bench_all.sh ${ARGS[*]:-}"
        --command "# the measurements behind the report:")
for f in "$RESULTS/ours_commands.txt" "$RESULTS/peer_commands.txt"; do
  [[ -f $f ]] || continue
  while IFS= read -r line; do REPORT+=(--command "$line"); done < "$f"
done
[[ ${#OURS_CSV[@]} -gt 0 ]] && REPORT+=(--ours "${OURS_CSV[@]}")
[[ ${#PEER_CSV[@]} -gt 0 ]] && REPORT+=(--peer "${PEER_CSV[@]}")
say "\$ ${REPORT[*]}"
"${REPORT[@]}" | tee "$RESULTS/ratios.txt"
say "done: $OUT_DOC (plots in $IMG_DIR; data in $RESULTS)"
