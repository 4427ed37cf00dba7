#!/usr/bin/env bash
# The regime-gap runs of docs/REPRODUCTION.md: Table 1's K_s = 2048 and 8192
# pairs (D = 8) trained 4,800 steps (16x the reproduction's 300, 4x its longer
# runs) in the paper's schedule shape: Adam 3e-4 decayed by 0.99 per "epoch"
# for 300 epochs, each epoch scaled to 4,800 / 300 = 16 steps, so the learning
# rate ends at 0.99^299 = 0.050x as in the paper (the 300-step runs end at
# 0.94x). An evaluation every 400 steps gives the curve of the pair's PSNR gap
# against images seen (scripts/regime_curves.py reads it from the TensorBoard
# events). Then, if time allows, the 128x128-crop question: the K_s = 2048 pair
# at 128x128 crops (top level 16x16 instead of 8x8), 1,200 steps in the same
# schedule shape (same pixels seen as 4,800 steps of 64x64 crops).
#
# Resumable: finished members are skipped, unfinished ones resume from their
# checkpoints; the committed metrics (docs/reproduction/runs) are copied in first.
#
#   scripts/reproduction_long.sh [RUNS_DIR]     # default runs/reproduction
#   scripts/reproduction_report.sh [RUNS_DIR]   # then redraws the reports
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reproduction_setup.sh "$@"

# pair SUFFIX STEPS STEPS_PER_EPOCH EVAL_EVERY SEED SINGLE HIER [overrides...]
pair() {
  local suffix=$1 steps=$2 per_epoch=$3 eval_every=$4 seed=$5 single=$6 hier=$7
  shift 7
  local common=(--sweep=configs/sweeps/table1.py --seeds="$seed"
                --config.train.num_steps="$steps" --config.train.steps_per_epoch="$per_epoch"
                --config.train.eval_every="$eval_every" --config.train.log_every=100
                --config.train.checkpoint_every=200 "$@")
  "$python" -m vqjax.experiments.sweep --config=configs/reproduction.py:single \
      --workdir="$runs/table1_${suffix}_single" --members="$single" "${common[@]}"
  "$python" -m vqjax.experiments.sweep --config=configs/reproduction.py:hierarchical \
      --workdir="$runs/table1_${suffix}_hierarchical" --members="$hier" "${common[@]}"
}
for seed in 0 1; do
  pair 4800steps 4800 16 400 "$seed" D8_K2048 D8_2x1024
  pair 4800steps 4800 16 400 "$seed" D8_K8192 D8_2x4096
done
# Validation on center crops of the 19 validation photos (the 64x64 grid cannot hold 128x128 crops).
pair 128px 1200 4 200 0 D8_K2048 D8_2x1024 --config.data.image_size=128 \
    --config.data.val_dir=data/photo_corpus/val_photos
