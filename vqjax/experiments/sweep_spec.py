"""Sweep specifications: members, seeds and dotted-key overrides (no training).

A sweep file defines `get_sweep(config) -> list[dict]`, each dict mapping dotted
config keys to values (e.g. {"model.num_codes": 4096}) and optionally "name".
`vqjax.experiments.sweep` runs the members; `vqjax.experiments.report` reads their results; both take
the members from here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import ml_collections

from vqjax import config_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """One (member, seed) of a sweep; seed None keeps the config's seed."""
  name: str
  overrides: dict
  seed: int | None
  subdir: str  # relative to the sweep's workdir


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


def parse_seeds(text: str | None) -> list[int] | None:
  """'0,1,2' -> [0, 1, 2]; empty or None -> None (one run per member, config's seed)."""
  if not text:
    return None
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError as e:
    raise ValueError(f"--seeds={text!r}: expected comma-separated integers.") from e
  if len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**32 for s in seeds):
    raise ValueError(f"--seeds={text!r}: seeds must be distinct and in [0, 2**32).")
  return seeds


def select_members(members: list[dict], names: list[str] | None) -> list[dict]:
  """The members named in `names` (all when None), in sweep order."""
  if not names:
    return members
  known = [member_name(m) for m in members]
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise ValueError(f"--members: unknown {unknown}; the sweep has {known}.")
  return [m for m in members if member_name(m) in names]


def expand_runs(members: list[dict], seeds: list[int] | None = None) -> list[Run]:
  """The flattened (member, seed) list, member-major."""
  runs = []
  for m in members:
    name = member_name(m)
    if seeds is None:
      runs.append(Run(name, m, None, name))
    else:
      runs.extend(Run(name, m, s, os.path.join(name, f"seed{s}")) for s in seeds)
  return runs


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


def run_config(base: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The run's full config: base + member overrides (+ its seed), validated."""
  config = apply_overrides(base, run.overrides)
  if run.seed is not None:
    config.seed = run.seed
  config_lib.validate(config)
  return config
