#!/usr/bin/env bash
# Install everything the toolchain needs on Debian 12: apt packages, a venv in .venv and the
# package with all its extras. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES="build-essential clang gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
python3-venv dataset-fashion-mnist openocd"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

PY="${LRT_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 not found (set LRT_PYTHON)" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.lrt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[setup] pip install -e .[train,dev,dask,pio] (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip "setuptools>=77"
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[train,dev,dask,pio]'
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python --version), $(arm-none-eabi-gcc --version | head -1), $(qemu-system-arm --version | head -1)"
