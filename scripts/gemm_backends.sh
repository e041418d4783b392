#!/usr/bin/env bash
# Measures the float GEMM of every backend (oneDNN, OpenBLAS, MKL) at every GEMM shape of the model
# (bench/bench_kernels.cpp: BM_GemmShape/<name>, through ops::matmul), on this machine, in one run:
# builds build-dnnl, build-openblas and build-mkl (Release, only linformer_bench), then runs the
# shape benchmark of each backend in turn, ROUNDS rounds with the backends' order rotated, and writes
#   bench/results/<cpu>/gemm_backends.csv  one row per (round, backend, shape): GFLOP/s
#   bench/results/<cpu>/gemm_backends.md   per shape: each backend's median GFLOP/s, the best, and
#                                          each backend's share of the best; the CPU named
# (<cpu>: this CPU's folder, scripts/machine.py; docs/benchmarks.md's section of this CPU shows the table)
# Usage: scripts/gemm_backends.sh
#   ROUNDS=3 MIN_TIME=0.3 THREADS=<all cores> BACKENDS="dnnl openblas mkl mkl_own" FILTER=<regex of shape names>
#   (mkl_own: build-mkl with LINFORMER_MKL_OWN_THREADS=1, MKL's own threads in one call per product, as
#   PyTorch calls it; its results differ between thread counts, which is why the mkl backend tiles)
#   SKIP_BUILD=1 (reuse the build dirs as they are) OUT_DIR=bench/results/<cpu>
# MKL comes from PyPI (mkl-devel in .venv-mkl, which LINFORMER_SETUP_MKL=1 scripts/setup.sh installs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
MIN_TIME=${MIN_TIME:-0.3}
THREADS=${THREADS:-$(nproc)}
BACKENDS=${BACKENDS:-"dnnl openblas mkl mkl_own"}
FILTER=${FILTER:-.}
OUT_DIR=${OUT_DIR:-$(python3 scripts/machine.py dir)}
read -r -a backends <<<"$BACKENDS"

say() { echo "gemm_backends: $*"; }

if [[ " ${backends[*]} " == *" mkl"* ]] && ! compgen -G ".venv-mkl/lib/libmkl_core.so*" >/dev/null; then
  say "no MKL in .venv-mkl: running scripts/setup.sh"
  LINFORMER_SETUP_MKL=1 bash scripts/setup.sh
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  launcher=()
  if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  for b in "${backends[@]}"; do
    [[ "$b" == mkl_own ]] && continue
    say "building build-$b (LINFORMER_GEMM=$b)"
    cmake -S . -B "build-$b" -DCMAKE_BUILD_TYPE=Release -DLINFORMER_GEMM="$b" "${launcher[@]}" >/dev/null
    cmake --build "build-$b" -j"$(nproc)" --target linformer_bench >/dev/null
  done
fi

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
say "$ROUNDS round(s) of ${backends[*]} on $THREADS thread(s), min time $MIN_TIME s per shape"
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#backends[@]}
  for ((i = 0; i < n; i++)); do
    b=${backends[$(((i + r - 1) % n))]}  # rotated, so that no backend always runs first
    say "round $r: $b"
    dir=build-$b own=0
    if [[ "$b" == mkl_own ]]; then dir=build-mkl own=1; fi
    LINFORMER_MKL_OWN_THREADS=$own LINFORMER_NUM_THREADS=$THREADS "$dir/linformer_bench" --benchmark_filter="^BM_GemmShape/($FILTER)" \
      --benchmark_min_time="$MIN_TIME" --benchmark_format=json --benchmark_out_format=json \
      --benchmark_out="$raw/r${r}_$b.json" >/dev/null
  done
done

# Which code path MKL dispatches to on this CPU (its first verbose line names it).
mkl_line=""
if [[ -x build-mkl/linformer_bench ]]; then
  mkl_line=$(MKL_VERBOSE=1 build-mkl/linformer_bench --benchmark_filter='^BM_GemmShape/kv_fwd/' \
    --benchmark_min_time=0.001 2>&1 | grep -m1 '^MKL_VERBOSE oneMKL' || true)
fi

python3 scripts/gemm_backends.py --mkl-verbose "$mkl_line" --raw "$raw" --out-dir "$OUT_DIR" --threads "$THREADS" --rounds "$ROUNDS" \
  --min-time "$MIN_TIME" --backends "${backends[@]}"
