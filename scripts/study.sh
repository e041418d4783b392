#!/usr/bin/env bash
# The quality study of issue 13 in one command (docs/study.md): installs the packages, builds the CLI,
# trains and evaluates the grid's runs that are not done (scripts/study.py: resumable, a finished run is
# skipped), then writes the report (scripts/quality_report.py: docs/quality.md + PNG plots).
#
# Usage: bash scripts/study.sh [--grid NAME] [--dir DIR] [--out PATH] [--img-dir DIR] [--spectrum DIR]
#            [--build-dir DIR] [--skip-build] [--report-only] [-- STUDY.PY RUN OPTIONS]
#   --grid NAME     the grid of scripts/study/grids.json (default fig3: hours of machine time;
#                   smoke checks the pipeline in a few minutes and writes under the build folder)
#   --dir DIR       the study directory (default studies/<grid>; ignored by git)
#   --out PATH      the report (default docs/quality.md for fig3, docs/quality_<grid>.md for another
#                   grid such as clm1024; smoke: <build-dir>/study-smoke/quality.md)
#   --img-dir DIR   the plots (default: img/quality beside the report; docs/img/quality_<grid> for another grid)
#   --spectrum DIR  a `linformer spectrum` output folder whose PNGs the report embeds
#   --build-dir DIR the CMake build folder (default build)
#   --skip-build    use the existing <build-dir>/linformer
#   --report-only   only the report, from the study directory as it is (partial studies are fine)
#   -- ...          passed to `study.py run` (e.g. -- --only n512_flash,n512_linformer_k128 --threads 2)
# Environment: BENCH_VENV, the venv of the plots (default .venv-bench, shared with bench_all.sh).
# Killed at any point, the same command continues where it stopped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "study: $*"; }
die() { echo "study: error: $*" >&2; exit 2; }
run() {
  say "\$ $*"
  "$@"
}

GRID=fig3 DIR="" OUT="" IMG_DIR="" SPECTRUM="" BUILD_DIR=build SKIP_BUILD=0 REPORT_ONLY=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --grid) GRID=${2:?--grid needs a name}; shift ;;
    --dir) DIR=${2:?--dir needs a folder}; shift ;;
    --out) OUT=${2:?--out needs a path}; shift ;;
    --img-dir) IMG_DIR=${2:?--img-dir needs a folder}; shift ;;
    --spectrum) SPECTRUM=${2:?--spectrum needs a folder}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a folder}; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --report-only) REPORT_ONLY=1 SKIP_BUILD=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
: "${DIR:=studies/$GRID}"
case $GRID in
  smoke) : "${OUT:=$BUILD_DIR/study-smoke/quality.md}" ;;
  fig3) : "${OUT:=docs/quality.md}" ;;
  *) : "${OUT:=docs/quality_$GRID.md}" "${IMG_DIR:=docs/img/quality_$GRID}" ;;  # another grid's own report
esac
: "${IMG_DIR:=$(dirname "$OUT")/img/quality}"
VENV=${BENCH_VENV:-.venv-bench}

if [[ $SKIP_BUILD -eq 0 ]]; then
  run bash scripts/setup.sh
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    run cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  run cmake --build "$BUILD_DIR" -j"$(nproc)" --target linformer
fi

STATUS=0
if [[ $REPORT_ONLY -eq 0 ]]; then
  # A run that fails is reported and the others go on; the report is written either way.
  run python3 scripts/study.py run --grid "$GRID" --dir "$DIR" --linformer "$BUILD_DIR/linformer" "${EXTRA[@]}" || STATUS=$?
  if [[ $STATUS -eq 130 || $STATUS -eq 2 ]]; then exit "$STATUS"; fi
fi

source scripts/report_venv.sh
ensure_report_venv "$VENV" scripts/requirements-bench.txt
REPORT=("$VENV/bin/python" scripts/quality_report.py --dir "$DIR" --out "$OUT" --img-dir "$IMG_DIR")
[[ -n $SPECTRUM ]] && REPORT+=(--spectrum "$SPECTRUM")
run "${REPORT[@]}"
say "report: $OUT"
exit "$STATUS"
