#!/usr/bin/env bash
# README command 2: install if needed, then run the whole test suite (C tests under
# ASan/UBSan, QEMU tests, TFLite bit-exact tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
set +e
.venv/bin/python -m pytest -n 2 --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
