#!/usr/bin/env bash
# The downstream experiment of docs/PRIOR.md (not run yet): at Table 1's
# matched budgets, which codes does an autoregressive prior model better, the
# single-level ones (K_s codes, 16x16 per 64x64 crop) or the hierarchical ones
# (2 x K_s/2 codes, 8x8 top + 16x16 bottom)? For each of Table 1's D = 8 pairs
# (K_s = 1024 .. 8192) and each seed in $SEEDS (default 0):
#
#   1. the tokenizer, trained as scripts/reproduction.sh trains Table 1's
#      members (configs/reproduction.py, 300 steps, the photo corpus), in its
#      own runs directory (the committed reproduction runs have no checkpoints);
#   2. its codes of the 1,604 non-overlapping 64x64 crops of the training
#      photos (cut once into data/photo_corpus/train_crops) and of the 400
#      validation crops (--mode=encode);
#   3. a prior on those codes (configs/prior.py: 4 layers, width 128, 2,000
#      steps of batch 32), evaluated (bits per image, bits per code against the
#      unigram baseline) and sampled (16 decoded images);
#   4. RUNS_DIR/TABLE.md from every finished prior (scripts/prior_table.py).
#
# Resumable: trained tokenizers are skipped by the sweep, existing codes files
# are kept, finished priors (eval/metrics.json) are skipped, unfinished ones
# resume from their checkpoints.
#
#   scripts/prior_experiment.sh [RUNS_DIR]     # default runs/prior_experiment
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/prior_experiment}"
python="${PYTHON:-.venv/bin/python}"
seeds="${SEEDS:-0}"
test -d data/photo_corpus/train || { echo "no photo corpus: run scripts/photo_corpus.sh first" >&2; exit 1; }
crops=data/photo_corpus/train_crops
if [[ ! -d "$crops" ]]; then
  "$python" -c "import sys; sys.path.insert(0, 'scripts'); import photo_corpus; \
photo_corpus.write_val_crops('data/photo_corpus/train', '$crops', 64)"
fi
mkdir -p "$runs"

members_single=D8_K1024,D8_K2048,D8_K4096,D8_K8192
members_hierarchical=D8_2x512,D8_2x1024,D8_2x2048,D8_2x4096
for arch in single hierarchical; do
  members="members_$arch"
  "$python" -m vqjax.experiments.sweep --config=configs/reproduction.py:"$arch" \
      --sweep=configs/sweeps/table1.py --workdir="$runs/tokenizers/$arch" \
      --seeds="$seeds" --members="${!members}"
done

for tokenizer in "$runs"/tokenizers/*/*/seed*; do
  arch=$(basename "$(dirname "$(dirname "$tokenizer")")")
  member=$(basename "$(dirname "$tokenizer")")
  seed=$(basename "$tokenizer")
  config="configs/reproduction.py:$arch"
  if [[ ! -f "$tokenizer/codes/train.array_record" ]]; then
    "$python" -m vqjax.main --config="$config" --workdir="$tokenizer" --mode=encode \
        --config.encode.split=train --config.data.train_dir="$crops"
  fi
  if [[ ! -f "$tokenizer/codes/validation.array_record" ]]; then
    "$python" -m vqjax.main --config="$config" --workdir="$tokenizer" --mode=encode \
        --config.encode.split=validation
  fi
  prior="$runs/priors/$arch/$member/$seed"
  if [[ ! -f "$prior/eval/metrics.json" ]]; then
    "$python" -m vqjax.main --config=configs/prior.py --workdir="$prior" \
        --config.prior.codes="$tokenizer/codes/train.array_record" \
        --config.prior.tokenizer="$tokenizer" --config.seed="${seed#seed}"
  fi
done
"$python" scripts/prior_table.py "$runs" > "$runs/TABLE.md"
cat "$runs/TABLE.md"
