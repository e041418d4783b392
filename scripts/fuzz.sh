#!/usr/bin/env bash
# Fuzzes the loaders and the server's request parser with libFuzzer (+ ASan + UBSan), one target after the other.
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   seconds-per-target  default 300 (5 minutes); targets default to all:
#   safetensors checkpoint config corpus tsv serve_request  (see tests/fuzz/fuzz_targets.h)
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_WORK_DIR (scratch: working corpus, artifacts
# and logs; default a new mktemp -d, never inside the repository), FUZZ_JOBS (build jobs, default 2).
# Each fuzzer starts from tests/fuzz/corpus/<target>/ and tests/fuzz/regressions/<target>/ (the config
# fuzzer also from one config per registered attention kind, written into its working corpus). An input
# that crashes, hangs (-timeout) or runs out of memory is copied to tests/fuzz/regressions/<target>/;
# the script then exits 1: fix the loader, re-run, and commit the input (the normal tests replay it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET=${1:-300}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(safetensors checkpoint config corpus tsv serve_request)
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
WORK_DIR=${FUZZ_WORK_DIR:-$(mktemp -d -t linformer-fuzz.XXXXXX)}
JOBS=${FUZZ_JOBS:-2}

# Inputs larger than the seeds need to be (a tiny checkpoint is ~5 KB); gzip inputs may be larger.
max_len_for() {
  case "$1" in
    safetensors|checkpoint) echo 16384 ;;
    config|serve_request) echo 8192 ;;
    *) echo 65536 ;;
  esac
}

# --- tools: clang and libFuzzer (Debian: clang, libclang-rt-dev), libomp for clang's OpenMP --------
have_libfuzzer() {
  command -v clang++ >/dev/null || return 1
  local dir
  dir=$(mktemp -d)
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$dir/f.cpp"
  clang++ -fsanitize=fuzzer,address,undefined -fopenmp "$dir/f.cpp" -o "$dir/f" 2>/dev/null
  local rc=$?
  rm -rf "$dir"
  return $rc
}
if ! have_libfuzzer; then
  echo "fuzz: installing clang, libFuzzer and libomp from Debian"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq clang libclang-rt-dev libomp-dev
  have_libfuzzer || { echo "fuzz: clang cannot build a libFuzzer binary" >&2; exit 2; }
fi

# --- build ----------------------------------------------------------------------------------------
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# OpenBLAS (no OpenMP inside) keeps clang's libomp the only OpenMP runtime; oneDNN brings libgomp.
cmake -S . -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release -DLINFORMER_FUZZ=ON \
  -DLINFORMER_GEMM=openblas -DLINFORMER_BUILD_TESTS=OFF -DLINFORMER_BUILD_BENCH=OFF "${LAUNCHER[@]}" >/dev/null
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=(--target "fuzz_$t"); done
cmake --build "$BUILD_DIR" -j"$JOBS" "${build_targets[@]}"

# --- fuzz -----------------------------------------------------------------------------------------
echo "fuzz: ${SECONDS_PER_TARGET} s per target; working corpus, artifacts and logs in $WORK_DIR"
findings=0
summary=()
for t in "${TARGETS[@]}"; do
  work="$WORK_DIR/$t"
  mkdir -p "$work/corpus" "$work/artifacts" "tests/fuzz/regressions/$t"
  log="$work/fuzz.log"
  echo "fuzz: $t ..."
  rc=0
  LINFORMER_FUZZ_REGISTRY_SEEDS="$work/corpus" "$BUILD_DIR/fuzz_$t" "$work/corpus" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" \
    -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len_for "$t")" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -use_value_profile=1 -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  line="$t: ${execs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, exit $rc"
  shopt -s nullglob
  artifacts=("$work"/artifacts/*)
  shopt -u nullglob
  if [[ $rc -ne 0 || ${#artifacts[@]} -gt 0 ]]; then
    findings=$((findings + 1))
    line+=" -- FINDING"
    for a in "${artifacts[@]}"; do
      cp "$a" "tests/fuzz/regressions/$t/"
      echo "fuzz: $t: $(basename "$a") copied to tests/fuzz/regressions/$t/"
    done
    echo "fuzz: $t failed; the end of $log:" >&2
    tail -40 "$log" >&2
  fi
  summary+=("$line")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [[ $findings -gt 0 ]]; then
  echo "fuzz: $findings target(s) found a problem. Fix the loader so the input is refused with a clear" >&2
  echo "      lf::Error (or accepted), check with build-h/linformer_tests --gtest_filter='FuzzInputs*', and" >&2
  echo "      commit the new files under tests/fuzz/regressions/ (the normal tests replay them)." >&2
  exit 1
fi
