"""docs/HQVAE.md's table, figure and copied metrics from the HQ-VAE sweep's run dirs.

  PYTHONPATH=. python scripts/hqvae_report.py runs/hqvae docs/hqvae

Reads RUNS/<member>/seed<s>/eval/metrics.json and the TensorBoard event files
(vqjax.writers.read_scalars, no TensorFlow), and writes OUT/metrics/<member>_seed<s>.json,
OUT/training_<member>_seed<s>.json (the logged scalars we plot), OUT/table.md
and OUT/self_annealing.png (per stochastic member, the mean over seeds with
the seeds' range shaded: s_l^2 and mean posterior entropy per layer over
training, and validation PSNR at each evaluation for every member).
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
  rows, seed_rows, curves = [], [], {}
  for member in ORDER:
    results, seeds = [], []
    for seed_dir in sorted(glob.glob(os.path.join(runs, member, "seed*"))):
      path = os.path.join(seed_dir, "eval", "metrics.json")
      if not os.path.exists(path):
        continue
      tag = f"{member}_{os.path.basename(seed_dir)}"
      shutil.copy(path, os.path.join(out, "metrics", f"{tag}.json"))
      with open(path) as f:
        results.append(json.load(f))
      seeds.append(os.path.basename(seed_dir))
      scalars = read_scalars(seed_dir)
      keep = {k: v for k, v in scalars.items()
              if k.startswith("plateau/")
              or k.split("/")[-1] in ("variance", "entropy", "temperature", "loss", "psnr",
                                      "perplexity", "perplexity_soft", "lr_scale")}
      with open(os.path.join(out, "metrics", f"training_{tag}.json"), "w") as f:
        json.dump(keep, f)
      curves[tag] = keep
    if not results:
      rows.append(f"| {member} | 0 | — | — | — | — | — |")
      continue
    psnr = [r["psnr"]["mean"] for r in results]
    seed_rows.append(f"| {member} | " + " | ".join(
        f"{seed}: {p:.2f}" for seed, p in zip(seeds, psnr)) + f" | {fmt(psnr)} |")
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
  per_seed = ("| member | validation PSNR dB per seed | mean ± std |\n|---|---|---|\n"
              + "\n".join(seed_rows))
  text = header + "\n" + "\n".join(rows) + "\n\n" + per_seed + "\n"
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(text)
  print(text)
  plot(curves, os.path.join(out, "self_annealing.png"))


def member_curves(curves: dict, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{member: (steps [T], values [seeds, T])} of `key`, seeds cut to the shortest run."""
  by_member: dict[str, list] = {}
  for tag, c in sorted(curves.items()):
    if c.get(key):
      by_member.setdefault(tag.rsplit("_seed", 1)[0], []).append(c[key])
  out = {}
  for member, runs in by_member.items():
    n = min(len(r) for r in runs)
    out[member] = (np.array([s for s, _ in runs[0][:n]]),
                   np.array([[v for _, v in r[:n]] for r in runs]))
  return out


def plot(curves: dict, path: str) -> None:
  sq = [m for m in ORDER if any(t.startswith(m + "_seed") and any(
      k.endswith("/variance") for k in c) for t, c in curves.items())]
  if not sq:
    return
  colors = {m: f"C{i}" for i, m in enumerate(ORDER)}  # one colour per member in every panel
  fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
  for member in sq:
    for layer, style in (("layer_1", "-"), ("layer_2", "--")):
      for ax, key in zip(axes[:2], ("variance", "entropy")):
        got = member_curves(curves, f"{layer}/{key}").get(member)
        if got is None:
          continue
        steps, values = got
        label = f"{member} {layer}" if key == "variance" else None
        ax.plot(steps, values.mean(0), style, color=colors[member], label=label)
        if len(values) > 1:
          ax.fill_between(steps, values.min(0), values.max(0), color=colors[member],
                          alpha=0.15)
  for i, member in enumerate(ORDER):
    got = member_curves(curves, "eval/psnr").get(member)
    if got is None:
      continue
    steps, values = got
    axes[2].errorbar(steps + (i - len(ORDER) / 2) * 1.5, values.mean(0),
                     yerr=values.std(0, ddof=1) if len(values) > 1 else None,
                     fmt="o-" if member in sq else "s--", color=colors[member], ms=4,
                     capsize=2, label=member)
  seeds = max(len(v[1]) for v in member_curves(curves, "eval/psnr").values())
  axes[0].set(title="s_l^2 (training log, mean over 20 steps)", xlabel="step", ylabel="s^2")
  axes[1].set(title="mean posterior entropy per position", xlabel="step",
              ylabel="H(P(k | z)) (nats)")
  axes[2].set(title="validation PSNR at each evaluation", xlabel="step",
              ylabel="PSNR dB (deterministic codes)")
  axes[0].legend(fontsize=7, title="solid: layer_1 (top), dashed: layer_2", title_fontsize=7)
  axes[2].legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                 title="circles, solid: SQ; squares, dashed: EMA VQ (mean ± std)",
                 title_fontsize=7)
  fig.suptitle(f"HQ-VAE at CPU scale, {seeds} seeds: lines are means over seeds; "
               "shading (left, middle) is the seeds' range", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
