"""Lookup-free quantization (LFQ; Yu et al. 2023, "Language Model Beats
Diffusion -- Tokenizer Is Key to Visual Generation", MAGVIT-v2, Sec. 3.1).

Each of the D channels is quantized to its sign, q_i = +1 if z_i > 0 else -1
(z_i = 0 gives -1), with a straight-through gradient. The codebook is implicit,
{-1, +1}^D with 2^D codes; the index is the bits of the signs, channel 0 the
least significant bit: index = sum_i [z_i > 0] 2^i.

Entropy penalty (Sec. 3.1), in nats, over the soft assignment
p(c | z) = softmax_c(-|z - c|^2 / temperature) to the 2^D codes:
  L_entropy = entropy_weight * (E_z[H(p(.|z))] - diversity_weight * H(E_z[p(.|z)])),
the expectation over every position of the (global) batch. The first term
makes each assignment confident, the second spreads the batch over the codes.
p factorises over channels (p(c_i = +1 | z) = sigmoid(4 z_i / temperature)),
so the per-sample entropy is a sum of D binary entropies; the batch-averaged
distribution does not factorise and is built over all 2^D codes, in blocks of
`entropy_chunk_size` codes: O(N 2^D) time, O(N chunk) memory for N positions.
That limits the penalty to D <= MAX_ENTROPY_BITS = 16.
temperature = 0.01 is vector-quantize-pytorch's inv_temperature = 100 (its
logits 2 z.c * 100 equal -|z - c|^2 / 0.01 up to a per-z constant).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.quantizers.base import Quantizer
from vqjax.quantizers.fsq import batch_usage

MAX_BITS = 30          # int32 indices
MAX_ENTROPY_BITS = 16  # the entropy penalty enumerates 2^D codes


def check_settings(*, code_dim: int, entropy_weight: float, commitment_weight: float,
                   temperature: float,
                   key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError for settings that cannot work (`LookupFreeQuantizer` runs it;
  `config_lib.validate` too, `key` mapping each name to its config key)."""
  if not 1 <= code_dim <= MAX_BITS:
    raise ValueError(f"{key('code_dim')}={code_dim}: LFQ's code_dim is its bits, "
                     f"1..{MAX_BITS} (int32 indices).")
  if entropy_weight > 0 and code_dim > MAX_ENTROPY_BITS:
    raise ValueError(f"{key('code_dim')}={code_dim} > MAX_ENTROPY_BITS={MAX_ENTROPY_BITS} "
                     f"with {key('entropy_weight')}={entropy_weight}: the entropy penalty "
                     f"enumerates 2^code_dim codes; set {key('entropy_weight')}=0 or use "
                     "fewer bits.")
  if entropy_weight < 0 or commitment_weight < 0 or temperature <= 0:
    raise ValueError(f"{key('entropy_weight')}={entropy_weight}, {key('commitment_weight')}="
                     f"{commitment_weight} must be >= 0 and {key('temperature')}="
                     f"{temperature} > 0.")


def sign_codes(z: jax.Array) -> jax.Array:
  """z [..., D] -> {-1, +1} float32 (z > 0 -> +1, else -1), no gradient."""
  return jnp.where(z > 0, 1.0, -1.0).astype(jnp.float32)


def codes_to_indices(codes: jax.Array) -> jax.Array:
  """Sign codes [..., D] -> int32 indices [...]; channel i is bit i (channel 0 least significant)."""
  bits = (codes > 0).astype(jnp.int32)
  weights = jnp.left_shift(1, jnp.arange(codes.shape[-1], dtype=jnp.int32))
  return jnp.sum(bits * weights, axis=-1).astype(jnp.int32)


def indices_to_codes(indices: jax.Array, num_bits: int) -> jax.Array:
  """int indices [...] -> sign codes [..., num_bits] float32 (inverse of codes_to_indices)."""
  bits = jnp.right_shift(indices[..., None].astype(jnp.int32),
                         jnp.arange(num_bits, dtype=jnp.int32)) & 1
  return 2.0 * bits.astype(jnp.float32) - 1.0


def entropy_terms(z: jax.Array, temperature: float,
                  chunk_size: int = 4096) -> tuple[jax.Array, jax.Array]:
  """(mean per-sample entropy, entropy of the batch-mean assignment), nats, [] float32.

  z: [N, D] (D <= MAX_ENTROPY_BITS). See the module docstring for the
  definitions; the sums run over all N rows (the global batch under jit).
  """
  n, d = z.shape
  if d > MAX_ENTROPY_BITS:
    raise ValueError(f"the LFQ entropy penalty enumerates 2^{d} codes; D={d} exceeds "
                     f"MAX_ENTROPY_BITS={MAX_ENTROPY_BITS}. Set entropy_weight=0 or use "
                     "fewer channels.")
  a = 4.0 * z.astype(jnp.float32) / temperature       # logit of c_i = +1
  log_plus, log_minus = jax.nn.log_sigmoid(a), jax.nn.log_sigmoid(-a)
  p_plus = jax.nn.sigmoid(a)
  # Binary entropy from the logits, -p log p - (1 - p) log(1 - p): finite
  # gradients where sigmoid saturates to 0 or 1 (entr' is infinite there).
  per_sample = jnp.mean(jnp.sum(-p_plus * log_plus - (1.0 - p_plus) * log_minus, axis=-1))

  num_codes = 2**d
  chunk = min(chunk_size, num_codes)  # powers of two: chunk divides 2^d
  shifts = jnp.arange(d, dtype=jnp.int32)
  hi = jax.lax.Precision.HIGHEST

  def block_mean(offset):
    codes = offset + jnp.arange(chunk, dtype=jnp.int32)
    bits = ((codes[:, None] >> shifts) & 1).astype(jnp.float32)     # [chunk, D]
    # log p(c | z) = sum_i b_i log s(a_i) + (1 - b_i) log s(-a_i): sums of
    # non-positive terms, no cancellation.
    log_p = (jnp.dot(log_plus, bits.T, precision=hi)
             + jnp.dot(log_minus, 1.0 - bits.T, precision=hi))     # [N, chunk]
    return jnp.mean(jnp.exp(log_p), axis=0)

  offsets = jnp.arange(0, num_codes, chunk, dtype=jnp.int32)
  avg = jax.lax.map(block_mean, offsets).reshape(num_codes)
  # -sum p log p with log clamped at the smallest normal float: codes whose
  # probability underflows to 0 contribute 0 with a finite gradient.
  tiny = jnp.finfo(jnp.float32).tiny
  return per_sample, -jnp.sum(avg * jnp.log(jnp.maximum(avg, tiny)))


class LookupFreeQuantizer(Quantizer):
  """LFQ with an implicit codebook of 2^code_dim sign codes (module docstring).

  Call with z_e [..., D], D = code_dim <= MAX_BITS. Returns (z_q, aux): z_q
  [..., D] in {-1, +1} (dtype of z_e) with the straight-through gradient;
  aux['indices'] [...] int32; aux['losses'] holds 'entropy' (if
  entropy_weight > 0) and 'commitment' = commitment_weight * mean |z_e -
  sg(z_q)|^2 (if commitment_weight > 0); aux['metrics'] = {'perplexity',
  'codes_used'} of this batch, plus the unweighted 'per_sample_entropy' and
  'codebook_entropy' when the penalty is on. Defaults are vector-quantize-
  pytorch's (entropy weight 0.1, diversity 1, commitment 0.25). `train` and
  `step` are accepted and unused.
  """

  code_dim: int
  entropy_weight: float = 0.1
  diversity_weight: float = 1.0   # gamma on the codebook (batch) entropy
  temperature: float = 0.01
  commitment_weight: float = 0.25
  entropy_chunk_size: int = 4096  # codes per block of the batch entropy

  @property
  def codebook_size(self) -> int:
    """2^code_dim: the size of the index space of `aux['indices']`."""
    return 2**self.code_dim

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work (`key`: argument name -> config key)."""
    check_settings(code_dim=self.code_dim, entropy_weight=self.entropy_weight,
                   commitment_weight=self.commitment_weight, temperature=self.temperature,
                   key=key)
    if self.entropy_chunk_size < 1 or self.entropy_chunk_size & (self.entropy_chunk_size - 1):
      raise ValueError(f"{key('entropy_chunk_size')}={self.entropy_chunk_size} must be a "
                       "power of two.")

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [...] in [0, 2^code_dim) -> sign codes [..., code_dim] float32."""
    return indices_to_codes(codes, self.code_dim)

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    del train, step
    self.check()
    if z_e.shape[-1] != self.code_dim:
      raise ValueError(f"LFQ input has {z_e.shape[-1]} channels, expected "
                       f"code_dim={self.code_dim}.")
    z = z_e.astype(jnp.float32)
    codes = sign_codes(jax.lax.stop_gradient(z))
    indices = codes_to_indices(codes)
    perplexity, used = batch_usage(indices)
    losses, stats = {}, dict(perplexity=perplexity, codes_used=used)
    if self.entropy_weight > 0:
      per_sample, codebook = entropy_terms(z.reshape(-1, self.code_dim), self.temperature,
                                           self.entropy_chunk_size)
      losses["entropy"] = self.entropy_weight * (per_sample
                                                 - self.diversity_weight * codebook)
      stats.update(per_sample_entropy=per_sample, codebook_entropy=codebook)
    if self.commitment_weight > 0:
      losses["commitment"] = self.commitment_weight * jnp.mean(
          (z - jax.lax.stop_gradient(codes))**2)
    z_q = codes + (z - jax.lax.stop_gradient(z))  # exactly the codes; identity backward
    aux = dict(indices=indices, losses=losses, metrics=stats)
    return z_q.astype(z_e.dtype), aux
