"""docs/REPRODUCTION.md's headline figure: single-level vs hierarchical per budget.

  .venv/bin/python scripts/table1_figure.py [RUNS_DIR] [OUT_PNG]
  # defaults: docs/reproduction/runs, docs/reproduction/table1/single_vs_hierarchical.png

Table 1's D = 8 rows from the finished runs RUNS/table1{,_1200steps,_4800steps}_{single,
hierarchical}/D8_*/seed<s> (vqjax.experiments.run_results.table1_pairs): left, the validation PSNR
of every run (one point per seed, a line through the seed means); right, the
single-level minus hierarchical PSNR of every seed pair beside the paper's Table 1
(its hierarchical model is ahead in every D = 8 row). Variants without runs are skipped.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vqjax import plots  # noqa: E402  pylint: disable=g-import-not-at-top
from vqjax.experiments import run_results  # noqa: E402  pylint: disable=g-import-not-at-top

# The paper's Table 1, D = 8 rows: K_s -> (single-level, hierarchical) PSNR (dB),
# ImageNet 256x256, 300 epochs.
PAPER_TABLE1 = {1024: (34.1, 34.5), 2048: (34.5, 34.9), 4096: (35.0, 35.4),
                8192: (35.3, 35.8)}
# (runs name, label, marker fill: full, none or light): the 300-step runs, the longer ones.
VARIANTS = (("table1", "300 steps", "full"), ("table1_1200steps", "1,200 steps", "none"),
            ("table1_4800steps", "4,800 steps", "light"))
SIDES = (("single", "single-level", "C0", "o"), ("hierarchical", "hierarchical", "C1", "s"))


def psnr_by_variant(runs: str) -> dict[str, dict[tuple[int, int], dict[str, float]]]:
  """{variant name: {(K_s, seed): {side: PSNR}}} of the variants that have finished runs."""
  out = {}
  for name, _, _ in VARIANTS:
    pairs = run_results.table1_pairs(runs, name)
    if pairs:
      out[name] = {key: {side: m["psnr"]["mean"] for side, m in sides.items()}
                   for key, sides in pairs.items()}
  return out


def fill_colour(colour: str, fill: str):
  """The marker face of a variant: the colour, white, or a light tint of it."""
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  rgb = np.array(colors.to_rgb(colour))
  return {"full": colour, "none": "white", "light": tuple(0.35 * rgb + 0.65)}[fill]


def draw(runs: str, path: str) -> None:
  data = psnr_by_variant(runs)
  budgets = sorted(PAPER_TABLE1)
  x_of = {k: i for i, k in enumerate(budgets)}
  fig, (left, right) = plots.new_figure(13, 6.2, ncols=2)
  for v, (name, label, filled) in enumerate(VARIANTS):
    if name not in data:
      continue
    style = dict(ls=("-", "--", ":")[v], lw=1.2)
    for s, (side, side_label, colour, marker) in enumerate(SIDES):
      points = [(k, seed, p[side]) for (k, seed), p in data[name].items() if side in p]
      face = fill_colour(colour, filled)
      left.scatter([x_of[k] + 0.06 * (2 * s - 1) + 0.03 * seed for k, seed, _ in points],
                   [p for _, _, p in points], marker=marker, s=36, facecolors=face,
                   edgecolors=colour, zorder=3, label=f"{side_label}, {label}")
      means = {k: np.mean([p for kk, _, p in points if kk == k]) for k, _, _ in points}
      ks = sorted(means)
      left.scatter([x_of[k] + 0.06 * (2 * s - 1) for k in ks], [means[k] for k in ks],
                   marker="_", s=200, color=colour, zorder=2)
      for a, b in zip(ks, ks[1:]):  # the seed means, joined between neighbouring budgets
        if x_of[b] == x_of[a] + 1:
          left.plot([x_of[a] + 0.06 * (2 * s - 1), x_of[b] + 0.06 * (2 * s - 1)],
                    [means[a], means[b]], color=colour, **style)
    gaps = [(k, seed, p["single"] - p["hierarchical"]) for (k, seed), p in data[name].items()
            if len(p) == 2]
    right.scatter([x_of[k] - 0.1 + 0.1 * v + 0.03 * seed for k, seed, _ in gaps],
                  [g for _, _, g in gaps], marker="o", s=36, color="C2",
                  facecolors=fill_colour("C2", filled), zorder=3,
                  label=f"here, {label} (one point per seed pair)")
  right.scatter([x_of[k] + 0.25 for k in budgets],
                [PAPER_TABLE1[k][0] - PAPER_TABLE1[k][1] for k in budgets], marker="x",
                s=60, color="black", zorder=3,
                label="paper, Table 1 (ImageNet 256x256, 300 epochs)")
  right.axhline(0, color="grey", lw=0.8)
  ticks = [f"K_s {k}\nvs 2 x {k // 2}" for k in budgets]
  left.set(title="Validation PSNR (64x64 crops of the photo corpus)",
           ylabel="PSNR (dB), mean over the 400 crops", xlabel="budget (D = 8)")
  right.set(title="Single-level minus hierarchical PSNR",
            ylabel="single - hierarchical (dB); > 0: single better", xlabel="budget (D = 8)")
  for ax in (left, right):
    ax.set_xticks(range(len(budgets)), ticks)
    ax.grid(alpha=0.3)
  for ax in (left, right):
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2,
              frameon=False)
  fig.suptitle("Table 1, D = 8: single-level vs hierarchical at matched budgets, here "
               "(points: seeds; bars: seed means) and in the paper", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, format="png")
  print(f"wrote {path}")


if __name__ == "__main__":
  args = sys.argv[1:] + [None, None]
  draw(args[0] or "docs/reproduction/runs",
       args[1] or "docs/reproduction/table1/single_vs_hierarchical.png")
