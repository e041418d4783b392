#!/usr/bin/env bash
# The Python suite (docs/python.md): installs the package from this checkout into a venv with pytest
# and runs python/tests/. Tests that need PyTorch skip where it is absent; those that compare with the
# CLI use build/linformer ($LINFORMER_CLI), which scripts/test.sh builds first.
# Usage: bash scripts/test_python.sh [pytest args...]
# Environment:
#   PYTHON  an interpreter whose environment gets the package (e.g. a venv with torch); default: a venv
#           at build/venv-python made from Debian's python3
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "test_python: $*"; }

if [[ -n ${PYTHON:-} ]]; then
  PY=$PYTHON
else
  VENV=build/venv-python
  if [[ ! -x $VENV/bin/python ]]; then
    say "making $VENV"
    python3 -m venv "$VENV"
  fi
  PY=$PWD/$VENV/bin/python  # absolute: pytest runs from python/tests
fi

say "installing the package into $("$PY" -c 'import sys; print(sys.prefix)') (builds into build/python-<tag>)"
"$PY" -m pip install --quiet --disable-pip-version-check '.[test]'
# From outside the source tree, so that `import linformer` is the installed package, not python/linformer.
export LINFORMER_CLI=${LINFORMER_CLI:-$PWD/build/linformer}
cd python/tests
say "running pytest"
"$PY" -m pytest -q -rs "$@" .
