#!/usr/bin/env bash
# The CPU-scale reproduction of the paper (docs/REPRODUCTION.md): Figure 1 for
# both architectures with 3 seeds, Table 1's D = 8 rows with 2 seeds, the
# Figure 2 grid with 1 seed (and its D = 2, 4 rows; D = 4 and 8 with 2); every
# member 300 steps on the photo corpus.
#
# Resumable: finished members are skipped, unfinished ones resume from their
# checkpoints, so run the same command again after an interruption. The
# finished runs committed in docs/reproduction/runs (metrics, no checkpoints;
# scripts/collect_runs.py) are copied in first, so a fresh checkout resumes too.
# Runs go in order of what they answer: seed by seed (Figure 1 and Table 1
# with 1, then 2 seeds, then Figure 1's third), the Figure 2 grid last.
#
#   scripts/reproduction.sh [RUNS_DIR]     # default runs/reproduction
#   python -m vqjax.experiments.report RUNS_DIR/* --out=docs/reproduction
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/reproduction_setup.sh "$@"

sweep() { "$python" -m vqjax.experiments.sweep "$@"; }
figure1() {
  sweep --config=configs/reproduction.py:hierarchical --sweep=configs/sweeps/figure1.py \
      --workdir="$runs/figure1" --seeds="$1"
}
table1() {
  sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/table1.py \
      --workdir="$runs/table1_single" --seeds="$1" --members=D8_K1024,D8_K2048,D8_K4096,D8_K8192
  sweep --config=configs/reproduction.py:hierarchical --sweep=configs/sweeps/table1.py \
      --workdir="$runs/table1_hierarchical" --seeds="$1" --members=D8_2x512,D8_2x1024,D8_2x2048,D8_2x4096
}
for seed in 0 1; do
  figure1 "$seed"
  table1 "$seed"
done
figure1 2
# The Figure 2 grid (configs/sweeps/figure2.py's 20 members), then the D = 2 and
# D = 4 rows below it that the paper left out of its figure.
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/figure2.py \
    --workdir="$runs/figure2" --seeds=0
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/figure2_below8.py \
    --workdir="$runs/figure2" --seeds=0
# A second seed for the D = 4 and D = 8 rows, the two best and within one seed's
# noise of each other.
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/figure2_below8.py \
    --workdir="$runs/figure2" --seeds=1 \
    --members=D4_K1024,D4_K2048,D4_K4096,D4_K8192,D8_K1024,D8_K2048,D8_K4096,D8_K8192
# Does the single-level lead of Table 1 survive longer training? Its K_s = 8192
# pair (D = 8) and the pair with the largest gap at 300 steps (K_s = 2048) again
# at 4x the steps (1,200), 2 seeds.
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/table1.py \
    --workdir="$runs/table1_1200steps_single" --seeds=0,1 --members=D8_K8192,D8_K2048 \
    --config.train.num_steps=1200
sweep --config=configs/reproduction.py:hierarchical --sweep=configs/sweeps/table1.py \
    --workdir="$runs/table1_1200steps_hierarchical" --seeds=0,1 --members=D8_2x4096,D8_2x1024 \
    --config.train.num_steps=1200
