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
