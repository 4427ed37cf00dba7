"""No config can rot: every config file builds and validates, and its smoke size
(`get_config('smoke')`) trains 2 steps and evaluates; every sweep member
builds and validates (and trains at smoke size with -m slow)."""

import glob
import os

import pytest

from vqjax import config_lib, train
from vqjax.experiments import sweep_spec

from model_snapshot import REPO, SWEEP_BASES, load_config  # SWEEP_BASES: each sweep's base

CONFIG_FILES = sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"),
                                                recursive=True)
    if os.sep + "sweeps" + os.sep not in p)


def with_smoke(spec: str) -> str:
  path, _, arg = spec.partition(":")
  return f"{path}:{arg + ',' if arg else ''}smoke"


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


def parametrized_values(test, argnames: str) -> list:
  """The values `test` is parametrized with for `argnames` (read from its
  pytest marks: what pytest runs, not the lists above)."""
  values = []
  for mark in getattr(test, "pytestmark", []):
    if mark.name == "parametrize" and mark.args[0] == argnames:
      values += [v.values if hasattr(v, "values") else v for v in mark.args[1]]
  return [v[0] if isinstance(v, tuple) and len(v) == 1 else v for v in values]


def test_every_file_under_configs_is_built_by_a_test():
  # Every file under configs/ (walked here, whatever CONFIG_FILES' glob
  # finds): a config file is a parameter of the build test and of the
  # smoke-training test, a sweep file one of the sweep test with a base
  # config from SWEEP_BASES (that base itself a built config file).
  root = os.path.join(REPO, "configs")
  files = sorted(os.path.relpath(os.path.join(d, f), REPO) for d, _, names in os.walk(root)
                 for f in names if "__pycache__" not in d)
  sweeps = [f for f in files if f.startswith("configs/sweeps/")]
  built = parametrized_values(test_config_builds_and_validates_at_full_and_smoke_size, "path")
  trained = parametrized_values(test_config_builds_validates_and_its_smoke_size_trains, "path")
  swept = parametrized_values(test_every_sweep_member_builds_and_validates, "sweep_file, base")
  for f in files:
    if f in sweeps:
      assert SWEEP_BASES.get(f), f"add {f} to SWEEP_BASES in tests/test_configs.py"
      assert {(f, base) for base in SWEEP_BASES[f]} <= set(swept), f
    else:
      assert f in built and f in trained, f"{f} is not built by the config tests"
  assert sorted(set(built)) == sorted(set(trained)) == [f for f in files if f not in sweeps]
  assert sorted(SWEEP_BASES) == sweeps          # no base for a sweep file that is gone
  for base in (b for bases in SWEEP_BASES.values() for b in bases):
    assert base.partition(":")[0] in built, base


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
