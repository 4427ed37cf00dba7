"""The regime-gap curves of scripts/reproduction_long.sh: PSNR gap vs images seen.

  .venv/bin/python scripts/regime_curves.py [RUNS_DIR] [--out=DIR]
  # defaults: runs/reproduction, docs/reproduction/table1_4800steps

For every pair and seed of RUNS/table1_4800steps_{single,hierarchical}/D8_*/seed<s>
(Table 1's K_s = 2048 and 8192 pairs, evaluated every 400 steps) it reads the
validation PSNR of each periodic evaluation (tag `eval/psnr` of the TensorBoard
event files, vqjax.writers.read_scalars; the final evaluation is logged there too;
a committed run without events: its eval/scalars.json of scripts/collect_runs.py)
and writes OUT/regime_curves.json: per pair and seed, per evaluated step, the
images seen (step x batch size), each side's PSNR and the gap (single-level minus
hierarchical; null where a side has no evaluation at that step). Partial runs give
what points they have. Beside them, the final gaps of the same pairs trained 300
and 1,200 steps (RUNS/table1{,_1200steps}_*, finished runs; another learning-rate
schedule: 0.99 per 51 steps). OUT/regime_gap.png draws both: each run's PSNR and
the gap against images seen, one line per pair and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vqjax import plots, writers  # noqa: E402  pylint: disable=g-import-not-at-top
from vqjax.experiments import run_results  # noqa: E402  pylint: disable=g-import-not-at-top

NAME = "table1_4800steps"
TAG = "eval/psnr"
SHORTER = (("table1", "300 steps"), ("table1_1200steps", "1,200 steps"))
SIDES = ("single", "hierarchical")


def eval_curve(run_dir: str) -> dict[int, float]:
  """{step: validation PSNR} of a run's event files (a step logged twice, e.g. by a
  resumed run: the later value), or, for a committed run without them, of its
  eval/scalars.json (scripts/collect_runs.py)."""
  if any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir)):
    return dict(writers.read_scalars(run_dir).get(TAG, []))
  path = os.path.join(run_dir, "eval", "scalars.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {int(step): value for step, value in json.load(f).get(TAG, [])}


def batch_and_steps(run_dir: str) -> tuple[int, int]:
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  return int(config["data"]["batch_size"]), int(config["train"]["num_steps"])


def curves(runs: str) -> dict:
  pairs = []
  for (k_s, seed), dirs in run_results.table1_pair_dirs(runs, NAME).items():
    by_side = {side: eval_curve(path) for side, path in dirs.items()}
    sizes = {batch_and_steps(path) for path in dirs.values()}
    if len(sizes) != 1:
      raise ValueError(f"K_s {k_s} seed {seed}: the two sides' batch sizes or steps differ: "
                       f"{dirs}")
    batch, num_steps = sizes.pop()
    points = []
    for step in sorted(set().union(*by_side.values())):
      psnr = {side: by_side.get(side, {}).get(step) for side in SIDES}
      gap = (psnr["single"] - psnr["hierarchical"]
             if None not in psnr.values() else None)
      points.append({"step": step, "images_seen": step * batch,
                     "psnr_single": psnr["single"], "psnr_hierarchical": psnr["hierarchical"],
                     "gap": gap})
    pairs.append({"K_s": k_s, "K_h": k_s // 2, "seed": seed, "batch_size": batch,
                  "num_steps": num_steps,
                  "runs": {side: os.path.relpath(path, runs) for side, path in dirs.items()},
                  "points": points})
  shorter = []
  for name, label in SHORTER:
    for (k_s, seed), sides in run_results.table1_pairs(runs, name).items():
      if len(sides) == 2 and any(p["K_s"] == k_s for p in pairs):
        steps = sides["single"]["checkpoint_step"]
        shorter.append({"runs": name, "label": label, "K_s": k_s, "seed": seed,
                        "step": steps, "images_seen": steps * pairs[0]["batch_size"],
                        "gap": sides["single"]["psnr"]["mean"]
                        - sides["hierarchical"]["psnr"]["mean"]})
  return {"tag": TAG, "gap": "PSNR single-level minus hierarchical (dB)",
          "pairs": pairs, "shorter_runs": shorter}


def draw(data: dict, path: str) -> None:
  fig, (left, right) = plots.new_figure(13, 5.6, ncols=2)
  colours = {k: f"C{i}" for i, k in enumerate(sorted({p["K_s"] for p in data["pairs"]}))}
  for pair in data["pairs"]:
    colour, marker = colours[pair["K_s"]], "os^v"[pair["seed"] % 4]
    label = f"K_s {pair['K_s']} vs 2 x {pair['K_h']}, seed {pair['seed']}"
    for side, ls in zip(SIDES, ("-", "--")):
      xy = [(p["images_seen"], p[f"psnr_{side}"]) for p in pair["points"]
            if p[f"psnr_{side}"] is not None]
      if xy:
        left.plot(*zip(*xy), ls=ls, marker=marker, ms=4, color=colour,
                  label=f"{label}, {side}")
    xy = [(p["images_seen"], p["gap"]) for p in pair["points"] if p["gap"] is not None]
    if xy:
      right.plot(*zip(*xy), marker=marker, ms=5, color=colour, label=label)
  for s in data["shorter_runs"]:
    right.scatter([s["images_seen"]], [s["gap"]], marker="os^v"[s["seed"] % 4],
                  facecolors="white", edgecolors=colours[s["K_s"]], s=40, zorder=3)
  if data["shorter_runs"]:
    right.scatter([], [], marker="o", facecolors="white", edgecolors="grey",
                  label="final gap of the 300- and 1,200-step runs "
                  "(other LR schedule; marker: seed)")
  if not any(p["gap"] is not None for pair in data["pairs"] for p in pair["points"]):
    right.text(0.5, 0.5, "no step evaluated on both sides yet", ha="center",
               transform=right.transAxes, color="grey")
  right.axhline(0, color="grey", lw=0.8)
  left.set(title="Validation PSNR (solid: single-level, dashed: hierarchical)",
           ylabel="PSNR (dB), 400 validation crops")
  right.set(title="Single-level minus hierarchical PSNR",
            ylabel="single - hierarchical (dB); > 0: single better")
  end = max([p["num_steps"] * p["batch_size"] for p in data["pairs"]]
            + [s["images_seen"] for s in data["shorter_runs"]] + [1])
  for ax in (left, right):
    ax.set_xlim(0, 1.03 * end)
    ax.set_xlabel("images seen (steps x 32; the 1,604 training crops are one epoch)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14),
                ncols=2, frameon=False)
  fig.suptitle("Table 1's pairs trained 4,800 steps in the paper's schedule shape "
               "(the paper: about 384 M ImageNet images seen)", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, format="png")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="?", default="runs/reproduction")
  parser.add_argument("--out", default="docs/reproduction/table1_4800steps")
  args = parser.parse_args(argv)
  data = curves(args.runs)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "regime_curves.json"), "w") as f:
    json.dump(data, f, indent=1)
  draw(data, os.path.join(args.out, "regime_gap.png"))
  points = sum(len(p["points"]) for p in data["pairs"])
  print(f"wrote {args.out}/regime_curves.json, regime_gap.png: {len(data['pairs'])} "
        f"pair-seeds, {points} evaluated steps")


if __name__ == "__main__":
  main()
