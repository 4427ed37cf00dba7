#!/usr/bin/env bash
# The CPU-scale reproduction of the paper (docs/REPRODUCTION.md): Figure 1 for
# both architectures with 3 seeds, Table 1's D = 8 rows with 2 seeds, the
# Figure 2 grid with 1 seed; every member 300 steps on the photo corpus.
# Resumable: finished members are skipped, unfinished ones resume from their
# checkpoints, so run the same command again after an interruption.
#
#   scripts/reproduction.sh [RUNS_DIR]     # default runs/reproduction
#   python -m vqjax.report RUNS_DIR/* --out=docs/reproduction
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/reproduction}"
python="${PYTHON:-.venv/bin/python}"
test -d data/photo_corpus/train || { echo "no photo corpus: run scripts/photo_corpus.sh first" >&2; exit 1; }

sweep() { "$python" -m vqjax.sweep "$@"; }
sweep --config=configs/reproduction.py:hierarchical --sweep=configs/sweeps/figure1.py \
    --workdir="$runs/figure1" --seeds=0,1,2
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/table1.py \
    --workdir="$runs/table1_single" --seeds=0,1 --members=D8_K1024,D8_K2048,D8_K4096,D8_K8192
sweep --config=configs/reproduction.py:hierarchical --sweep=configs/sweeps/table1.py \
    --workdir="$runs/table1_hierarchical" --seeds=0,1 --members=D8_2x512,D8_2x1024,D8_2x2048,D8_2x4096
sweep --config=configs/reproduction.py:single --sweep=configs/sweeps/figure2.py \
    --workdir="$runs/figure2" --seeds=0
