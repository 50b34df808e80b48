#!/usr/bin/env bash
# The C files clang-format checks (.clang-format at the top): the library and the board
# support.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files 'firmware_templates/lib/*.[ch]' 'firmware_templates/bsp/*.[ch]'
