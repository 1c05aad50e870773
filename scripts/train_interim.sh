#!/usr/bin/env bash
# Trains the interim CPU models of checkpoints/ (configs/interim/*.yaml) in two one-thread lanes of
# about equal length: the 13-style net then mosaic in one, the other three single-style nets one after
# another in the other (each continues from the shipped checkpoint when runs/interim/NAME/ is fresh:
# `init-from` in the recipes). With the defaults the lanes take about 112 and 108 minutes.
# Every run stops after a time limit and saves runs/interim/NAME/last.ckpt; rerunning the script
# continues each model from there (until the recipe's max-steps).
#   scripts/train_interim.sh [MULTI_MINUTES] [SINGLE_MINUTES]   (defaults 88 and 38)
# The recipes decay the rate to zero at their max-steps, which these limits reach on a 2-core
# AVX512-BF16 EPYC (3400 steps of the 13-style net in 81 minutes, 1700 of a width-32 single-style
# net in about 36) except the single-style nets' 2300 since the fourteenth session (about 48); a slower CPU needs more
# attempts (an AVX2-only EPYC trains in float32 at about a third of that speed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/env.sh)
export OMP_NUM_THREADS=1
minutes() { printf '00:%02d:%02d:00' $(($1 / 60)) $(($1 % 60)); }
train() { "$venv/bin/styletrain" train --config "configs/interim/$1.yaml" --no-progress --max-time "$2"; }
multi=$(minutes "${1:-88}") single=$(minutes "${2:-38}")
mkdir -p runs/interim
(train multistyle "$multi" >runs/interim/multistyle.log 2>&1
 train mosaic "$single" >runs/interim/mosaic.log 2>&1) &
(for name in the_scream wave_crop starry_night_crop; do
    train "$name" "$single" >"runs/interim/$name.log" 2>&1
done) &
wait
