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

# lane ARCH: that architecture's members, in order (seed 0 before seed 1). The two
# lanes run side by side, one per core where taskset and 2+ cores exist (one
# process per core trains more steps per second in all than one process on two
# threads: 1.2 + 0.95 steps/s for a single-level and a hierarchical run pinned
# side by side vs 1.7 for one single-level run alone, 2026-12-02), each resumable.
lane() {
  local arch=$1 m2048 m8192
  if [[ $arch == single ]]; then m2048=D8_K2048; m8192=D8_K8192
  else m2048=D8_2x1024; m8192=D8_2x4096; fi
  run() {  # SUFFIX STEPS STEPS_PER_EPOCH EVAL_EVERY SEED MEMBER [overrides...]
    local suffix=$1 steps=$2 per_epoch=$3 eval_every=$4 seed=$5 member=$6
    shift 6
    "$python" -m vqjax.experiments.sweep --config=configs/reproduction.py:"$arch" \
        --workdir="$runs/table1_${suffix}_$arch" --members="$member" \
        --sweep=configs/sweeps/table1.py --seeds="$seed" \
        --config.train.num_steps="$steps" --config.train.steps_per_epoch="$per_epoch" \
        --config.train.eval_every="$eval_every" --config.train.log_every=100 \
        --config.train.checkpoint_every=200 "$@"
  }
  for seed in 0 1; do
    run 4800steps 4800 16 400 "$seed" "$m2048"
    run 4800steps 4800 16 400 "$seed" "$m8192"
  done
  # Validation on center crops of the 19 validation photos (the 64x64 grid cannot hold 128x128 crops).
  run 128px 1200 4 200 0 "$m2048" --config.data.image_size=128 \
      --config.data.val_dir=data/photo_corpus/val_photos
}
pin=0
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then pin=1; fi
core=0
for arch in single hierarchical; do
  (if (( pin )); then taskset -pc "$core" "$BASHPID" >/dev/null; fi
   lane "$arch") > "$runs/lane_$arch.log" 2>&1 &
  core=$((core + 1))
done
echo "two lanes started (logs: $runs/lane_single.log, $runs/lane_hierarchical.log)"
status=0
wait -n || status=$?
wait -n || status=$?
exit "$status"
