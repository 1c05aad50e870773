#!/usr/bin/env bash
# Trains the interim CPU models of checkpoints/ (configs/interim/*.yaml) one after another, then
# exports each to checkpoints/NAME.onnx. Resumable: rerunning continues from runs/interim/*/last.ckpt.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
for name in ${@:-mosaic multistyle starry_night_crop the_scream wave_crop}; do
    styletrain train --config "configs/interim/$name.yaml" --no-progress
done
