"""docs/HQVAE.md's table, figure and copied metrics from the HQ-VAE sweep's run dirs.

  PYTHONPATH=. python scripts/hqvae_report.py runs/hqvae docs/hqvae

Reads RUNS/<member>/seed<s>/eval/metrics.json and the TensorBoard event files
(vqjax.writers.read_scalars, no TensorFlow), and writes OUT/metrics/<member>_seed<s>.json,
OUT/training_<member>_seed<s>.json (the logged scalars we plot), OUT/table.md
and OUT/self_annealing.png (s_l^2 and mean posterior entropy per layer over
training, stochastic members).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vqjax.report import fmt_values as fmt  # noqa: E402
from vqjax.writers import read_scalars  # noqa: E402

ORDER = ["vqvae2_K16", "sqvae2_K16", "vqvae2_K128", "sqvae2_K128",
         "rqvae_noreset", "rqvae_reset", "rsqvae",
         "rqvae_noreset_shared", "rqvae_reset_shared", "rsqvae_shared"]


def main(runs: str, out: str) -> None:
  os.makedirs(os.path.join(out, "metrics"), exist_ok=True)
  rows, curves = [], {}
  for member in ORDER:
    results = []
    for seed_dir in sorted(glob.glob(os.path.join(runs, member, "seed*"))):
      path = os.path.join(seed_dir, "eval", "metrics.json")
      if not os.path.exists(path):
        continue
      tag = f"{member}_{os.path.basename(seed_dir)}"
      shutil.copy(path, os.path.join(out, "metrics", f"{tag}.json"))
      with open(path) as f:
        results.append(json.load(f))
      scalars = read_scalars(seed_dir)
      keep = {k: v for k, v in scalars.items()
              if k.split("/")[-1] in ("variance", "entropy", "temperature", "loss", "psnr",
                                      "perplexity", "perplexity_soft", "lr_scale")}
      with open(os.path.join(out, "metrics", f"training_{tag}.json"), "w") as f:
        json.dump(keep, f)
      curves[tag] = keep
    if not results:
      rows.append(f"| {member} | 0 | — | — | — | — | — |")
      continue
    psnr = [r["psnr"]["mean"] for r in results]
    rmse = [100 * np.sqrt(r["mse"]["mean"]) for r in results]
    ssim = [r["ssim"]["mean"] for r in results]
    ppl = " / ".join(fmt([r["levels"][n]["perplexity"] for r in results], 1)
                     for n in results[0]["levels"])
    soft = " / ".join(fmt([r["levels"][n]["perplexity_soft"] for r in results], 1)
                      if "perplexity_soft" in results[0]["levels"][n] else "—"
                      for n in results[0]["levels"])
    rows.append(f"| {member} | {len(results)} | {fmt(psnr)} | {fmt(rmse)} | {fmt(ssim, 3)} "
                f"| {ppl} | {soft} |")
  header = ("| member | seeds | PSNR dB | RMSE x 10^2 | SSIM | hard perplexity layer_1 / layer_2 "
            "| soft perplexity layer_1 / layer_2 |\n|---|---|---|---|---|---|---|")
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(header + "\n" + "\n".join(rows) + "\n")
  print(header + "\n" + "\n".join(rows))
  plot(curves, os.path.join(out, "self_annealing.png"))


def plot(curves: dict, path: str) -> None:
  sq = {t: c for t, c in curves.items() if any(k.endswith("/variance") for k in c)}
  if not sq:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for i, (tag, c) in enumerate(sorted(sq.items())):
    color = f"C{i}"
    for layer, style in (("layer_1", "-"), ("layer_2", "--")):
      for ax, key in zip(axes, ("variance", "entropy")):
        points = c.get(f"{layer}/{key}")
        if points:
          steps, values = zip(*points)
          ax.plot(steps, values, style, color=color,
                  label=f"{tag} {layer}" if key == "variance" else None)
  axes[0].set(title="s_l^2 (training log, mean over 20 steps)", xlabel="step",
              ylabel="s^2", yscale="log")
  axes[1].set(title="mean posterior entropy per position (nats)", xlabel="step",
              ylabel="H(P(k | z))")
  axes[0].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
