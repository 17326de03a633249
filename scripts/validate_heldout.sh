#!/usr/bin/env bash
# The held-out calibration run of the README ("Calibration on held-out radio galaxies"): the
# MiraBest prior's 106 validation images observed through 3C 273's uv coverage, DPS, 8 samples
# each, then the prior's own statistics against the same images. About 65 + 13 min on 2 cores.
# Needs ../shared/data/galaxies/mirabest_train_u8.npy (not in the repository). Usage:
#   scripts/validate_heldout.sh OUTDIR [PRIOR_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/validate_heldout.sh OUTDIR [PRIOR_DIR] [STEPS]}
prior=${2:-priors/mirabest-v3-wip}
steps=${3:-100}
data=../shared/data/galaxies/mirabest_train_u8.npy
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/interf-image
"$bin" validate --like tests/data/vla_3c273_xband.ms --truths "$data" --split val \
  --prior "$prior" --n 106 --samples 8 --steps "$steps" --noise 0.05 --seed 2 --method dps \
  --name "$out/heldout"
"$bin" prior stats --prior "$prior" --data "$data" --split val --n 106 --steps 1000 --seed 0 \
  --quiet --out "$out/prior-stats"
