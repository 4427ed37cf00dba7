"""Build a model (and its quantizers) from `config.model`.

Kinds: 'single' / 'hierarchical' (vqvae.py, levels `codes` / `top`, `bottom`)
and the HQ-VAE top-down networks 'injected_topdown' / 'residual_topdown'
(hqvae.py, levels `layer_1`..`layer_L`), and the 1D tokenizer 'semanticist'
(semanticist.py, level `tokens`). `config.model.quantizer` is the
quantizer's own config (`kind` and its fields; vqjax.quantizers.registry):
any kind for 'single', 'hierarchical' and 'semanticist', 'ema', 'stochastic'
or 'learned' for the HQ-VAE kinds. 'semanticist' also takes the kind
'continuous' (CONTINUOUS, no other field): unquantized tokens, the paper's
choice; the model then has no code level (`level_quantizers` is empty).

Everything about a level's codes (index ranges, histogram size, bits) comes
from its quantizer (`level_quantizers`, the interface of vqjax.quantizers.base).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections

from vqjax.models.hqvae import InjectedTopDownVAE, ResidualTopDownVAE, layer_names
from vqjax.models.semanticist import LEVEL as TOKENS_LEVEL, Semanticist
from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
from vqjax.quantizers import registry

MODEL_KINDS = ("single", "hierarchical", "injected_topdown", "residual_topdown",
               "semanticist")
SEMANTICIST = "semanticist"
CONTINUOUS = "continuous"  # model.quantizer.kind of unquantized semanticist tokens
HQVAE_KINDS = ("injected_topdown", "residual_topdown")
HQVAE_QUANTIZERS = ("ema", "stochastic", "learned")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def quantizer_kind(model_config: ml_collections.ConfigDict) -> str:
  """model.quantizer.kind; a clear error for configs from before it was nested."""
  q = model_config.get("quantizer")
  if not isinstance(q, (dict, ml_collections.ConfigDict)) or "kind" not in q:
    raise ValueError(
        f"bad config: model.quantizer={q!r} must be a quantizer config with a 'kind' "
        "(vqjax.quantizers.registry.default_config(kind)); the flat model.quantizer='ema' "
        "and model.sq_* / fsq_* / lfq_* / group_* fields are now model.quantizer.kind and "
        "model.quantizer.<field>.")
  return q["kind"]


def check_buildable(model_config: ml_collections.ConfigDict) -> None:
  """ValueError unless `create_model` can build model.kind with its quantizer
  in model.dtype; `config_lib.validate` runs it first."""
  m = model_config
  kind = quantizer_kind(m)
  checks = [
      (m.kind in MODEL_KINDS, f"model.kind={m.kind!r}; use one of {MODEL_KINDS}."),
      (kind in registry.KINDS or (kind == CONTINUOUS and m.kind == SEMANTICIST),
       f"model.quantizer.kind={kind!r}; use one of {tuple(registry.KINDS)}"
       + (f" or {CONTINUOUS!r}." if m.kind == SEMANTICIST else
          f" ({CONTINUOUS!r} only with model.kind {SEMANTICIST!r}).")),
      (m.kind not in HQVAE_KINDS or kind in HQVAE_QUANTIZERS,
       f"model.quantizer.kind={kind!r} with model.kind {m.kind!r}: the HQ-VAE kinds take "
       f"{HQVAE_QUANTIZERS}; use model.kind 'single' or 'hierarchical' for {kind!r}."),
      (m.dtype in DTYPES, f"model.dtype={m.dtype!r}; use one of {tuple(DTYPES)}."),
  ]
  for ok, msg in checks:
    if not ok:
      raise ValueError(f"bad config: {msg}")


def layer_codebook_sizes(model_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """model.num_codes per level, top first (HQ-VAE kinds: one int for all
  num_layers layers, or a tuple of num_layers ints)."""
  m = model_config
  if m.kind not in HQVAE_KINDS:
    return (int(m.num_codes),) * (1 if m.kind in ("single", SEMANTICIST) else 2)
  if isinstance(m.num_codes, int):
    return (int(m.num_codes),) * int(m.num_layers)
  sizes = tuple(int(k) for k in m.num_codes)
  if len(sizes) != m.num_layers:
    raise ValueError(f"bad config: model.num_codes={tuple(m.num_codes)} has {len(sizes)} "
                     f"entries but model.num_layers={m.num_layers}; give one K per layer "
                     "or one int for all.")
  return sizes


def level_names(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Quantizer level names in the model's aux output and in the metrics."""
  if model_config.kind in HQVAE_KINDS:
    return layer_names(len(layer_codebook_sizes(model_config)))
  if model_config.kind == SEMANTICIST:
    return (TOKENS_LEVEL,)
  return ("codes",) if model_config.kind == "single" else ("top", "bottom")


def is_continuous(model_config: ml_collections.ConfigDict) -> bool:
  """Unquantized tokens (semanticist with model.quantizer.kind 'continuous')."""
  return quantizer_kind(model_config) == CONTINUOUS


def level_quantizers(model_config: ml_collections.ConfigDict) -> dict:
  """{level name: unbound quantizer} as the model builds it: its code space
  (code_shape, codebook_size, histogram_size, flat_codes, bits_per_position);
  empty for continuous tokens."""
  m = model_config
  if is_continuous(m):
    return {}
  return {name: registry.build(m.quantizer, k, m.code_dim)
          for name, k in zip(level_names(m), layer_codebook_sizes(m))}


def create_quantizer(model_config: ml_collections.ConfigDict, *, sized: bool = True,
                     active_groups: int | None = None):
  """A factory of the configured quantizer (one instance per level).

  sized=True binds num_codes and code_dim where the class takes them
  (single/hierarchical models call `quantizer(name=...)`); the HQ-VAE models
  pass them per layer (sized=False). active_groups (grouped): decode with only
  the first k groups.
  """
  m = model_config
  make = registry.factory(m.quantizer)
  kind = quantizer_kind(m)
  bound = {}
  if sized:
    bound = {k: v for k, v in dict(num_codes=m.num_codes, code_dim=m.code_dim).items()
             if registry.takes(kind, k)}
  if active_groups is not None:
    bound["active_groups"] = active_groups
  return functools.partial(make, **bound) if bound else make


def num_groups(model_config: ml_collections.ConfigDict) -> int:
  """G of a grouped quantizer (the grouped projections around it), else 1."""
  q = model_config.quantizer
  return int(q.num_groups) if quantizer_kind(model_config) == "grouped" else 1


def create_model(model_config: ml_collections.ConfigDict, *,
                 active_groups: int | None = None):
  """The network `model_config.kind` names, with `model_config.quantizer`.

  active_groups (grouped quantizer): every level decodes from only its first
  k groups (the rest zeros); the variables are those of the full model.
  """
  m = model_config
  check_buildable(m)
  if m.kind == SEMANTICIST:
    return create_semanticist(m, active_groups=active_groups)
  if m.kind in HQVAE_KINDS:
    common = dict(quantizer=create_quantizer(m, sized=False),
                  num_codes=layer_codebook_sizes(m), code_dim=m.code_dim, width=m.channels,
                  num_res_blocks=m.num_res_blocks, stem_downsamples=m.stem_downsamples,
                  num_pools=m.num_pools, decoder_variance=m.decoder_variance,
                  dtype=DTYPES[m.dtype])
    if m.kind == "injected_topdown":
      return InjectedTopDownVAE(**common)
    return ResidualTopDownVAE(shared_codebook=m.shared_codebook, **common)
  common = dict(channels=m.channels, code_dim=m.code_dim,
                quantizer=create_quantizer(m, active_groups=active_groups),
                num_groups=num_groups(m),
                res_channels=m.res_channels or None,
                num_res_blocks=m.num_res_blocks,
                factorized_codes=m.factorized_codes,
                dtype=DTYPES[m.dtype])
  if m.kind == "single":
    return SingleLevelVQVAE(**common)
  return HierarchicalVQVAE(conditioned=m.conditioned, **common)


def create_semanticist(model_config: ml_collections.ConfigDict, *,
                       active_groups: int | None = None) -> Semanticist:
  """The SEMANTICIST tokenizer of config.model (config_lib.semanticist_model's
  fields; docs/SEMANTICIST.md)."""
  m = model_config
  d, n = m.decoder, m.nested
  quantizer = None if is_continuous(m) else create_quantizer(m, active_groups=active_groups)
  return Semanticist(
      image_size=m.image_size, patch_size=m.patch_size, width=m.width, depth=m.depth,
      num_heads=m.num_heads, num_tokens=m.num_tokens, code_dim=m.code_dim,
      quantizer=quantizer, normalize_tokens=m.normalize_tokens, mlp_ratio=m.mlp_ratio,
      decoder_patch_size=d.patch_size, decoder_width=d.width, decoder_depth=d.depth,
      decoder_heads=d.num_heads, num_timesteps=d.num_timesteps, beta_start=d.beta_start,
      beta_end=d.beta_end, sample_steps=d.sample_steps, clip_x0=d.clip_x0,
      prediction=d.prediction,
      guidance_scale=d.guidance_scale, sample_seed=d.sample_seed, null_prob=n.null_prob,
      nest_start_step=n.start_step, dtype=DTYPES[m.dtype])
