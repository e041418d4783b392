#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine: compiler and CMake, the GEMM backends
# (oneDNN, OpenBLAS), LAPACKE (the singular values of `linformer spectrum`), nlohmann-json, CLI11,
# GoogleTest/GoogleMock, Google Benchmark, zlib, the GCIDE dictionary (the default text corpus) and
# Python 3 (scripts/study.py and its test). With LINFORMER_SETUP_MKL=1 also MKL for the GEMM backend
# `mkl` (-DLINFORMER_GEMM=mkl): PyPI's wheels (the MKL that PyTorch ships) in a venv at .venv-mkl, where
# CMake looks for it; the default backend, oneDNN (the fastest measured here), does not need it, and
# scripts/gemm_backends.sh asks for it. Idempotent: when every package is already installed it
# touches nothing, so a warm CI machine skips apt (and pip) entirely.
set -euo pipefail

PACKAGES=(
  build-essential
  cmake
  pkg-config
  libdnnl-dev
  # Debian's oneDNN CMake package calls find_package(OpenCL REQUIRED) (it is built with the OpenCL GPU
  # runtime) but only recommends this package, so --no-install-recommends would leave CMake failing.
  ocl-icd-opencl-dev
  libopenblas-dev
  liblapacke-dev
  nlohmann-json3-dev
  libcli11-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  zlib1g-dev
  # `linformer serve`: the HTTP server library; wrk only for scripts/serve_load.sh (not the tests).
  libcpp-httplib-dev
  wrk
  dict-gcide
  # scripts/study.py and the ctest test of it; python3-venv for the report's plots (matplotlib in a venv).
  python3
  python3-venv
  # The Python package (docs/python.md): Python's headers for the extension; pip fetches nanobind,
  # scikit-build-core, numpy and pytest from PyPI into the venvs that need them.
  python3-dev
  # `linformer plot` (scripts/plot_runs.py) and, without a venv, the report's plots.
  python3-matplotlib
)

say() { echo "setup: $*"; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  say "error: this script needs a Debian-based system (dpkg-query and apt-get not found)." >&2
  say "Install by hand: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

# MKL from PyPI into .venv-mkl (include/mkl.h, lib/libmkl_*.so.N), pinned to the version measured. Only
# its own wheels (--no-deps): the backend links MKL's GNU OpenMP layer, so the Intel OpenMP runtime and
# TBB that `mkl` depends on would be 300 MB that nothing loads. Runs after apt (python3-venv).
MKL_VERSION=2026.2.1
install_mkl() {
  [[ "${LINFORMER_SETUP_MKL:-0}" == 1 ]] || return 0
  local venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv-mkl"
  if compgen -G "$venv/lib/libmkl_core.so*" >/dev/null && [[ -f "$venv/include/mkl.h" ]]; then
    say "MKL already in .venv-mkl; skipping pip."
    return 0
  fi
  say "installing MKL $MKL_VERSION from PyPI into .venv-mkl (the GEMM backend mkl)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check --no-cache-dir --quiet --no-deps \
    "mkl==$MKL_VERSION" "mkl-include==$MKL_VERSION" "mkl-devel==$MKL_VERSION"
}

if [[ ${#missing[@]} -eq 0 ]]; then
  say "all ${#PACKAGES[@]} packages already installed; skipping apt."
  install_mkl
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    say "error: missing packages (${missing[*]}) and not running as root, with no sudo available." >&2
    say "Run this script as root, or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

say "installing ${#missing[@]} missing package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
install_mkl
say "done."
