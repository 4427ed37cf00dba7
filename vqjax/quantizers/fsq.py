"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar
Quantization: VQ-VAE Made Simple").

Each of the D = len(levels) channels is bounded with a tanh and rounded to one
of L_i integer levels; the codebook is implicit, the product grid of
prod(levels) codes, with no parameters, no codebook state and no loss.

Per channel with L levels:
  half_l = (L - 1) (1 + eps) / 2,  offset = 0 (L odd) or 1/2 (L even),
  bound(z) = tanh(z + arctanh(offset / half_l)) half_l - offset,
  code     = round_ste(bound(z)) / (L // 2).
The paper's appendix code has `tan` where `arctanh` makes bound(0) = 0, and
(1 - eps), with which arctanh(offset / half_l) is undefined for L = 2; this is
vector-quantize-pytorch's corrected form. eps lets the bound reach slightly past
the outermost levels; it needs (L - 1) eps < 1 so that no value rounds beyond them.
Odd L: integer levels -(L-1)/2 .. (L-1)/2, codes symmetric in [-1, 1].
Even L: the half-step offset gives the L integers -L/2 .. L/2 - 1, codes in
[-1, 1 - 2/L] (e.g. L = 8: -1, -0.75, ..., 0.75).

Index (mixed radix, channel 0 the least significant digit):
  digit_i = code_i (L_i // 2) + L_i // 2 in [0, L_i),
  index = sum_i digit_i prod_{j < i} L_j.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax import metrics
from vqjax.quantizers.base import Quantizer

MAX_CODEBOOK_SIZE = 2**31 - 1  # indices are int32


def check_levels(levels: Sequence[int], eps: float = 1e-3) -> tuple[int, ...]:
  """levels as a tuple of ints >= 2 whose product fits an int32 index."""
  levels = tuple(int(l) for l in levels)
  if not levels or min(levels) < 2:
    raise ValueError(f"levels={levels}: need at least one channel and >= 2 levels "
                     "per channel, e.g. (8, 5, 5, 5).")
  if eps <= 0.0 or (max(levels) - 1) * eps >= 1.0:
    raise ValueError(f"eps={eps} with {max(levels)} levels: need 0 < eps < 1 / (L - 1) "
                     "(eps > 0 keeps the even-L shift finite; eps < 1 / (L - 1) keeps "
                     "every value within the outermost level).")
  if math.prod(levels) > MAX_CODEBOOK_SIZE:
    raise ValueError(f"levels={levels}: prod = {math.prod(levels)} codes do not fit "
                     "an int32 index; use fewer channels or levels.")
  return levels


def _per_channel(levels: Sequence[int]):
  """(L, half_width = L // 2, basis = prod_{j<i} L_j) as numpy arrays [D]."""
  lv = np.asarray(levels, np.int64)
  basis = np.cumprod(np.concatenate([[1], lv[:-1]]))
  return lv, lv // 2, basis


def bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """z [..., D] -> tanh-bounded values on the integer scale (float32), see module doc."""
  lv, _, _ = _per_channel(levels)
  half_l = (lv - 1) * (1.0 + eps) / 2.0
  offset = np.where(lv % 2 == 1, 0.0, 0.5)
  shift = np.arctanh(offset / half_l)
  z = z.astype(jnp.float32)
  return (jnp.tanh(z + shift.astype(np.float32)) * half_l.astype(np.float32)
          - offset.astype(np.float32))


def round_ste(x: jax.Array) -> jax.Array:
  """round(x) forward (exactly: x - sg(x) is 0), identity backward."""
  return jax.lax.stop_gradient(jnp.round(x)) + (x - jax.lax.stop_gradient(x))


def quantize(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """z [..., D] -> codes [..., D] float32 on the normalised grid (round_ste(bound) / (L // 2))."""
  _, half_width, _ = _per_channel(levels)
  return round_ste(bound(z, levels, eps)) / half_width.astype(np.float32)


def codes_to_indices(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
  """Codes [..., D] on the grid -> int32 indices [...] (mixed radix, channel 0 least significant)."""
  _, half_width, basis = _per_channel(levels)
  digits = jnp.round(codes.astype(jnp.float32) * half_width + half_width).astype(jnp.int32)
  return jnp.sum(digits * basis.astype(np.int32), axis=-1).astype(jnp.int32)


def indices_to_codes(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
  """int indices [...] in [0, prod(levels)) -> codes [..., D] float32 (inverse of codes_to_indices)."""
  lv, half_width, basis = _per_channel(levels)
  digits = (indices[..., None].astype(jnp.int32) // basis.astype(np.int32)) % lv.astype(np.int32)
  return ((digits - half_width.astype(np.int32)).astype(jnp.float32)
          / half_width.astype(np.float32))


def batch_usage(indices: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(perplexity [] float32, codes used [] int32) of one batch's indices (any shape).

  Counts the distinct indices by sorting, so the cost is O(N log N) in the
  number of indices and independent of the (implicit) codebook size; no [K]
  histogram is built.
  """
  flat = jnp.sort(jnp.ravel(indices))
  n = flat.shape[0]
  start = jnp.concatenate([jnp.ones((1,), bool), flat[1:] != flat[:-1]])
  run = jnp.cumsum(start.astype(jnp.int32)) - 1
  counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), run, num_segments=n)
  return metrics.perplexity_from_counts(counts), jnp.sum(start).astype(jnp.int32)


class FiniteScalarQuantizer(Quantizer):
  """FSQ with an implicit codebook of prod(levels) codes (module docstring).

  Call with z_e [..., D], D = len(levels). Returns (z_q, aux): z_q [..., D]
  (dtype of z_e) on the normalised grid, with the gradient of the bounding
  tanh and the straight-through rounding; aux['indices'] [...] int32;
  aux['losses'] = {} (FSQ has none); aux['metrics'] = {'perplexity',
  'codes_used'} of this batch. `train` and `step` are accepted and unused:
  FSQ has no state and behaves the same in training and evaluation.
  """

  levels: Sequence[int]
  eps: float = 1e-3  # the bound's reach past the outermost levels (module doc)

  @property
  def codebook_size(self) -> int:
    """prod(levels): the size of the index space of `aux['indices']`."""
    return math.prod(check_levels(self.levels, self.eps))

  @property
  def code_dim(self) -> int:
    """len(levels): the channels FSQ quantizes."""
    return len(self.levels)

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work (`key`: argument name -> config key)."""
    try:
      check_levels(self.levels, self.eps)
    except ValueError as e:
      raise ValueError(f"{key('levels')} / {key('eps')}: {e}") from None

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [...] in [0, prod(levels)) -> codes [..., len(levels)] on the grid."""
    return indices_to_codes(codes, check_levels(self.levels, self.eps))

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    del train, step
    levels = check_levels(self.levels, self.eps)
    if z_e.shape[-1] != len(levels):
      raise ValueError(f"FSQ input has {z_e.shape[-1]} channels, expected "
                       f"len(levels)={len(levels)} for levels={levels}.")
    codes = quantize(z_e, levels, self.eps)
    indices = codes_to_indices(jax.lax.stop_gradient(codes), levels)
    perplexity, used = batch_usage(indices)
    aux = dict(indices=indices, losses={},
               metrics=dict(perplexity=perplexity, codes_used=used))
    return codes.astype(z_e.dtype), aux
