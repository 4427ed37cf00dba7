"""Vector quantizer with a learned codebook (in `params`, trained by the optimizer).

The VQ-VAE quantizer of van den Oord et al. 2017 (Eq. 3): nearest code,
codebook loss |sg(z) - e|^2 moving the codes, commitment loss beta |z - sg(e)|^2
moving the encoder, straight-through (or rotation-trick) gradient to z.
With l2_normalize=True, z and the codes are projected onto the unit sphere
before the look-up (cosine similarity, as MGVQ's released code and
vector-quantize-pytorch's use_cosine_sim), the losses are taken between the
normalised vectors and z_q is the normalised code.

Variables (`params`): embedding [K, D] float32, initialised U(-1/K, 1/K).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax import metrics
from vqjax.quantizers import code_search, gradients
from vqjax.quantizers.base import Quantizer
from vqjax.quantizers.code_search import (nearest_code, resolve_rows_per_block,
                                          search_vectors)
from vqjax.quantizers.gradients import straight_through

NORM_EPS = 1e-12


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / max(|x|, NORM_EPS) along `axis` (float32)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), NORM_EPS)


class LearnedCodebookQuantizer(Quantizer):
  """Nearest-code quantizer whose K x D codebook is a trained parameter.

  Call with z_e [..., D]. Returns (z_q, aux): z_q [..., D] (dtype of z_e), the
  (normalised, with l2_normalize) codes with the `gradient_estimator` gradient
  to z_e; aux['indices'] [...] int32; aux['losses'] = {'codebook': mean
  |sg(z) - e|^2, 'commitment': beta mean |z - sg(e)|^2}; aux['metrics'] =
  {'perplexity', 'codes_used'} of this batch. Behaves the same with
  train=True and False (no state besides params); `step` is unused.
  """

  num_codes: int
  code_dim: int
  beta: float = 0.25
  l2_normalize: bool = False
  gradient_estimator: str = "ste"  # 'ste' | 'rotation'
  search_chunk_size: int = 0
  search_rows_per_block: int = -1  # -1: auto, see code_search.default_rows_per_block

  @property
  def codebook_size(self) -> int:
    """Size of the index space of `aux['indices']`."""
    return self.num_codes

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work (`key`: argument name -> config key)."""
    if self.beta < 0:
      raise ValueError(f"{key('beta')}={self.beta} must be >= 0.")
    gradients.check_estimator(self.gradient_estimator, key=key)
    code_search.check_chunk_size(self.search_chunk_size, self.num_codes, key=key)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [...] in [0, K) -> their (normalised, with l2_normalize) codes [..., D]."""
    codebook = self.get_variable("params", "embedding")
    if self.l2_normalize:
      codebook = l2_normalize(codebook)
    return codebook[codes]

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    del train, step
    self.check()
    z = search_vectors(z_e, self.code_dim)
    k = self.num_codes
    init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0 / k, 1.0 / k)
    codebook = self.param("embedding", init, (k, self.code_dim))
    if self.l2_normalize:
      z, codebook = l2_normalize(z), l2_normalize(codebook)

    chunk = self.search_chunk_size or None
    rows = resolve_rows_per_block(self.search_rows_per_block, k, chunk)
    indices = nearest_code(jax.lax.stop_gradient(z), jax.lax.stop_gradient(codebook),
                           chunk, rows)
    z_q = codebook[indices]                       # gradient to the codebook
    losses = dict(codebook=jnp.mean((z_q - jax.lax.stop_gradient(z))**2),
                  commitment=self.beta * jnp.mean((z - jax.lax.stop_gradient(z_q))**2))
    z_q_st = straight_through(z, jax.lax.stop_gradient(z_q), self.gradient_estimator)
    counts = metrics.code_counts(indices, k)
    aux = dict(indices=indices.reshape(z_e.shape[:-1]), losses=losses,
               metrics=dict(perplexity=metrics.perplexity_from_counts(counts),
                            codes_used=jnp.sum(counts > 0).astype(jnp.int32)))
    return z_q_st.reshape(z_e.shape).astype(z_e.dtype), aux
