"""Build a model (and its quantizers) from `config.model`.

Kinds: 'single' / 'hierarchical' (vqvae.py, levels `codes` / `top`, `bottom`)
and the HQ-VAE top-down networks 'injected_topdown' / 'residual_topdown'
(hqvae.py, levels `layer_1`..`layer_L`). `config.model.quantizer` picks the
family: 'ema' (VectorQuantizerEMA), 'stochastic' (StochasticQuantizer) and
'learned' (LearnedCodebookQuantizer) for any kind; 'grouped' (MGVQ,
GroupedQuantizer over `num_groups` EMA or learned sub-quantizers), 'fsq'
(FiniteScalarQuantizer) and 'lfq' (LookupFreeQuantizer) for 'single' and
'hierarchical'. `config.model.gradient_estimator` ('ste' | 'rotation') is the
gradient path of 'ema', 'learned' and 'grouped'.

Index spaces (`codebook_sizes`, the size of evaluation's histogram per level):
num_codes for 'ema', 'stochastic', 'learned' and 'grouped' (a grouped level's
histogram is the G per-group histograms of K/G codes side by side, group i at
offset i K/G), prod(fsq_levels) for 'fsq', 2^code_dim for 'lfq'.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import ml_collections

from vqjax import capacity
from vqjax.models.hqvae import InjectedTopDownVAE, ResidualTopDownVAE, layer_names
from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.fsq import FiniteScalarQuantizer
from vqjax.quantizers.grouped import grouped_factory
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer
from vqjax.quantizers.lfq import LookupFreeQuantizer
from vqjax.quantizers.stochastic import StochasticQuantizer

MODEL_KINDS = ("single", "hierarchical", "injected_topdown", "residual_topdown")
HQVAE_KINDS = ("injected_topdown", "residual_topdown")
QUANTIZERS = ("ema", "stochastic", "learned", "grouped", "fsq", "lfq")
HQVAE_QUANTIZERS = ("ema", "stochastic", "learned")
GROUP_QUANTIZERS = ("ema", "learned")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_buildable(model_config: ml_collections.ConfigDict) -> None:
  """ValueError unless `create_model` can build model.kind with model.quantizer
  (and model.group_quantizer) in model.dtype; `config_lib.validate` runs it first."""
  m = model_config
  quantizer = m.get("quantizer", "ema")
  checks = [
      (m.kind in MODEL_KINDS, f"model.kind={m.kind!r}; use one of {MODEL_KINDS}."),
      (quantizer in QUANTIZERS, f"model.quantizer={quantizer!r}; use one of {QUANTIZERS}."),
      (m.kind not in HQVAE_KINDS or quantizer in HQVAE_QUANTIZERS,
       f"model.quantizer={quantizer!r} with kind {m.kind!r}: the HQ-VAE kinds take "
       f"{HQVAE_QUANTIZERS}; use kind 'single' or 'hierarchical' for {quantizer!r}."),
      (quantizer != "grouped" or m.group_quantizer in GROUP_QUANTIZERS,
       f"model.group_quantizer={m.get('group_quantizer')!r}; use one of {GROUP_QUANTIZERS}."),
      (m.dtype in DTYPES, f"model.dtype={m.dtype!r}; use one of {tuple(DTYPES)}."),
  ]
  for ok, msg in checks:
    if not ok:
      raise ValueError(f"bad config: {msg}")


def codebook_sizes(model_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """K of every quantizer level, top first (single/hierarchical: num_codes each).

  HQ-VAE kinds: num_codes is one int for all num_layers layers, or a tuple of
  num_layers ints.
  """
  m = model_config
  if m.kind not in HQVAE_KINDS:
    num_levels = 1 if m.kind == "single" else 2
    quantizer = m.get("quantizer", "ema")
    if quantizer == "fsq":
      return (math.prod(int(l) for l in m.fsq_levels),) * num_levels
    if quantizer == "lfq":
      return (2**int(m.code_dim),) * num_levels
    return (int(m.num_codes),) * num_levels
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
    return layer_names(len(codebook_sizes(model_config)))
  return ("codes",) if model_config.kind == "single" else ("top", "bottom")


def level_codebook_sizes(model_config: ml_collections.ConfigDict) -> dict[str, int]:
  """{level name: K} (the index space of each level's `indices`)."""
  return dict(zip(level_names(model_config), codebook_sizes(model_config)))


def level_num_groups(model_config: ml_collections.ConfigDict) -> dict[str, int]:
  """{level name: G}: num_groups for quantizer='grouped', else 1."""
  g = int(model_config.num_groups) if model_config.get("quantizer") == "grouped" else 1
  return {name: g for name in level_names(model_config)}


def bits_per_position(model_config: ml_collections.ConfigDict) -> float:
  """Bits one latent position of one level carries (capacity.bits_per_position).

  'ema', 'learned', 'stochastic': log2 K; 'grouped': G log2(K / G); 'fsq':
  sum log2 L_i; 'lfq': code_dim.
  """
  m = model_config
  quantizer = m.get("quantizer", "ema")
  if quantizer == "grouped":
    return capacity.bits_per_position("grouped", num_codes=int(m.num_codes),
                                      num_groups=int(m.num_groups))
  if quantizer == "fsq":
    return capacity.bits_per_position("fsq", levels=tuple(m.fsq_levels))
  if quantizer == "lfq":
    return capacity.bits_per_position("lfq", code_dim=int(m.code_dim))
  return capacity.bits_per_position("vq", num_codes=codebook_sizes(m)[0])


def _ema_quantizer(m, **size):
  return functools.partial(
      VectorQuantizerEMA, **size, beta=m.beta, decay=m.decay,
      eps=m.eps, codebook_init=m.codebook_init, kmeans_iters=m.kmeans_iters,
      init_noise=m.init_noise,
      reset_threshold=m.reset_threshold, reset_window=m.reset_window,
      reset_rule=m.reset_rule, reset_average_size=m.reset_average_size,
      reset_criterion=m.reset_criterion,
      search_chunk_size=m.search_chunk_size,
      search_rows_per_block=m.search_rows_per_block,
      gradient_estimator=m.get("gradient_estimator", "ste"))


def _learned_quantizer(m, **size):
  return functools.partial(
      LearnedCodebookQuantizer, **size, beta=m.beta, l2_normalize=m.l2_normalize,
      gradient_estimator=m.gradient_estimator, search_chunk_size=m.search_chunk_size,
      search_rows_per_block=m.search_rows_per_block)


def create_quantizer(model_config: ml_collections.ConfigDict, *, sized: bool = True,
                     active_groups: int | None = None):
  """A factory of the configured quantizer (one instance per level).

  sized=True binds num_codes and code_dim (single/hierarchical models call
  `quantizer(name=...)`); the HQ-VAE models pass them per layer (sized=False).
  active_groups (quantizer='grouped'): decode with only the first k groups.
  """
  m = model_config
  quantizer = m.get("quantizer", "ema")
  size = dict(num_codes=m.num_codes, code_dim=m.code_dim) if sized else {}
  if quantizer == "grouped":
    sub = _learned_quantizer(m) if m.group_quantizer == "learned" else _ema_quantizer(m)
    return grouped_factory(
        int(m.num_groups), int(m.num_codes), int(m.code_dim), quantizer=sub,
        gradient_estimator=m.gradient_estimator, group_dropout=m.group_dropout,
        drop_probs=tuple(m.group_drop_probs), dropout_scope=m.group_dropout_scope,
        active_groups=active_groups)
  if quantizer == "fsq":
    return functools.partial(FiniteScalarQuantizer, levels=tuple(m.fsq_levels),
                             eps=m.fsq_eps)
  if quantizer == "lfq":
    return functools.partial(
        LookupFreeQuantizer, code_dim=int(m.code_dim), entropy_weight=m.lfq_entropy_weight,
        diversity_weight=m.lfq_diversity_weight, temperature=m.lfq_temperature,
        commitment_weight=m.lfq_commitment_weight)
  if quantizer == "learned":
    return _learned_quantizer(m, **size)
  if quantizer == "stochastic":
    return functools.partial(
        StochasticQuantizer, **size, log_var_init=m.sq_log_var_init,
        variance_offset=m.sq_variance_offset, tau0=m.sq_tau0, tau_rate=m.sq_tau_rate,
        tau_min=m.sq_tau_min, eval_mode=m.sq_eval_mode)
  return _ema_quantizer(m, **size)


def create_model(model_config: ml_collections.ConfigDict, *,
                 active_groups: int | None = None):
  """The network `model_config.kind` names, with `model_config.quantizer`.

  active_groups (quantizer='grouped'): every level decodes from only its first
  k groups (the rest zeros); the variables are those of the full model.
  """
  m = model_config
  check_buildable(m)
  if m.kind in HQVAE_KINDS:
    common = dict(quantizer=create_quantizer(m, sized=False),
                  num_codes=codebook_sizes(m), code_dim=m.code_dim, width=m.channels,
                  num_res_blocks=m.num_res_blocks, stem_downsamples=m.stem_downsamples,
                  num_pools=m.num_pools, decoder_variance=m.decoder_variance,
                  dtype=DTYPES[m.dtype])
    if m.kind == "injected_topdown":
      return InjectedTopDownVAE(**common)
    return ResidualTopDownVAE(shared_codebook=m.shared_codebook, **common)
  common = dict(channels=m.channels, code_dim=m.code_dim,
                quantizer=create_quantizer(m, active_groups=active_groups),
                num_groups=level_num_groups(m)[level_names(m)[0]],
                res_channels=m.res_channels or None,
                num_res_blocks=m.num_res_blocks,
                factorized_codes=m.factorized_codes,
                dtype=DTYPES[m.dtype])
  if m.kind == "single":
    return SingleLevelVQVAE(**common)
  return HierarchicalVQVAE(conditioned=m.conditioned, **common)
