#!/usr/bin/env bash
# README command 2: install if needed, then run the whole test suite (C tests under
# ASan/UBSan, QEMU tests, TFLite bit-exact tests) and the linters (ruff, mypy, clang-format).
#   scripts/test.sh            the full suite: what CI (.ci/run) runs
#   scripts/test.sh --fast     the edit-loop tier: no test marked slow/qemu/renode/pio/tf
# Other arguments go to pytest (e.g. a test file, -k EXPR).
set -euo pipefail
cd "$(dirname "$0")/.."
FAST_MARKERS="not slow and not qemu and not renode and not pio and not tf"
select=()
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then select=(-m "$FAST_MARKERS"); else args+=("$a"); fi
done
scripts/setup.sh
set +e
.venv/bin/python -m pytest -n 2 --timeout 900 "${select[@]}" "${args[@]}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
echo "[lint] ruff check, mypy, clang-format"
.venv/bin/ruff check toolchain tests bench harness setup.py || rc=1
.venv/bin/mypy || rc=1
scripts/clang_format_files.sh | xargs .venv/bin/clang-format --dry-run --Werror --style=file || rc=1
exit "$rc"
