"""One registry of the quantizer kinds: kind -> class, config -> constructor.

A quantizer's config (`config.model.quantizer`) is a ConfigDict holding `kind`
and that class's own constructor fields, nothing else; a field that is itself
a quantizer factory (the grouped quantizer's `group_quantizer`, the residual
quantizer's `stage_quantizer`) is a nested quantizer config. So

  ConfigDict(kind='grouped', num_groups=2, group_dropout=True, ...,
             group_quantizer=ConfigDict(kind='ema', beta=0.25, ...))

builds functools.partial(GroupedQuantizer, num_groups=2, ...,
group_quantizer=functools.partial(VectorQuantizerEMA, beta=0.25, ...)); the
model binds the sizes (num_codes, code_dim) where the class takes them.
`default_config(kind)` is the class's defaults (and the few that it has none
for), `factory(config)` the partial, `check(config, ...)` the class's own
check of its settings, with config keys in the messages.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import ml_collections

from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.fsq import FiniteScalarQuantizer
from vqjax.quantizers.grouped import GroupedQuantizer
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer
from vqjax.quantizers.lfq import LookupFreeQuantizer
from vqjax.quantizers.residual import ResidualQuantizer
from vqjax.quantizers.stochastic import StochasticQuantizer

KINDS = {
    "ema": VectorQuantizerEMA,
    "learned": LearnedCodebookQuantizer,
    "stochastic": StochasticQuantizer,
    "grouped": GroupedQuantizer,
    "fsq": FiniteScalarQuantizer,
    "lfq": LookupFreeQuantizer,
    "residual": ResidualQuantizer,
}
# Bound by the model, not configured: the sizes, and fields a model sets itself.
SIZE_FIELDS = ("num_codes", "code_dim")
MODEL_FIELDS = {"stochastic": ("dequant_loss", "shared_codebook"),
                "grouped": ("active_groups",)}
# Fields that are quantizer factories: nested configs, and the kinds they may be.
NESTED = {"grouped": ("group_quantizer", ("ema", "learned")),
          "residual": ("stage_quantizer", ("ema", "learned"))}
# Defaults for fields the class leaves to its caller, and the nested defaults.
EXTRA_DEFAULTS = {"fsq": {"levels": (8, 5, 5, 5)}, "grouped": {"num_groups": 2}}


def configurable_fields(kind: str) -> dict[str, object]:
  """{field: class default} of the constructor fields a config of `kind` holds."""
  cls = _class(kind)
  skip = set(SIZE_FIELDS) | set(MODEL_FIELDS.get(kind, ())) | {"parent", "name"}
  out = {}
  for f in dataclasses.fields(cls):
    if f.name in skip or not f.init:
      continue
    default = f.default if f.default is not dataclasses.MISSING else None
    out[f.name] = EXTRA_DEFAULTS.get(kind, {}).get(f.name, default)
  return out


def default_config(kind: str = "ema", **overrides) -> ml_collections.ConfigDict:
  """The config of a `kind` quantizer: its class's defaults, then `overrides`."""
  fields = configurable_fields(kind)
  nested = NESTED.get(kind)
  if nested:
    fields[nested[0]] = default_config(nested[1][0])
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"quantizer kind {kind!r} has no field(s) {unknown}; its fields: "
                     f"{sorted(fields)}.")
  fields.update(overrides)
  return ml_collections.ConfigDict({"kind": kind, **fields})


def _class(kind: str) -> type:
  if kind not in KINDS:
    raise ValueError(f"model.quantizer.kind={kind!r}; use one of {tuple(KINDS)}.")
  return KINDS[kind]


def check_fields(config, key: str = "model.quantizer") -> None:
  """ValueError unless `config` holds `kind` and exactly that kind's fields."""
  kind = config.get("kind")
  cls = _class(kind)
  expected = set(configurable_fields(kind)) | {"kind"}
  nested = NESTED.get(kind)
  if nested:
    expected.add(nested[0])
  given = set(config.keys())
  extra, missing = sorted(given - expected), sorted(expected - given)
  if extra or missing:
    raise ValueError(
        f"{key} is kind {kind!r} ({cls.__name__}) but "
        + (f"holds field(s) {extra} of another kind" if extra else "")
        + (" and " if extra and missing else "")
        + (f"lacks {missing}" if missing else "")
        + f"; build it with vqjax.quantizers.registry.default_config({kind!r}, ...) "
        f"(--config=...:quantizer={kind} on the command line).")
  if nested:
    name, kinds = nested
    sub_kind = config[name].get("kind")
    if sub_kind not in kinds:
      raise ValueError(f"{key}.{name}.kind={sub_kind!r}; the {kind} quantizer takes "
                       f"{kinds}.")
    check_fields(config[name], f"{key}.{name}")


def factory(config) -> Callable:
  """functools.partial of the config's class with its fields (nested configs as factories)."""
  kind = config["kind"]
  kwargs = {}
  for name, value in config.items():
    if name == "kind":
      continue
    if isinstance(value, (dict, ml_collections.ConfigDict)) and "kind" in value:
      value = factory(value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[name] = value
  return functools.partial(_class(kind), **kwargs)


def takes(kind: str, field: str) -> bool:
  """Whether the class of `kind` has the constructor field `field`."""
  return any(f.name == field for f in dataclasses.fields(_class(kind)))


def build(config, num_codes: int, code_dim: int, **model_fields):
  """An unbound quantizer of `config` with the sizes the class takes (for checks, code spaces)."""
  kind = config["kind"]
  sizes = {k: v for k, v in dict(num_codes=num_codes, code_dim=code_dim).items()
           if takes(kind, k)}
  return factory(config)(**sizes, **model_fields, parent=None)


def check(config, num_codes: int, code_dim: int, key: str = "model.quantizer") -> None:
  """The quantizer's own check of its settings; messages name config keys
  (`key`.<field>, model.num_codes and model.code_dim for the sizes)."""
  check_fields(config, key)
  config_key = lambda name: f"model.{name}" if name in SIZE_FIELDS else f"{key}.{name}"
  build(config, num_codes, code_dim).check(key=config_key)
