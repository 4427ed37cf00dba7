"""docs/QUANTIZERS.md's table, figure and copied metrics from the quantizer sweep.

  PYTHONPATH=. python scripts/quantizers_report.py runs/quantizers docs/quantizers

Reads RUNS/<member>/seed<s>/{config.json,eval/metrics.json}, the sweep logs
RUNS/log_<member>_seed<s>.txt (the training loop's last `uptime=` before the
evaluation, and the share of train_step vs data time from its progress line)
and RUNS/walltimes.txt (wall seconds of each member's whole process: start-up,
compilation, training, evaluation; written by the sweep's driver loop). Writes
OUT/metrics/<member>_seed<s>.json, OUT/table.md and OUT/psnr_vs_usage.png.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

import matplotlib
import ml_collections
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from vqjax import capacity, config_lib  # noqa: E402
from vqjax.models import level_quantizers  # noqa: E402
from vqjax.experiments.report import fmt_values as fmt  # noqa: E402

ORDER = ["vq", "vq_rotation", "grouped_g2", "grouped_g2_nodrop", "grouped_g4", "fsq", "lfq",
         "lfq_noentropy", "sq", "sq_var1"]


def budget(model: dict) -> tuple[float, str]:
  """(bits per latent position, how they are counted): the quantizer's own
  bits_per_position (capacity.bits_per_position); config.json of any age."""
  model = config_lib.upgrade_model_config(model)
  q = model["quantizer"]
  bits = capacity.bits_per_position(
      level_quantizers(ml_collections.ConfigDict(model))["codes"])
  if q["kind"] == "grouped":
    g, k = q["num_groups"], model["num_codes"]
    return bits, f"G log2(K/G) = {g} x log2 {k // g}"
  if q["kind"] == "fsq":
    return bits, "sum log2 L_i, L = " + ",".join(map(str, q["levels"]))
  if q["kind"] == "lfq":
    return bits, "D"
  return bits, f"log2 K = log2 {model['num_codes']}"


def timings(runs: str, member: str, seed: int) -> dict:
  """{'wall': s, 'train': s, 'train_step_share': %} from the sweep's logs (absent: missing)."""
  out = {}
  walls = os.path.join(runs, "walltimes.txt")
  if os.path.exists(walls):
    for line in open(walls):
      parts = line.split()
      if parts[:2] == [member, str(seed)] and "rc=0" in line:
        out["wall"] = float(parts[-1].split("=")[1])
  log = os.path.join(runs, f"log_{member}_seed{seed}.txt")
  if os.path.exists(log):
    text = open(log).read()
    head = text.split("eval @ step")[0]
    uptimes = re.findall(r"uptime=([0-9.]+)", head)
    shares = re.findall(r"([0-9.]+)% train_step", head)
    if uptimes:
      out["train"] = float(uptimes[-1])
    if shares:
      out["train_step_share"] = float(shares[-1])
  return out


def used(level: dict) -> float:
  """Bits per position the validation histogram uses: log2 perplexity, summed over
  groups for grouped levels (the sum of the groups' marginal entropies, an upper
  bound of their joint entropy, which is not measured)."""
  if "groups" in level:
    return float(sum(np.log2(g["perplexity"]) for g in level["groups"].values()))
  return float(np.log2(level["perplexity"]))


def main(runs: str, out: str) -> None:
  os.makedirs(os.path.join(out, "metrics"), exist_ok=True)
  rows, points = [], {}
  step_time = {}  # scripts/quantizers_step_time.py, if run
  if os.path.exists(os.path.join(out, "step_time.json")):
    with open(os.path.join(out, "step_time.json")) as f:
      step_time = json.load(f)
  for member in ORDER:
    results, times, model = [], [], None
    for seed_dir in sorted(glob.glob(os.path.join(runs, member, "seed*"))):
      path = os.path.join(seed_dir, "eval", "metrics.json")
      if not os.path.exists(path):
        continue
      seed = int(os.path.basename(seed_dir)[4:])
      shutil.copy(path, os.path.join(out, "metrics", f"{member}_seed{seed}.json"))
      with open(path) as f:
        results.append(json.load(f))
      with open(os.path.join(seed_dir, "config.json")) as f:
        model = json.load(f)["model"]
      times.append(timings(runs, member, seed))
    if not results:
      rows.append(f"| {member} | — | 0 | — | — | — | — | — | — | — | — | — |")
      continue
    bits, how = budget(model)
    ms = f"{1000 * step_time[member]['median_s']:.0f}" if member in step_time else "—"
    level = [r["levels"]["codes"] for r in results]
    psnr = [r["psnr"]["mean"] for r in results]
    usage = [lv["normalized_perplexity"] for lv in level]
    used_bits = [used(lv) for lv in level]
    groups = "—"
    if "groups" in level[0]:
      groups = " / ".join(fmt([lv["groups"][g]["normalized_perplexity"] for lv in level], 3)
                          for g in level[0]["groups"])
    first_k = "—"
    if "psnr_first_k_groups" in results[0]:
      first_k = " / ".join(fmt([r["psnr_first_k_groups"][k]["mean"] for r in results])
                           for k in results[0]["psnr_first_k_groups"])
    rows.append(
        f"| {member} | {model['quantizer']} | {len(results)} | {bits:.2f} ({how}) "
        f"| {fmt(psnr)} | {fmt([r['ssim']['mean'] for r in results], 3)} "
        f"| {fmt(usage, 3)} (K = {level[0]['num_codes']}, unused {fmt([lv['unused_codes'] for lv in level], 0)}) "
        f"| {fmt(used_bits)} | {groups} | {first_k} "
        f"| {fmt([t.get('train') for t in times], 0)} / {fmt([t.get('wall') for t in times], 0)} "
        f"| {ms} |")
    kind = config_lib.upgrade_model_config(model)["quantizer"]["kind"]
    points[member] = (usage, used_bits, psnr, kind)
  header = ("| member | quantizer | seeds | bits / position | PSNR dB | SSIM "
            "| perplexity / K | used bits | per group perplexity / (K/G) "
            "| PSNR first k = 1..G groups | train s / process wall s | ms / step interleaved |"
            "\n|---|---|---|---|---|---|---|---|---|---|---|---|")
  table = header + "\n" + "\n".join(rows) + "\n"
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table)
  print(table)
  plot(points, os.path.join(out, "psnr_vs_usage.png"))


def plot(points: dict, path: str) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4), sharey=True)
  markers = {"ema": "o", "grouped": "s", "fsq": "^", "lfq": "v", "stochastic": "D",
             "learned": "P"}
  for i, (member, (usage, bits, psnr, quantizer)) in enumerate(points.items()):
    for ax, x in zip(axes, (usage, bits)):
      ax.scatter(x, psnr, marker=markers.get(quantizer, "o"), color=f"C{i}", s=45,
                 label=member)
  axes[0].set(xscale="log", xlabel="perplexity / K (log scale)", ylabel="validation PSNR (dB)",
              title="code usage (fraction of the index space)")
  ticks = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
  axes[0].set_xticks(ticks, [f"{t:g}" for t in ticks])
  axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[1].set(xlabel="used bits per position (log2 perplexity; grouped: sum over groups)",
              title="bits used of the 12-bit budget")
  axes[1].axvline(12, color="grey", lw=0.8, ls="--")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.suptitle("12 bits per latent position, single-level model, 32x32 built-in photos, "
               "600 steps (each point one seed)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
