#!/usr/bin/env bash
# Redraws docs/reproduction/{figure1,table1,figure2} from a runs directory of
# scripts/reproduction.sh (files only; re-run any time) and copies the finished
# runs' metrics into docs/reproduction/runs (no checkpoints).
#
#   scripts/reproduction_report.sh [RUNS_DIR]     # default runs/reproduction
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/reproduction}"
python="${PYTHON:-.venv/bin/python}"
out=docs/reproduction
"$python" scripts/collect_runs.py "$runs" "$out/runs"
"$python" -m vqjax.report "$runs/figure1" --out="$out/figure1" --seeds=0,1,2 \
    --sweep=configs/sweeps/figure1.py --config=configs/reproduction.py:hierarchical > /dev/null
"$python" -m vqjax.report "$runs/table1_single" "$runs/table1_hierarchical" \
    --out="$out/table1" --seeds=0,1 > /dev/null
if [[ -d "$runs/figure2" ]]; then
  "$python" -m vqjax.report "$runs/figure2" --out="$out/figure2" --seeds=0 \
      --sweep=configs/sweeps/figure2_below8.py --config=configs/reproduction.py:single > /dev/null
fi
if [[ -d "$runs/table1_1200steps_single" ]]; then
  "$python" -m vqjax.report "$runs/table1_1200steps_single" "$runs/table1_1200steps_hierarchical" \
      --out="$out/table1_1200steps" --seeds=0,1 > /dev/null
fi
echo "wrote $out/{figure1,table1,figure2,table1_1200steps}/REPORT.md"
