#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer: builds build-san/ with
# -DLINFORMER_SANITIZE=ON (no benchmarks) and runs every test. Any finding (memory error, leak,
# undefined behaviour) aborts the process that made it, so the test fails, also when the finding is in
# a `linformer` process that a CLI test started (the options below are inherited by it).
# Usage: scripts/test_sanitizers.sh [extra ctest args...]   e.g. -R 'Cli' to run a subset
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build-san -DLINFORMER_SANITIZE=ON -DLINFORMER_BUILD_BENCH=OFF

# abort_on_error: a finding ends the process with SIGABRT, so a CLI test sees a signal, never the
# ordinary exit status 1 of a reported error.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
ctest --test-dir build-san --output-on-failure -j2 "$@"
