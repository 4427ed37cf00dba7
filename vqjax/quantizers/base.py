"""The quantizer interface: what every quantizer of vqjax implements.

A quantizer is a flax.linen Module. Training and evaluation call it:

    z_q, aux = quantizer(z_e, train=train, step=step)

and using a trained model goes through its codes:

    codes = quantizer.encode(z_e)      # int32 [..., *code_shape]
    z_q = quantizer.decode(codes)      # [..., D], bit-identical to the z_q of
                                       # quantizer(z_e, train=False)

z_e: [..., D] (any leading shape); z_q: the same shape, what the decoder reads.
`step` ([] int32, traced; None outside training) is for schedules (a Gumbel
temperature); others ignore it. aux is a dict:

  indices  int32 [..., *code_shape]: the codes (what `encode` returns)
  losses   {name: [] float32}: terms already weighted, added to the training loss
  metrics  {name: [] scalar}: logged per level (perplexity, codes used, ...)
  posterior  (optional) float32 [..., K]: P(k | z) of a stochastic quantizer

The code space, static (Python ints, known without variables):

  code_shape       () for one code per position; (G,) grouped, (L,) residual
  codebook_size    every entry of the codes lies in [0, codebook_size)
  histogram_size   the joint index space of a position's entries: the size of
                   evaluation's code histogram (grouped: G codebooks of K/G
                   side by side, K in all; residual: L codebooks of K, or one
                   shared)
  flat_codes(codes)  -> int32 [..., E]: the entries offset into [0, histogram_size)
  entries          (metrics key, names) of codebooks side by side in the histogram
  bits_per_position  bits one latent position carries

Where a quantizer keeps its state is its own business (the EMA codebook in the
`codebook` collection, a learned one in `params`, none for FSQ/LFQ); nothing
outside the quantizer reads its variables.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Quantizer(nn.Module):
  """Base class of the quantizers: `encode` and the code-space defaults.

  Subclasses define `__call__`, `decode`, `codebook_size` and, when their
  codes have more than one entry per position, `code_shape` and `flat_codes`.
  """

  def encode(self, z_e: jax.Array) -> jax.Array:
    """z_e [..., D] -> codes int32 [..., *code_shape] (evaluation mode; nothing mutated)."""
    return self(z_e, train=False)[1]["indices"]

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [..., *code_shape] -> z_q [..., D] float32."""
    raise NotImplementedError(f"{type(self).__name__} does not implement decode.")

  @property
  def code_shape(self) -> tuple[int, ...]:
    return ()

  @property
  def codebook_size(self) -> int:
    raise NotImplementedError

  @property
  def histogram_size(self) -> int:
    return self.codebook_size * math.prod(self.code_shape)

  def flat_codes(self, codes: jax.Array) -> jax.Array:
    """codes [..., *code_shape] -> [..., E] entries in [0, histogram_size)
    (entry i of a multi-entry code offset by i * codebook_size)."""
    if not self.code_shape:
      return codes[..., None]
    entries = math.prod(self.code_shape)
    flat = codes.reshape(codes.shape[:codes.ndim - len(self.code_shape)] + (entries,))
    return flat + jnp.arange(entries, dtype=flat.dtype) * self.codebook_size

  @property
  def entries(self) -> tuple[str, tuple[str, ...]]:
    """(metrics key, names) of the codebooks side by side in the histogram
    (grouped: ('groups', ('group_0', ...))); ('', ()) for one codebook."""
    return "", ()

  @property
  def bits_per_position(self) -> float:
    return math.prod(self.code_shape) * math.log2(self.codebook_size)


def check_codes(codes: jax.Array, quantizer: Quantizer) -> None:
  """ValueError unless `codes`' trailing shape is the quantizer's code_shape (static)."""
  shape = tuple(quantizer.code_shape)
  if shape and tuple(codes.shape[codes.ndim - len(shape):]) != shape:
    raise ValueError(f"{type(quantizer).__name__} codes must end in {shape}; got "
                     f"shape {codes.shape}.")


def check_code_range(codes, codebook_size: int, level: str) -> None:
  """ValueError naming the level and the valid range unless every entry of the
  integer array `codes` (host side, NumPy) lies in [0, codebook_size)."""
  codes = np.asarray(codes)
  if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
    bad = codes.min() if codes.min() < 0 else codes.max()
    raise ValueError(f"code index {bad} out of range in level {level!r}: valid indices "
                     f"are 0 .. {codebook_size - 1} (K = {codebook_size}).")
