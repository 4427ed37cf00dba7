"""Build a model (and its quantizers) from `config.model`."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections

from vqjax.models.vqvae import HierarchicalVQVAE, SingleLevelVQVAE
from vqjax.quantizers.ema_vq import VectorQuantizerEMA

MODEL_KINDS = ("single", "hierarchical")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def level_names(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Quantizer level names in the model's aux output and in the metrics."""
  return ("codes",) if model_config.kind == "single" else ("top", "bottom")


def create_quantizer(model_config: ml_collections.ConfigDict):
  """A factory of the configured quantizer (one instance per level)."""
  m = model_config
  return functools.partial(
      VectorQuantizerEMA,
      num_codes=m.num_codes, code_dim=m.code_dim, beta=m.beta, decay=m.decay,
      eps=m.eps, codebook_init=m.codebook_init, kmeans_iters=m.kmeans_iters,
      init_noise=m.init_noise,
      reset_threshold=m.reset_threshold, reset_window=m.reset_window,
      reset_rule=m.reset_rule, reset_average_size=m.reset_average_size,
      reset_criterion=m.reset_criterion,
      search_chunk_size=m.search_chunk_size,
      search_rows_per_block=m.search_rows_per_block)


def create_model(model_config: ml_collections.ConfigDict):
  """SingleLevelVQVAE or HierarchicalVQVAE as `model_config.kind` says."""
  m = model_config
  if m.kind not in MODEL_KINDS:
    raise ValueError(f"config.model.kind={m.kind!r}; choose one of {MODEL_KINDS}.")
  if m.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype={m.dtype!r}; choose one of {tuple(DTYPES)}.")
  common = dict(channels=m.channels, code_dim=m.code_dim,
                quantizer=create_quantizer(m),
                res_channels=m.res_channels or None,
                num_res_blocks=m.num_res_blocks,
                factorized_codes=m.factorized_codes,
                dtype=DTYPES[m.dtype])
  if m.kind == "single":
    return SingleLevelVQVAE(**common)
  return HierarchicalVQVAE(conditioned=m.conditioned, **common)
