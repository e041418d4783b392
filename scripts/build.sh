#!/usr/bin/env bash
# Configures a Release build and builds everything (library, CLI, tests, benchmarks).
# Usage: scripts/build.sh [build-dir] [extra cmake args...]
#   e.g. scripts/build.sh build-blas -DLINFORMER_GEMM=openblas
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${1:-build}
shift || true

echo "build: configuring ${BUILD_DIR} (Release) $*"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
echo "build: building with $(nproc) jobs"
cmake --build "$BUILD_DIR" -j"$(nproc)"
