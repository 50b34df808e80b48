#!/usr/bin/env bash
# README command 1: install everything, then the main job on the embedded default:
# train + quantize the `mcu` preset on the shipped MNIST digits, generate C, build the host
# emulator, stream online samples through it and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/lrt-build --board host --out build/host "$@"
.venv/bin/lrt-emulate --build build/host --samples 2000 --stream shift --json build/host/emulate.json
