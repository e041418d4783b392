#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds into build/, runs the whole test suite:
# the C++ suite (ctest), then the Python package's (scripts/test_python.sh: pip install . into a venv, pytest).
# (CMake sets LINFORMER_NUM_THREADS=2 for every test, so two tests in parallel fit four cores.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j2
bash scripts/test_python.sh
