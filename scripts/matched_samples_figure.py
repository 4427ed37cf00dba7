"""The priors' decoded samples of scripts/matched_experiment.sh side by side.

  python scripts/matched_samples_figure.py RUNS_DIR OUT.png [--seed=0] [--prior=0]

One row per budget (Table 1's K_s = 2048 and 8192), single-level samples on the
left, hierarchical on the right: each prior's samples/samples.png (16 samples
decoded by its tokenizer), tokenizer seed --seed, prior seed --prior, titled with
the prior's validation bits per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vqjax import plots  # noqa: E402  pylint: disable=wrong-import-position

PAIRS = ((2048, "D8_K2048", "D8_2x1024"), (8192, "D8_K8192", "D8_2x4096"))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("runs")
  parser.add_argument("out")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--prior", type=int, default=0)
  args = parser.parse_args(argv[1:])
  fig, _ = plots.new_figure(9.0, 4.6 * len(PAIRS) / 2 + 0.4, 1)
  fig.clear()
  for row, (budget, *members) in enumerate(PAIRS):
    for col, member in enumerate(members):
      arch = "single" if col == 0 else "hierarchical"
      prior = os.path.join(args.runs, "priors", arch, member, f"seed{args.seed}",
                           f"prior{args.prior}")
      ax = fig.add_subplot(len(PAIRS), 2, 2 * row + col + 1)
      ax.set_xticks([])
      ax.set_yticks([])
      grid = os.path.join(prior, "samples", "samples.png")
      metrics = os.path.join(prior, "eval", "metrics.json")
      if not (os.path.exists(grid) and os.path.exists(metrics)):
        ax.set_title(f"{member}: not run", fontsize=9)
        continue
      with open(metrics) as f:
        bits = json.load(f)["nll_bits_per_image"]
      ax.imshow(np.asarray(Image.open(grid).convert("RGB")), interpolation="nearest")
      ax.set_title(f"K_s = {budget}, {arch} ({member}): {bits:,.0f} bits/image", fontsize=9)
  fig.suptitle(f"prior samples decoded by their tokenizers (tokenizer seed {args.seed}, "
               f"prior seed {args.prior})", fontsize=10)
  fig.tight_layout()
  plots.make_parent_dir(args.out)
  fig.savefig(args.out)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
