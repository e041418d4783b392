#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds into build/, runs the whole test suite.
# (CMake sets LINFORMER_NUM_THREADS=2 for every test, so two tests in parallel fit four cores.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j2
