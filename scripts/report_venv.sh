# Sourced by the report scripts (bench_all.sh, study.sh): the Python venv that draws the plots.
# ensure_report_venv VENV REQ makes VENV (python3 -m venv; Debian needs python3-venv, in setup.sh) and
# installs the matplotlib and numpy pins of the requirements file REQ unless the venv already has
# exactly those versions. The caller defines run() (prints and runs a command).
ensure_report_venv() {
  local venv=$1 req=$2
  if [[ ! -x $venv/bin/python ]]; then
    run python3 -m venv "$venv"
  fi
  local pins
  mapfile -t pins < <(grep -E '^(matplotlib|numpy)==' "$req")
  if ! "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys, importlib.metadata as md
sys.exit(any(md.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
    run "$venv/bin/pip" install -q "${pins[@]}"
  fi
}
