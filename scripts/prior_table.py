"""The table of scripts/prior_experiment.sh: one row per finished prior.

  python scripts/prior_table.py RUNS_DIR > RUNS_DIR/TABLE.md

Reads RUNS_DIR/priors/<arch>/<member>/<seed>/eval/metrics.json (vqjax.prior)
and the tokenizer's RUNS_DIR/tokenizers/<arch>/<member>/<seed>/eval/metrics.json
(validation PSNR); files only, no vqjax import. Unfinished priors are listed
as such.
"""

import glob
import json
import os
import sys


def rows(runs: str) -> list[str]:
  out = []
  for prior in sorted(glob.glob(os.path.join(runs, "priors", "*", "*", "seed*"))):
    arch, member, seed = prior.split(os.sep)[-3:]
    tokenizer = os.path.join(runs, "tokenizers", arch, member, seed, "eval", "metrics.json")
    psnr = "?"
    if os.path.exists(tokenizer):
      with open(tokenizer) as f:
        psnr = f"{json.load(f)['psnr']['mean']:.2f}"
    path = os.path.join(prior, "eval", "metrics.json")
    if not os.path.exists(path):
      out.append(f"| {arch} | {member} | {seed} | {psnr} | unfinished | | | | |")
      continue
    with open(path) as f:
      m = json.load(f)
    levels = " + ".join(f"{v['num_tokens']} x K={v['codebook_size']}"
                        for v in m["levels"].values())
    out.append(
        f"| {arch} | {member} | {seed} | {psnr} | {levels} | {m['nll_bits_per_image']:.1f} | "
        f"{m['bits_per_code']:.3f} | {m['unigram_validation_bits_per_code']:.3f} | "
        f"{m['uniform_bits_per_image']:.0f} |")
  return out


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__.strip(), file=sys.stderr)
    return 2
  print("| codes | member | seed | tokenizer PSNR (dB) | tokens per image | prior bits per "
        "image | prior bits per code | unigram bits per code (validation) | uniform bits "
        "per image |")
  print("|---|---|---|---|---|---|---|---|---|")
  for row in rows(argv[1]):
    print(row)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
