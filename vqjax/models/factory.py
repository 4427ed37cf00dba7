"""Build a model (and its quantizers) from `config.model`.

Kinds: 'single' / 'hierarchical' (vqvae.py, levels `codes` / `top`, `bottom`)
and the HQ-VAE top-down networks 'injected_topdown' / 'residual_topdown'
(hqvae.py, levels `layer_1`..`layer_L`). `config.model.quantizer` picks the
family for any kind: 'ema' (VectorQuantizerEMA) or 'stochastic'
(StochasticQuantizer).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections

from vqjax.models.hqvae import InjectedTopDownVAE, ResidualTopDownVAE, layer_names
from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.stochastic import StochasticQuantizer

MODEL_KINDS = ("single", "hierarchical", "injected_topdown", "residual_topdown")
HQVAE_KINDS = ("injected_topdown", "residual_topdown")
QUANTIZERS = ("ema", "stochastic")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def codebook_sizes(model_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """K of every quantizer level, top first (single/hierarchical: num_codes each).

  HQ-VAE kinds: num_codes is one int for all num_layers layers, or a tuple of
  num_layers ints.
  """
  m = model_config
  if m.kind not in HQVAE_KINDS:
    return (int(m.num_codes),) * (1 if m.kind == "single" else 2)
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


def create_quantizer(model_config: ml_collections.ConfigDict, *, sized: bool = True):
  """A factory of the configured quantizer (one instance per level).

  sized=True binds num_codes and code_dim (single/hierarchical models call
  `quantizer(name=...)`); the HQ-VAE models pass them per layer (sized=False).
  """
  m = model_config
  size = dict(num_codes=m.num_codes, code_dim=m.code_dim) if sized else {}
  if m.get("quantizer", "ema") == "stochastic":
    return functools.partial(
        StochasticQuantizer, **size, log_var_init=m.sq_log_var_init,
        variance_offset=m.sq_variance_offset, tau0=m.sq_tau0, tau_rate=m.sq_tau_rate,
        tau_min=m.sq_tau_min, eval_mode=m.sq_eval_mode)
  return functools.partial(
      VectorQuantizerEMA, **size, beta=m.beta, decay=m.decay,
      eps=m.eps, codebook_init=m.codebook_init, kmeans_iters=m.kmeans_iters,
      init_noise=m.init_noise,
      reset_threshold=m.reset_threshold, reset_window=m.reset_window,
      reset_rule=m.reset_rule, reset_average_size=m.reset_average_size,
      reset_criterion=m.reset_criterion,
      search_chunk_size=m.search_chunk_size,
      search_rows_per_block=m.search_rows_per_block)


def create_model(model_config: ml_collections.ConfigDict):
  """The network `model_config.kind` names, with `model_config.quantizer`."""
  m = model_config
  if m.kind not in MODEL_KINDS:
    raise ValueError(f"config.model.kind={m.kind!r}; choose one of {MODEL_KINDS}.")
  if m.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype={m.dtype!r}; choose one of {tuple(DTYPES)}.")
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
                quantizer=create_quantizer(m),
                res_channels=m.res_channels or None,
                num_res_blocks=m.num_res_blocks,
                factorized_codes=m.factorized_codes,
                dtype=DTYPES[m.dtype])
  if m.kind == "single":
    return SingleLevelVQVAE(**common)
  return HierarchicalVQVAE(conditioned=m.conditioned, **common)
