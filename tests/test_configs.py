"""No config can rot: every config file builds and validates, and its smoke size
(`get_config('smoke')`) trains 2 steps and evaluates; every sweep member
builds and validates (and trains at smoke size with -m slow)."""

import glob
import importlib.util
import os

import pytest

from vqjax import config_lib, train
from vqjax.experiments import sweep_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"),
                                                recursive=True)
    if os.sep + "sweeps" + os.sep not in p)
# The base config each sweep is meant for (a new sweep file must be added here).
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


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def with_smoke(spec: str) -> str:
  path, _, arg = spec.partition(":")
  return f"{path}:{arg + ',' if arg else ''}smoke"


def test_every_config_file_is_covered():
  assert "configs/default.py" in CONFIG_FILES and len(CONFIG_FILES) >= 4


# Training every smoke size takes ~10 s each: default.py in the quick suite,
# the others with -m slow (the HQ-VAE and quantizer kinds also train through
# `python -m vqjax.main` in test_hqvae_train.py / test_quantizer_integration.py).
SMOKE_CASES = [p if p == "configs/default.py" else pytest.param(p, marks=pytest.mark.slow)
               for p in CONFIG_FILES]


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_config_builds_and_validates_at_full_and_smoke_size(path):
  config_lib.validate(load_config(path))
  config = load_config(with_smoke(path))
  config_lib.validate(config)
  assert config.train.num_steps == 2 and config.data.name == "builtin"


@pytest.mark.parametrize("path", SMOKE_CASES)
def test_config_builds_validates_and_its_smoke_size_trains(path, tmp_path):
  config_lib.validate(load_config(path))
  config = load_config(with_smoke(path))
  config_lib.validate(config)
  assert config.train.num_steps == 2 and config.data.name == "builtin"
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["checkpoint_step"] == 2


def test_unknown_config_option_is_a_clear_error():
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['smok'\]"):
    load_config("configs/default.py:smok")


def sweep_cases():
  files = sorted(os.path.relpath(p, REPO)
                 for p in glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py")))
  return [(f, base) for f in files for base in SWEEP_BASES.get(f, [None])]


@pytest.mark.parametrize("sweep_file, base", sweep_cases())
def test_every_sweep_member_builds_and_validates(sweep_file, base):
  assert base is not None, f"add {sweep_file} to SWEEP_BASES in tests/test_configs.py"
  config = load_config(base)
  members = sweep_spec.load_sweep(os.path.join(REPO, sweep_file), config)
  assert members
  for member in members:
    config_lib.validate(sweep_spec.apply_overrides(config, member))


@pytest.mark.slow
@pytest.mark.parametrize("sweep_file, base", sweep_cases())
def test_every_sweep_member_trains_at_smoke_size(sweep_file, base, tmp_path):
  config = load_config(with_smoke(base))
  for member in sweep_spec.load_sweep(os.path.join(REPO, sweep_file), load_config(base)):
    # The member's model fields on the smoke base (its own width stays smoke).
    overrides = {k: v for k, v in member.items() if k != "model.channels"}
    member_config = sweep_spec.apply_overrides(config, overrides)
    config_lib.validate(member_config)
    name = sweep_spec.member_name(member)
    assert train.train_and_evaluate(member_config, str(tmp_path / name))["checkpoint_step"] == 2


def test_quantizer_comparison_trains_without_colour_augmentation():
  # docs/QUANTIZERS.md's committed runs had no colour augmentation; 'auto' would
  # turn it on for the built-in photos, so the config must say 'off' itself.
  from vqjax import data  # pylint: disable=g-import-not-at-top
  for member in ("", "vq", "fsq", "sq"):
    config = load_config(f"configs/quantizers.py:{member}" if member else "configs/quantizers.py")
    assert config.data.name == "builtin" and config.data.color_augment == "off"
    assert not data.color_augment_on(config.data)
