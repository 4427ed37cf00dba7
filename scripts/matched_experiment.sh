#!/usr/bin/env bash
# The matched-budget experiments of docs/PERCEPTUAL.md and docs/PRIOR.md: Table 1's
# D = 8 pairs at K_s = 2048 and 8192 (single K_s codes vs hierarchical 2 x K_s/2,
# Eq. 5), 2 seeds, configs/reproduction.py (300 steps of batch 32, 64x64 crops of
# the photo corpus), for one architecture per call (run the two side by side,
# one per core):
#
#   taskset -c 0 scripts/matched_experiment.sh single       [RUNS_DIR]
#   taskset -c 1 scripts/matched_experiment.sh hierarchical [RUNS_DIR]
#   python scripts/matched_table.py RUNS_DIR perceptual|prior [--splice=DOC]   # the tables
#
# Stages, each resumable (finished runs are skipped, unfinished ones resume):
#   1. pixel   tokenizers trained on the MSE only (the reproduction's runs),
#              evaluated with PSNR, SSIM, LPIPS (AlexNet) and the FID stand-in
#              (Frechet distance of LPIPS-AlexNet pooled features, `lpips_alex`);
#   2. codes   of the 1,604 non-overlapping 64x64 training crops and the 400
#              validation crops of every pixel tokenizer (--mode=encode);
#   3. priors  configs/prior.py at CPU size (2 layers, width 96, batch 16, Adam
#              1e-3 with warm-up and cosine decay, PRIOR_STEPS = 400 steps, about
#              4 epochs of the codes), seeds PRIOR_SEEDS (0 1), on each pixel
#              tokenizer's codes: bits per image, PRIOR_SAMPLES (16) decoded
#              samples, and with PRIOR_FID=lpips_alex (and PRIOR_SAMPLES of a few
#              hundred) their Frechet distance to the validation crops;
#   4. perceptual  the same tokenizers trained with MSE + LPIPS (weight 0.1) and,
#              from step 150, a PatchGAN (hinge, VQGAN's adaptive weight x 0.5),
#              as configs/perceptual.py sets them, evaluated as in 1.
# STAGES (default "pixel codes priors perceptual") picks stages; SEEDS (0,1);
# MEMBERS (default: both budgets) picks members of the architecture by name, e.g.
# MEMBERS=D8_K8192 for the single-level side at K_s = 8192 only.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/matched_experiment.sh single|hierarchical [RUNS_DIR]}
runs="${2:-runs/matched}"
python="${PYTHON:-.venv/bin/python}"
seeds="${SEEDS:-0,1}"
prior_seeds="${PRIOR_SEEDS:-0 1}"
prior_steps="${PRIOR_STEPS:-400}"
prior_samples="${PRIOR_SAMPLES:-16}"
prior_fid="${PRIOR_FID:-}"
stages="${STAGES:-pixel codes priors perceptual}"
test -d data/photo_corpus/train || { echo "no photo corpus: run scripts/photo_corpus.sh first" >&2; exit 1; }
case "$arch" in
  single) members=(D8_K2048 D8_K8192); codes=(2048 8192) ;;
  hierarchical) members=(D8_2x1024 D8_2x4096); codes=(1024 4096) ;;
  *) echo "error: architecture '$arch'; use single or hierarchical" >&2; exit 2 ;;
esac
if [[ -n "${MEMBERS:-}" ]]; then
  picked=(); picked_codes=()
  for i in "${!members[@]}"; do
    if [[ ",$MEMBERS," == *",${members[$i]},"* ]]; then
      picked+=("${members[$i]}"); picked_codes+=("${codes[$i]}")
    fi
  done
  if (( ${#picked[@]} == 0 )); then
    echo "error: MEMBERS=$MEMBERS names no $arch member; use ${members[*]}" >&2; exit 2
  fi
  members=("${picked[@]}"); codes=("${picked_codes[@]}")
fi
config="configs/reproduction.py:$arch"
fid=(--config.eval.fid=lpips_alex)
perceptual=(--config.loss.lpips_weight=0.1 --config.loss.gan_weight=0.5
            --config.loss.gan_loss=hinge --config.loss.gan_start_step=150
            --config.loss.adaptive_weight=True --config.loss.disc_channels=32
            --config.loss.disc_layers=2 --config.loss.disc_learning_rate=3e-4)
has() { [[ " $stages " == *" $1 "* ]]; }

# evaluate CONDITION [overrides...]: the FID stand-in for runs trained without it.
evaluate() {
  local condition=$1; shift
  for i in "${!members[@]}"; do
    for seed in ${seeds//,/ }; do
      local run="$runs/$condition/$arch/${members[$i]}/seed$seed"
      [[ -f "$run/eval/metrics.json" ]] || continue
      grep -q '"fid_' "$run/eval/metrics.json" && continue
      "$python" -m vqjax.main --config="$config" --workdir="$run" --mode=eval \
          --config.model.num_codes="${codes[$i]}" --config.model.code_dim=8 \
          --config.seed="$seed" "${fid[@]}" "$@"
    done
  done
}

IFS=, ; member_list="${members[*]}"; unset IFS
if has pixel; then
  "$python" -m vqjax.experiments.sweep --config="$config" --sweep=configs/sweeps/table1.py \
      --workdir="$runs/pixel/$arch" --seeds="$seeds" --members="$member_list" "${fid[@]}"
  evaluate pixel
fi

crops=data/photo_corpus/train_crops
tokenizers=()
for member in "${members[@]}"; do
  for seed in ${seeds//,/ }; do tokenizers+=("$runs/pixel/$arch/$member/seed$seed"); done
done
if has codes; then
  if [[ ! -d "$crops" ]]; then
    "$python" -c "import sys; sys.path.insert(0, 'scripts'); import photo_corpus; \
photo_corpus.write_val_crops('data/photo_corpus/train', '$crops.tmp', 64)"
    mv "$crops.tmp" "$crops"
  fi
  for tokenizer in "${tokenizers[@]}"; do
    if [[ ! -d "$tokenizer/checkpoints" ]]; then
      echo "error: no tokenizer in $tokenizer: run its pixel stage first (STAGES=pixel)" >&2
      exit 1
    fi
    for split in train validation; do
      [[ -f "$tokenizer/codes/$split.array_record" ]] && continue
      "$python" -m vqjax.main --config="$config" --workdir="$tokenizer" --mode=encode \
          --config.encode.split="$split" --config.data.train_dir="$crops"
    done
  done
fi

if has priors; then
  for prior_seed in $prior_seeds; do
    for tokenizer in "${tokenizers[@]}"; do
      member=$(basename "$(dirname "$tokenizer")")
      prior="$runs/priors/$arch/$member/$(basename "$tokenizer")/prior$prior_seed"
      [[ -f "$prior/eval/metrics.json" ]] && continue
      "$python" -m vqjax.main --config=configs/prior.py --workdir="$prior" \
          --config.prior.codes="$tokenizer/codes/train.array_record" \
          --config.prior.tokenizer="$tokenizer" --config.seed="$prior_seed" \
          --config.train.num_steps="$prior_steps" --config.train.batch_size=16 \
          --config.train.learning_rate=1e-3 --config.prior.num_layers=2 \
          --config.prior.width=96 --config.train.eval_every=0 --config.train.checkpoint_every=200 \
          --config.sample.num_samples="$prior_samples" --config.sample.fid="$prior_fid"
    done
  done
fi

if has perceptual; then
  "$python" -m vqjax.experiments.sweep --config="$config" --sweep=configs/sweeps/table1.py \
      --workdir="$runs/perceptual/$arch" --seeds="$seeds" --members="$member_list" \
      "${fid[@]}" "${perceptual[@]}"
fi
