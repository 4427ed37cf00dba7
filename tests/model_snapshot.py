"""What every config file and committed sweep member builds: the model's
parameter and codebook trees (shapes) and its settings, the quantizer
factory resolved to its class and keyword arguments.

`python tests/model_snapshot.py` writes tests/data/config_models.json; the
snapshot committed there was written before the quantizer config became
nested (issue 22), and tests/test_config_models.py checks that every config
still builds exactly those models.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.util
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vqjax.experiments import sweep_spec  # pylint: disable=wrong-import-position
from vqjax.models import create_model  # pylint: disable=wrong-import-position

SNAPSHOT = os.path.join(REPO, "tests", "data", "config_models.json")
# The base config each committed sweep is meant for (a new sweep file must be added
# here; tests/test_configs.py checks that every sweep has one).
SWEEP_BASES = {
    "configs/sweeps/figure1.py": ["configs/reproduction.py:hierarchical",
                                  "configs/paper_hierarchical.py"],
    "configs/sweeps/figure2.py": ["configs/reproduction.py:single", "configs/paper_single.py"],
    "configs/sweeps/figure2_below8.py": ["configs/reproduction.py:single"],
    "configs/sweeps/table1.py": ["configs/reproduction.py:single",
                                 "configs/reproduction.py:hierarchical"],
    "configs/sweeps/hqvae.py": ["configs/hqvae/cpu_sqvae2.py"],
    "configs/sweeps/quantizers.py": ["configs/quantizers.py"],  # its base (docstring, runs)
}


def load_script(name: str):
  """scripts/<name>.py as a module (the scripts are not a package)."""
  module_spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def config_options(path: str) -> list[str]:
  """The options a config file's get_config takes, read from its error message."""
  try:
    load_config(f"{path}:no_such_option")
  except ValueError as e:
    found = re.search(r"choose from (\(.*?\)|\[.*?\])", str(e))
    return list(eval(found.group(1))) if found else []  # pylint: disable=eval-used
  return []


def resolved(value):
  """Factories and modules as {'class': name, field: value}, recursively; plain data as is."""
  if isinstance(value, functools.partial):
    out = {"class": value.func.__name__}
    out.update({k: resolved(v) for k, v in sorted(value.keywords.items())})
    return out
  if isinstance(value, type):
    return {"class": value.__name__}
  if dataclasses.is_dataclass(value):
    out = {"class": type(value).__name__}
    for f in dataclasses.fields(value):
      if f.name not in ("parent", "name"):
        out[f.name] = resolved(getattr(value, f.name))
    return out
  if isinstance(value, (tuple, list)):
    return [resolved(v) for v in value]
  if value is jnp.float32 or value is jnp.bfloat16:
    return np.dtype(value).name
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  return value


def describe(config) -> dict:
  """{'settings': model fields resolved, 'variables': {collection/path: shape}}."""
  model = create_model(config.model)
  size = config.data.image_size
  variables = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)), train=False))
  shapes = {"/".join(str(getattr(k, "key", k)) for k in path): list(x.shape)
            for path, x in jax.tree_util.tree_leaves_with_path(dict(variables))}
  return {"settings": resolved(model), "variables": shapes}


def specs() -> list[str]:
  files = sorted(os.path.relpath(p, REPO)
                 for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)
                 if os.sep + "sweeps" + os.sep not in p)
  out = []
  for path in files:
    if "model" not in load_config(path):  # a prior's config (configs/prior.py): no model
      continue
    out.append(path)
    out += [f"{path}:{o}" for o in config_options(path) if o != "smoke"]
  return out


def sweep_members() -> list[tuple[str, str, str, object]]:
  """(sweep file, base spec, member name, member config) of every committed sweep."""
  out = []
  for sweep_file, bases in sorted(SWEEP_BASES.items()):
    for base in bases:
      config = load_config(base)
      for member in sweep_spec.load_sweep(os.path.join(REPO, sweep_file), config):
        out.append((sweep_file, base, sweep_spec.member_name(member),
                    sweep_spec.apply_overrides(config, member)))
  return out


def snapshot() -> dict:
  out = {spec: describe(load_config(spec)) for spec in specs()}
  for sweep_file, base, name, config in sweep_members():
    out[f"{sweep_file}@{base}#{name}"] = describe(config)
  return out


if __name__ == "__main__":
  result = snapshot()
  os.makedirs(os.path.dirname(SNAPSHOT), exist_ok=True)
  with open(SNAPSHOT, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {len(result)} models to {SNAPSHOT}")
