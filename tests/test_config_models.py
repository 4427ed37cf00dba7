"""Every config file and committed sweep member builds the model it built before
config.model.quantizer became a nested ConfigDict (issue 22): the same
parameter and codebook trees (shapes) and the same settings, the quantizer
resolved to its class and arguments. The reference, tests/data/config_models.json,
was written by tests/model_snapshot.py on the code before the change.
"""

import dataclasses
import json

import pytest

import model_snapshot
from vqjax.quantizers import registry

with open(model_snapshot.SNAPSHOT) as f:
  BEFORE = json.load(f)
CLASSES = {cls.__name__: cls for cls in registry.KINDS.values()}


def with_defaults(settings):
  """A resolved quantizer factory with every constructor field the class has
  (a field the factory leaves out takes its class default)."""
  if isinstance(settings, list):
    return [with_defaults(s) for s in settings]
  if not isinstance(settings, dict):
    return settings
  out = {k: with_defaults(v) for k, v in settings.items()}
  cls = CLASSES.get(out.get("class"))
  if cls is not None:
    for f in dataclasses.fields(cls):
      if f.name not in out and f.name not in ("parent", "name") and \
          f.default is not dataclasses.MISSING:
        out[f.name] = model_snapshot.resolved(f.default)
  return out


def renamed_before(settings):
  """The one constructor change of issue 22: GroupedQuantizer's sub-quantizer
  factory `quantizer` is now `group_quantizer`, and its gradient estimator is
  the sub-quantizer's own (it always passed the same value on)."""
  if isinstance(settings, list):
    return [renamed_before(s) for s in settings]
  if not isinstance(settings, dict):
    return settings
  out = {k: renamed_before(v) for k, v in settings.items()}
  if out.get("class") == "GroupedQuantizer":
    sub = out.pop("quantizer")
    estimator = out.pop("gradient_estimator")
    assert sub.get("gradient_estimator", estimator) == estimator
    out["group_quantizer"] = sub
  return out


def current():
  out = {spec: model_snapshot.describe(model_snapshot.load_config(spec))
         for spec in model_snapshot.specs()}
  for sweep_file, base, name, config in model_snapshot.sweep_members():
    out[f"{sweep_file}@{base}#{name}"] = model_snapshot.describe(config)
  return out


@pytest.fixture(scope="module")
def after():
  return current()


def test_every_config_and_sweep_member_of_before_is_still_there(after):
  missing = sorted(set(BEFORE) - set(after))
  assert not missing, f"no longer built: {missing}"


def test_every_config_builds_the_same_parameter_and_codebook_trees(after):
  for key, before in BEFORE.items():
    assert after[key]["variables"] == before["variables"], key


def test_every_config_builds_the_same_model_settings(after):
  for key, before in BEFORE.items():
    assert with_defaults(after[key]["settings"]) == \
        with_defaults(renamed_before(before["settings"])), key


def test_flat_config_json_of_old_runs_upgrades_to_the_same_model():
  """A config.json written before the nesting (flat sq_/group_ fields) loads as
  the nested config that builds the same model: the committed quantizers runs."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from vqjax import config_lib  # pylint: disable=import-outside-toplevel
  old = {"kind": "single", "channels": 64, "code_dim": 8, "num_codes": 128, "res_channels": 0,
         "num_res_blocks": 2, "factorized_codes": False, "conditioned": False,
         "dtype": "float32", "quantizer": "grouped", "num_groups": 2,
         "group_quantizer": "learned", "group_dropout": False, "group_drop_probs": [0.0, 0.5],
         "group_dropout_scope": "example", "beta": 0.5, "decay": 0.9, "l2_normalize": True,
         "gradient_estimator": "rotation", "sq_tau0": 2.0, "fsq_levels": [8, 5],
         "reset_rule": "sample"}
  new = config_lib.upgrade_model_config(old)
  q = new["quantizer"]
  assert (q["kind"], q["num_groups"], q["group_dropout"], q["drop_probs"],
          q["dropout_scope"]) == ("grouped", 2, False, [0.0, 0.5], "example")
  sub = q["group_quantizer"]
  assert (sub["kind"], sub["beta"], sub["l2_normalize"], sub["gradient_estimator"]) == (
      "learned", 0.5, True, "rotation")
  assert not {k for k in new if k.startswith(("sq_", "fsq_", "lfq_", "group_"))}
  assert "decay" not in new and "reset_rule" not in new   # EMA fields, not of 'learned'
  config = ml_collections.ConfigDict({"model": new})
  config_lib.validate(ml_collections.ConfigDict({**tiny_base().to_dict(), "model": new}))
  assert config.model.quantizer.group_quantizer.kind == "learned"


def tiny_base():
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  return tiny_config("single")
