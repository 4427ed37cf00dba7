#!/usr/bin/env bash
# Redraws docs/reproduction/{figure1,table1,figure2,table1_*} from a runs directory of
# scripts/reproduction.sh and scripts/reproduction_long.sh (files only; re-run any
# time), copies the finished runs' metrics into docs/reproduction/runs (no
# checkpoints), draws the headline figure (scripts/table1_figure.py) and, once the
# 4,800-step runs exist, their gap curves (scripts/regime_curves.py).
#
#   scripts/reproduction_report.sh [RUNS_DIR]     # default runs/reproduction
#   scripts/reproduction_report.sh docs/reproduction/runs   # the committed runs only
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/reproduction}"
python="${PYTHON:-.venv/bin/python}"
out=docs/reproduction
report() { "$python" -m vqjax.experiments.report "$@" > /dev/null; }
"$python" scripts/collect_runs.py "$runs" "$out/runs"
report "$runs/figure1" --out="$out/figure1" --seeds=0,1,2 \
    --sweep=configs/sweeps/figure1.py --config=configs/reproduction.py:hierarchical
report "$runs/table1_single" "$runs/table1_hierarchical" --out="$out/table1" --seeds=0,1
if [[ -d "$runs/figure2" ]]; then
  report "$runs/figure2" --out="$out/figure2" --seeds=0 \
      --sweep=configs/sweeps/figure2_below8.py --config=configs/reproduction.py:single
fi
# The longer pairs (scripts/reproduction.sh, scripts/reproduction_long.sh), when run.
for variant in 1200steps:0,1 4800steps:0,1 128px:0; do
  name="table1_${variant%%:*}"
  if [[ -d "$runs/${name}_single" || -d "$runs/${name}_hierarchical" ]]; then
    report "$runs/${name}_single" "$runs/${name}_hierarchical" --out="$out/$name" \
        --seeds="${variant#*:}"
    echo "wrote $out/$name/REPORT.md"
  fi
done
"$python" scripts/table1_figure.py "$out/runs" "$out/table1/single_vs_hierarchical.png"
if [[ -d "$runs/table1_4800steps_single" || -d "$runs/table1_4800steps_hierarchical" ]]; then
  "$python" scripts/regime_curves.py "$runs" --out="$out/table1_4800steps"
fi
echo "wrote $out/{figure1,table1,figure2}/REPORT.md"
