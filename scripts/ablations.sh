#!/usr/bin/env bash
# The paper's ablations on the generated firmware (host emulator), trained from scratch
# (--set epochs=0: the paper's uniform initial weights, no offline training) on the control
# stream, with the paper's settings (--set defaults=paper: lr 0.01, a write every pseudo-batch),
# accuracy over the last 500 samples, as in the paper:
#   streaming batch norm  - mcu-bn (with) against mcu (without), lrt and lrt-maxnorm, 10k samples
#   bias-only training    - with and without max-norm, 10k samples
#   rank x weight bits    - rank 1..8 x weight bits 2..8, lrt-maxnorm, 2k samples (the authors'
#                           code runs this sweep on a 2k stream too)
# Resumable: finished cells are not rerun. Results: results/ablations/<name>/REPORT.md.
# Usage: scripts/ablations.sh [OUT_DIR] [SEEDS] [HEATMAP_SEEDS]   (defaults: results/ablations 0,1,2,3,4 0,1,2)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/ablations}
seeds=${2:-0,1,2,3,4}
heat_seeds=${3:-0,1,2}
scratch=(--set epochs=0 --set augment_train=0 --set defaults=paper --envs control --quiet)
exp=.venv/bin/lrt-experiment

$exp --out "$out/bn" --preset mcu-bn --schemes lrt,lrt-maxnorm --seeds "$seeds" \
    --samples 10000 "${scratch[@]}"
$exp --out "$out/no_bn" --preset mcu --schemes lrt,lrt-maxnorm --seeds "$seeds" \
    --samples 10000 "${scratch[@]}"
$exp --out "$out/bias" --preset mcu-bn --schemes bias --seeds "$seeds" --samples 10000 \
    --sweep max_norm=off,on "${scratch[@]}"
$exp --out "$out/rank_bits" --preset mcu-bn --schemes lrt-maxnorm --seeds "$heat_seeds" \
    --samples 2000 --sweep rank=1,2,3,4,5,6,7,8 --sweep weight_bits=2,3,4,5,6,7,8 "${scratch[@]}"
