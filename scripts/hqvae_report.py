"""docs/HQVAE.md's table, figure and copied metrics from the HQ-VAE sweep's run dirs.

  PYTHONPATH=. python scripts/hqvae_report.py runs/hqvae docs/hqvae
  PYTHONPATH=. python scripts/hqvae_report.py --table docs/hqvae   # table.md from OUT/metrics

Reads RUNS/<member>/seed<s>/eval/metrics.json and the TensorBoard event files
(vqjax.writers.read_scalars, no TensorFlow), and writes OUT/metrics/<member>_seed<s>.json,
OUT/metrics/training_<member>_seed<s>.json (the logged scalars we plot), OUT/table.md
(from the copied metrics alone)
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

from vqjax.experiments.report import fmt_values as fmt  # noqa: E402
from vqjax.writers import read_scalars  # noqa: E402

ORDER = ["vqvae2_K16", "sqvae2_K16", "vqvae2_K128", "sqvae2_K128",
         "rqvae_noreset", "rqvae_reset", "rsqvae",
         "rqvae_noreset_shared", "rqvae_reset_shared", "rsqvae_shared"]


def main(runs: str, out: str) -> None:
  """Copies the runs' metrics into OUT/metrics, then writes the table and the figure."""
  os.makedirs(os.path.join(out, "metrics"), exist_ok=True)
  curves = {}
  for member in ORDER:
    for seed_dir in sorted(glob.glob(os.path.join(runs, member, "seed*"))):
      path = os.path.join(seed_dir, "eval", "metrics.json")
      if not os.path.exists(path):
        continue
      tag = f"{member}_{os.path.basename(seed_dir)}"
      shutil.copy(path, os.path.join(out, "metrics", f"{tag}.json"))
      scalars = read_scalars(seed_dir)
      keep = {k: v for k, v in scalars.items()
              if k.startswith("plateau/")
              or k.split("/")[-1] in ("variance", "entropy", "temperature", "loss", "psnr",
                                      "perplexity", "perplexity_soft", "lr_scale")}
      with open(os.path.join(out, "metrics", f"training_{tag}.json"), "w") as f:
        json.dump(keep, f)
      curves[tag] = keep
  print(write_table(out))
  plot(curves, os.path.join(out, "self_annealing.png"))


def write_table(out: str) -> str:
  """OUT/table.md from the metrics copies OUT/metrics/<member>_seed<s>.json alone (so
  `--table OUT` redraws it from the committed files)."""
  rows, seed_rows, all_seeds = [], [], set()
  per_member = {}
  for member in ORDER:
    found = {}
    for path in glob.glob(os.path.join(out, "metrics", f"{member}_seed*.json")):
      seed = os.path.basename(path)[len(member) + len("_seed"):-len(".json")]
      if seed.isdigit():
        with open(path) as f:
          found[int(seed)] = json.load(f)
    per_member[member] = dict(sorted(found.items()))
    all_seeds |= set(found)
  seeds = sorted(all_seeds)
  for member, by_seed in per_member.items():
    results = list(by_seed.values())
    if not results:
      rows.append(f"| {member} | 0 | — | — | — | — | — |")
      continue
    psnr = [r["psnr"]["mean"] for r in results]
    seed_rows.append(f"| {member} | " + " | ".join(
        f"{by_seed[s]['psnr']['mean']:.2f}" if s in by_seed else "—" for s in seeds)
        + f" | {fmt(psnr)} |")
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
  per_seed = ("| member | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |\n"
              + "|---" * (len(seeds) + 2) + "|\n" + "\n".join(seed_rows))
  text = header + "\n" + "\n".join(rows) + "\n\nValidation PSNR dB per seed:\n\n" + per_seed + "\n"
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(text)
  return text


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
  if sys.argv[1] == "--table":
    print(write_table(sys.argv[2]))
  else:
    main(sys.argv[1], sys.argv[2])
