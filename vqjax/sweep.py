"""Parameter sweeps: a base config plus a list of overrides, one workdir per run.

A sweep file defines `get_sweep(config) -> list[dict]` (config: the base config), each dict mapping dotted
config keys to values (e.g. {"model.num_codes": 4096, "model.code_dim": 16})
and optionally "name". Run one member (e.g. a SLURM array task) or all:

  python -m vqjax.sweep --config=configs/paper_single.py \\
      --sweep=configs/sweeps/table1.py --workdir=runs/table1 --index=3
  python -m vqjax.sweep ... --list            # names and overrides only
  python -m vqjax.sweep ... --report          # gather metrics.json into a table + figures

Member i trains in `workdir/<name>` (resuming if interrupted) exactly as
`python -m vqjax.main` would with the same overrides on the command line.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax import config_lib, metrics

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config file.", lock_config=False)
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file with get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.")
_INDEX = flags.DEFINE_integer(
    "index", None, "Member to run (default: $SLURM_ARRAY_TASK_ID, else all in turn).")
_LIST = flags.DEFINE_bool("list", False, "Print the members and exit.")
_REPORT = flags.DEFINE_bool("report", False, "Gather eval/metrics.json of all members.")
flags.mark_flags_as_required(["config", "sweep", "workdir"])


def load_sweep(path: str, config: ml_collections.ConfigDict) -> list[dict]:
  spec = importlib.util.spec_from_file_location("vqjax_sweep", path)
  if spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"sweep file {path!r} not found.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  members = list(module.get_sweep(config))
  names = [member_name(m) for m in members]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep {path}: member names are not unique: {names}")
  return members


def member_name(overrides: dict) -> str:
  if "name" in overrides:
    return str(overrides["name"])
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items()))


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of config with dotted keys set; unknown keys are an error."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    if key == "name":
      continue
    node, *path = key.split(".")
    parent = config
    for part in [node, *path][:-1]:
      if part not in parent:
        raise KeyError(f"sweep override {key!r}: no config field {part!r}.")
      parent = parent[part]
    leaf = key.split(".")[-1]
    if leaf not in parent:
      raise KeyError(f"sweep override {key!r}: no config field {leaf!r}.")
    parent[leaf] = value
  return config


def report(workdir: str, members: list[dict]) -> list[dict]:
  """One row per member: overrides + PSNR/MSE mean±std + per-level perplexity."""
  rows = []
  for overrides in members:
    path = os.path.join(workdir, member_name(overrides), "eval", "metrics.json")
    row = {"name": member_name(overrides)}
    if os.path.exists(path):
      with open(path) as f:
        m = json.load(f)
      row.update(psnr=m["psnr"], mse=m["mse"], step=m["checkpoint_step"],
                 levels={k: v["normalized_perplexity"] for k, v in m["levels"].items()})
    rows.append(row)
  return rows


def format_report(rows: list[dict]) -> str:
  lines = ["| run | step | PSNR (dB) | MSE | normalized perplexity |", "|---|---|---|---|---|"]
  for r in rows:
    if "psnr" not in r:
      lines.append(f"| {r['name']} | - | not evaluated | | |")
      continue
    usage = ", ".join(f"{k} {v:.3f}" for k, v in r["levels"].items())
    lines.append(f"| {r['name']} | {r['step']} | {r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f} "
                 f"| {r['mse']['mean']:.4f} ± {r['mse']['std']:.4f} | {usage} |")
  return "\n".join(lines)


def report_figures(workdir: str, members: list[dict], rows: list[dict]) -> dict:
  """Writes the paper's figures for the evaluated members into workdir; returns what
  was plotted.

  report_lorenz.png (Figure 1, middle): every member's Lorenz curve per level,
    from its eval/code_histograms.npz.
  report_mse_perplexity.png (Figure 1, top and bottom): MSE (mean, std as error
    bar) and normalized perplexity (mean over levels) per member.
  report_psnr_vs_codes.png (Figure 2), when members set both model.num_codes and
    model.code_dim: mean PSNR over num_codes (log2 axis), one line per code_dim.
  """
  done = [(m, r) for m, r in zip(members, rows) if "psnr" in r]
  plotted: dict = {}
  if not done:
    return plotted
  histograms = {}
  for m, r in done:
    path = os.path.join(workdir, member_name(m), "eval", "code_histograms.npz")
    if os.path.exists(path):
      with np.load(path) as npz:
        for level in npz.files:
          label = r["name"] if len(npz.files) == 1 else f"{r['name']}/{level}"
          histograms[label] = npz[level]
  if histograms:
    metrics.save_lorenz_plot(histograms, os.path.join(workdir, "report_lorenz.png"))
    plotted["lorenz"] = sorted(histograms)

  names = [r["name"] for _, r in done]
  mse = [r["mse"]["mean"] for _, r in done]
  usage = [float(np.mean(list(r["levels"].values()))) for _, r in done]
  fig, (ax_mse, ax_ppl) = metrics.new_figure(max(6.0, 0.6 * len(names) + 2), 4.5, ncols=2)
  ax_mse.bar(names, mse, yerr=[r["mse"]["std"] for _, r in done], capsize=3)
  ax_mse.set_ylabel("MSE (mean over images)")
  ax_ppl.bar(names, usage)
  ax_ppl.set_ylabel("normalized perplexity")
  for ax in (ax_mse, ax_ppl):
    ax.tick_params(axis="x", labelrotation=60, labelsize="small")
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "report_mse_perplexity.png"), format="png")
  plotted["mse_perplexity"] = dict(zip(names, zip(mse, usage)))

  lines = collections.defaultdict(list)
  for m, r in done:
    if "model.num_codes" in m and "model.code_dim" in m:
      lines[m["model.code_dim"]].append((m["model.num_codes"], r["psnr"]["mean"]))
  if sum(len(v) for v in lines.values()) >= 2:
    fig, (ax,) = metrics.new_figure(6, 4.5)
    for d in sorted(lines):
      ks, psnr = zip(*sorted(lines[d]))
      ax.plot(ks, psnr, marker="o", label=f"D = {d}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("codebook size K (model.num_codes)")
    ax.set_ylabel("PSNR (dB, mean over images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "report_psnr_vs_codes.png"), format="png")
    plotted["psnr_vs_codes"] = {d: sorted(v) for d, v in lines.items()}
  return plotted


def main(argv):
  del argv
  from vqjax import parallel, train  # heavy imports only when running
  parallel.configure_cpu_devices(_CONFIG.value)
  members = load_sweep(_SWEEP.value, _CONFIG.value)
  if _LIST.value:
    for i, m in enumerate(members):
      print(i, member_name(m), m)
    return
  if _REPORT.value:
    rows = report(_WORKDIR.value, members)
    text = format_report(rows)
    print(text)
    with open(os.path.join(_WORKDIR.value, "report.md"), "w") as f:
      f.write(text + "\n")
    plotted = report_figures(_WORKDIR.value, members, rows)
    logging.info("wrote %s/report.md and the figures %s", _WORKDIR.value,
                 ", ".join(f"report_{k}.png" for k in plotted) or "(none: nothing evaluated)")
    return
  index = _INDEX.value
  if index is None and os.environ.get("SLURM_ARRAY_TASK_ID"):
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
  chosen = range(len(members)) if index is None else [index]
  for i in chosen:
    if not 0 <= i < len(members):
      raise IndexError(f"--index={i}: the sweep has {len(members)} members (0..{len(members) - 1}).")
    config = apply_overrides(_CONFIG.value, members[i])
    config_lib.validate(config)
    workdir = os.path.join(_WORKDIR.value, member_name(members[i]))
    logging.info("sweep member %d/%d: %s -> %s", i, len(members), members[i], workdir)
    os.makedirs(workdir, exist_ok=True)
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
