"""Parameter sweeps: a base config plus a list of overrides, one workdir per run.

A sweep file defines `get_sweep(config) -> list[dict]` (config: the base config), each dict mapping dotted
config keys to values (e.g. {"model.num_codes": 4096, "model.code_dim": 16})
and optionally "name". Run one member (e.g. a SLURM array task) or all:

  python -m vqjax.sweep --config=configs/paper_single.py \\
      --sweep=configs/sweeps/table1.py --workdir=runs/table1 --index=3
  python -m vqjax.sweep ... --list            # names and overrides only
  python -m vqjax.sweep ... --report          # gather metrics.json into a table

Member i trains in `workdir/<name>` (resuming if interrupted) exactly as
`python -m vqjax.main` would with the same overrides on the command line.
"""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax import config_lib

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
    text = format_report(report(_WORKDIR.value, members))
    print(text)
    with open(os.path.join(_WORKDIR.value, "report.md"), "w") as f:
      f.write(text + "\n")
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
