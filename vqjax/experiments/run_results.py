"""Finished runs read back from their dirs (files only), for vqjax.experiments.report.

A run dir is a dir holding config.json (its eval/metrics.json and
eval/code_histograms.npz are read when present); dirs named seed<s> are seeds of
the member dir above them. `find_members` walks run dirs into sweep members,
adding the members a sweep expects that are not on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import ml_collections
import numpy as np

from vqjax import config_lib
from vqjax.experiments import sweep_spec

_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclasses.dataclass
class RunResult:
  """One run dir: its seed, config.json, and eval/metrics.json if finished."""
  path: str
  seed: int | None
  config: dict | None
  metrics: dict | None  # None unless finished
  status: str           # 'finished' | 'unfinished (...)' | 'missing'


@dataclasses.dataclass
class Member:
  """A sweep member: one run, or one run per seed."""
  label: str
  name: str  # the member dir's basename
  config: dict | None
  runs: list[RunResult]

  @property
  def finished(self) -> list[RunResult]:
    return [r for r in self.runs if r.metrics is not None]

  def stat(self, key) -> tuple[float, float | None, int] | None:
    """(mean, std over seeds (ddof 1; None for one seed), n) of key(metrics)."""
    values = [float(key(r.metrics)) for r in self.finished]
    if not values:
      return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std, len(values)

  def status(self) -> str:
    if all(r.status == "missing" for r in self.runs):
      return "missing"
    done = len(self.finished)
    if done == len(self.runs):
      return "finished" if done == 1 else f"finished ({done} seeds)"
    if len(self.runs) == 1:
      return self.runs[0].status
    others = "; ".join(f"{os.path.basename(r.path)} {r.status}"
                       for r in self.runs if r.metrics is None)
    return f"{done}/{len(self.runs)} finished; {others}" if done else others


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_run(path: str, seed: int | None = None) -> RunResult:
  config = _read_json(os.path.join(path, "config.json"))
  if config is None:
    return RunResult(path, seed, None, None, "missing")
  if "model" in config:  # runs from before model.quantizer was nested
    config["model"] = config_lib.upgrade_model_config(config["model"])
  m = _read_json(os.path.join(path, "eval", "metrics.json"))
  seed = int(config.get("seed", 0)) if seed is None else seed
  steps = int(config["train"]["num_steps"])
  if m is None:
    return RunResult(path, seed, config, None, "unfinished (not evaluated)")
  if int(m["checkpoint_step"]) < steps:
    return RunResult(path, seed, config, None,
                     f"unfinished (step {m['checkpoint_step']}/{steps})")
  return RunResult(path, seed, config, m, "finished")


def find_members(dirs: list[str], expected: dict | None = None,
                 seeds: list[int] | None = None) -> list[Member]:
  """Members under dirs (walked for config.json), plus the expected ones not found.

  expected: {member name: config dict} of a sweep, whose member dirs are
  dirs[0]/<name>; seeds: the seeds every member should have.
  """
  found: dict[str, dict[int | None, RunResult]] = {}
  labels = {}
  for root in dirs:
    for path, subdirs, files in os.walk(root):
      subdirs.sort()
      if "config.json" not in files:
        continue
      subdirs[:] = []  # a run dir's checkpoints hold no runs
      match = _SEED_DIR.match(os.path.basename(path))
      member_dir = os.path.dirname(path) if match else path
      run = read_run(path, int(match.group(1)) if match else None)
      found.setdefault(os.path.normpath(member_dir), {})[run.seed] = run
      rel = os.path.relpath(member_dir, root)
      if rel == ".":
        rel = os.path.basename(os.path.abspath(member_dir))
      labels[os.path.normpath(member_dir)] = (
          rel if len(dirs) == 1 else os.path.join(os.path.basename(os.path.normpath(root)), rel))
  if expected:
    for name in expected:
      found.setdefault(os.path.normpath(os.path.join(dirs[0], name)), {})
      labels.setdefault(os.path.normpath(os.path.join(dirs[0], name)), name)
  members = []
  for member_dir, runs in found.items():
    name = os.path.basename(member_dir)
    if seeds:
      for s in seeds:
        if s not in runs:
          runs[s] = RunResult(os.path.join(member_dir, f"seed{s}"), s, None, None, "missing")
    ordered = [runs[s] for s in sorted(runs, key=lambda s: -1 if s is None else s)]
    config = next((r.config for r in ordered if r.config), None)
    if config is None and expected and name in expected:
      config = expected[name]
    members.append(Member(labels[member_dir], name, config, ordered))
  order = list(expected or [])
  members.sort(key=lambda m: (order.index(m.name) if m.name in order else len(order), m.label))
  return members


def code_histograms(m: Member) -> dict[str, np.ndarray]:
  """Level -> code histogram of the first finished seed (seed 0 when there)."""
  for run in m.finished:
    path = os.path.join(run.path, "eval", "code_histograms.npz")
    if os.path.exists(path):
      with np.load(path) as npz:
        return {level: npz[level] for level in npz.files}
  return {}


def expected_members(base: ml_collections.ConfigDict, members: list[dict]) -> dict:
  """{member name: config dict} of sweep members (override dicts, as
  `sweep_spec.load_sweep` returns them) applied to their base config."""
  return {sweep_spec.member_name(m): sweep_spec.apply_overrides(base, m).to_dict()
          for m in members}



def table1_pair_dirs(runs: str, name: str, code_dim: int = 8) -> dict[tuple[int, int], dict]:
  """{(K_s, seed): {'single': run dir, 'hierarchical': run dir}} of Table 1's pairs
  RUNS/<name>_single/D<D>_K<K_s>/seed<s> and RUNS/<name>_hierarchical/D<D>_2x<K_s / 2>/seed<s>
  (configs/sweeps/table1.py's member names), finished or not; a side with no run dir
  is absent. name: 'table1', 'table1_1200steps', 'table1_4800steps', ..."""
  pattern = {"single": re.compile(rf"^D{code_dim}_K(\d+)$"),
             "hierarchical": re.compile(rf"^D{code_dim}_2x(\d+)$")}
  pairs: dict[tuple[int, int], dict] = {}
  for side, member_re in pattern.items():
    root = os.path.join(runs, f"{name}_{side}")
    for member in sorted(os.listdir(root)) if os.path.isdir(root) else []:
      match = member_re.match(member)
      if not match or not os.path.isdir(os.path.join(root, member)):
        continue
      k_s = int(match.group(1)) * (2 if side == "hierarchical" else 1)
      for seed_dir in os.listdir(os.path.join(root, member)):
        seed = _SEED_DIR.match(seed_dir)
        path = os.path.join(root, member, seed_dir)
        if seed and os.path.exists(os.path.join(path, "config.json")):
          pairs.setdefault((k_s, int(seed.group(1))), {})[side] = path
  return dict(sorted(pairs.items()))


def table1_pairs(runs: str, name: str, code_dim: int = 8) -> dict[tuple[int, int], dict]:
  """`table1_pair_dirs` with each side's eval/metrics.json instead of its dir; finished
  runs only (a pair with no finished side is absent)."""
  pairs: dict[tuple[int, int], dict] = {}
  for key, sides in table1_pair_dirs(runs, name, code_dim).items():
    for side, path in sides.items():
      run = read_run(path)
      if run.metrics is not None:
        pairs.setdefault(key, {})[side] = run.metrics
  return pairs
