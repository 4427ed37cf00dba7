#!/usr/bin/env bash
# The measurements of docs/SEMANTICIST.md ("Measured at CPU scale"): SEMANTICIST
# with continuous and with FSQ tokens (configs/semanticist/cpu.py) and the 2D
# VQ-VAEs beside them at comparable bits (configs/semanticist/baselines.py), two
# training seeds each, then the first-k curves (scripts/semanticist_curves.py).
#
#   scripts/semanticist_experiment.sh [RUNS_DIR]     # default runs/semanticist_experiment
#
# Two lanes side by side, one per core where taskset and 2+ cores exist; a member
# with eval/metrics.json is skipped, an unfinished one resumes from its checkpoints.
# About 1.5 h of a 2-core machine (measured 2026-12-04: a SEMANTICIST run 15 min on
# one core, 2,000 steps at 2.3 steps/s and its evaluation; a 2D baseline 3 min; then
# the curves, one per core, 30 min: 11 DDIM decodes of 400 images (KS) per run and
# sampler seed, each with its PSNR, EV and LPIPS).
# Then: docs/semanticist/{continuous,fsq}/{curves.json,first_k.png,bits.png} and the
# runs' metrics in docs/semanticist/runs (scripts/collect_runs.py).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/semanticist_experiment}"
ks="${KS:-0,1,2,3,4,6,8,12,16,24,32}"   # the first-k ladder of the curves
python="${PYTHON:-.venv/bin/python}"
test -d data/photo_corpus/train || { echo "no photo corpus: run scripts/photo_corpus.sh first" >&2; exit 1; }
mkdir -p "$runs"

member() {  # NAME CONFIG SEED
  local dir="$runs/$1/seed$3"
  if [[ -f "$dir/eval/metrics.json" ]]; then echo "skip $dir (finished)"; return; fi
  echo "train $dir ($(date -u +%H:%M))"
  "$python" -m vqjax.main --config="$2" --workdir="$dir" --config.seed="$3"
}
baselines() {  # NAME...: the 2D runs of configs/semanticist/baselines.py, seeds 0 and 1
  for name in "$@"; do
    for seed in 0 1; do member "$name" "configs/semanticist/baselines.py:$name" "$seed"; done
  done
}
lane_tokens() {      # ~48 min of one core
  for seed in 0 1; do member semanticist configs/semanticist/cpu.py "$seed"; done
  baselines vq_k32 mgvq_g2
}
lane_quantized() {   # ~48 min of one core
  for seed in 0 1; do member semanticist_fsq configs/semanticist/cpu.py:quantizer=fsq "$seed"; done
  baselines mgvq_g4
}
pin=0
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then pin=1; fi
core=0
for lane in tokens quantized; do
  (if (( pin )); then taskset -pc "$core" "$BASHPID" >/dev/null; fi
   "lane_$lane") > "$runs/lane_$lane.log" 2>&1 &
  core=$((core + 1))
done
echo "two lanes started (logs: $runs/lane_tokens.log, $runs/lane_quantized.log)"
wait -n; wait -n

out=docs/semanticist
(if (( pin )); then taskset -pc 0 "$BASHPID" >/dev/null; fi
 "$python" scripts/semanticist_curves.py "$runs"/semanticist/seed{0,1} --out="$out/continuous" \
     --seeds=0,1 --ks="$ks") > "$runs/curves_continuous.log" 2>&1 &
(if (( pin )); then taskset -pc 1 "$BASHPID" >/dev/null; fi
 "$python" scripts/semanticist_curves.py "$runs"/semanticist_fsq/seed{0,1} --out="$out/fsq" \
     --seeds=0,1 --ks="$ks" \
     $(for d in "$runs"/{vq_k32,mgvq_g2,mgvq_g4}/seed*; do echo "--compare=$d"; done)
) > "$runs/curves_fsq.log" 2>&1 &
wait -n; wait -n
"$python" scripts/collect_runs.py "$runs" "$out/runs"
