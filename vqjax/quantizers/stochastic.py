"""Stochastic quantizer of SQ-VAE (Takida et al. 2022) and HQ-VAE (TMLR 2024).

Stochastic quantization is the Bayes inverse of a Gaussian dequantization
N(z; b_k, s^2 I): the posterior over codes at a latent vector z is

    P(k | z) = softmax_k(-|z - b_k|^2 / (2 s^2)),

computed in float32 (the logits grow like 1/s^2 while s^2 self-anneals). As in
the released code the dequantization step is not sampled (z~ := z_e).

train=True: a Gumbel-softmax *soft* sample y = softmax((logits + g) / tau),
z_q = y @ B, a convex combination of codes (no straight-through, no hard
one-hot); tau = temperature(step, ...) from the traced `step`.
train=False: eval_mode='det' (default) z_q = the nearest code (ties to the
lowest index, as `code_search.nearest_code`); 'sample' draws k ~ Categorical(P).

Which path builds [N, K] arrays (N vectors, K codes): the posterior P, hence
aux['posterior'], the losses and the metrics, needs the dense distances
(`code_search.squared_distances`) and a softmax over K in every mode, as do
training (Gumbel-softmax weights; its indices are the first minimum of those
distances, `code_search.first_minimum`) and 'sample' (categorical over the
logits). The 'det' indices and z_q come from the blocked
`code_search.nearest_code` (blocks of search_chunk_size codes by
search_rows_per_block rows; the model factory leaves both at their defaults,
all codes by automatic row blocks): a jitted caller that uses only those
(encoding) holds no [N, K] array, XLA dropping the unused posterior.

Variables (`params`, trained by the optimizer; no EMA, no reset, no data init):
  embedding [K, D] float32  codes, init N(0, 1) (absent with `shared_codebook`)
  log_var   []     float32  theta; s^2 = variance_offset + exp(theta)

Losses (per image: sums over positions and channels, mean over the leading
batch axis of z_e, weights 1, constants dropped as in the released code):
  neg_entropy  sum_i sum_k P log P / B       (= -H per image; may be negative)
  dequant      sum_i |z_i - z_q,i|^2 / (2 s^2) / B, z_q the soft mixture in
               training, the code at evaluation (`dequant_loss=False` drops it:
               RSQ-VAE puts one Eq. 14 term on the final residual instead).

Randomness (Gumbel noise, categorical samples) comes from the `sample` PRNG
stream, one key drawn for the global [N, K] shape: under a jit with the batch
sharded over devices the noise, hence the result, equals one device's.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import entr

from vqjax import metrics
from vqjax.quantizers import code_search
from vqjax.quantizers.base import Quantizer
from vqjax.quantizers.code_search import (first_minimum, nearest_code,
                                          resolve_rows_per_block, squared_distances)

RNG_STREAM = "sample"
EVAL_MODES = ("det", "sample")
MIN_VARIANCE = 1e-10   # the released code's floor on s^2
MIN_TEMPERATURE = 1e-10


def check_settings(*, eval_mode: str, tau0: float, tau_rate: float, tau_min: float,
                   variance_offset: float,
                   key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError for settings that cannot work (`StochasticQuantizer` runs it;
  `config_lib.validate` too, `key` mapping each name to its config key)."""
  if eval_mode not in EVAL_MODES:
    raise ValueError(f"{key('eval_mode')}={eval_mode!r}; choose one of {EVAL_MODES}.")
  if tau0 <= 0 or tau_rate < 0 or tau_min < 0:
    raise ValueError(f"{key('tau0')}={tau0}, {key('tau_rate')}={tau_rate}, "
                     f"{key('tau_min')}={tau_min}: the temperature schedule needs "
                     "tau0 > 0, tau_rate >= 0 and tau_min >= 0.")
  if variance_offset < 0:
    raise ValueError(f"{key('variance_offset')}={variance_offset} must be >= 0.")


def temperature(step, tau0: float = 1.0, rate: float = 1e-5,
                tau_min: float = 0.0) -> jax.Array:
  """Gumbel-softmax temperature max(tau0 * exp(-rate * step), tau_min) -> [] float32.

  `step` may be traced (no retrace per step). The released SQ-VAE trainer counts
  steps from 1; vqjax passes the 0-based `state.step` unless told otherwise.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.maximum(tau0 * jnp.exp(-rate * step), tau_min).astype(jnp.float32)


def variance(log_var: jax.Array, offset: float = 0.0) -> jax.Array:
  """s^2 = offset + exp(theta); offset=1 is the released SQ-VAE 'gaussian_1'."""
  return offset + jnp.exp(log_var)


class Codebook(nn.Module):
  """A learned codebook [K, D] in `params` ('embedding', init N(0, init_std^2)).

  Pass one instance as `shared_codebook` to several StochasticQuantizers to
  share the codes (each keeps its own s^2), as RSQ-VAE's shared codebook.
  """

  num_codes: int
  code_dim: int
  init_std: float = 1.0

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("embedding", nn.initializers.normal(self.init_std),
                      (self.num_codes, self.code_dim), jnp.float32)


class StochasticQuantizer(Quantizer):
  """SQ-VAE quantizer with a learned codebook and a learned scalar s^2.

  Call `z_q, aux = q(z_e, train=..., step=...)` with z_e [B, ..., D] (the
  leading axis is the batch for the per-image losses); z_q has z_e's shape and
  dtype. train=True needs `step` and the `sample` PRNG stream; train=False
  needs the stream only for eval_mode='sample'.

  aux['indices'] int32 [B, ...]: the nearest code (train: the first minimum of
  the dense distances; 'det': the blocked `code_search.nearest_code`, the same
  codes), the sampled code ('sample'). aux['posterior'] float32 [B, ..., K]: P(k | z) per
  position (evaluation sums it over the data set for the soft perplexity
  and the posterior entropy). aux['losses']: neg_entropy, dequant (see the module
  docstring). aux['metrics']: temperature, variance (s^2), entropy (mean
  posterior entropy per position, nats), perplexity_soft (exp H of the
  batch-mean posterior), perplexity (exp H of the batch's index histogram).
  `variance()` returns s^2 (differentiable), for losses built by a model.
  search_chunk_size / search_rows_per_block: the 'det' search's blocks, as
  `code_search.nearest_code`'s chunk_size / rows_per_block (0: all codes;
  -1: automatic rows, `code_search.resolve_rows_per_block`).
  """

  num_codes: int
  code_dim: int
  log_var_init: float = math.log(20.0)
  variance_offset: float = 0.0   # 1.0: released SQ-VAE code (s^2 >= 1)
  tau0: float = 1.0
  tau_rate: float = 1e-5
  tau_min: float = 0.0
  eval_mode: str = "det"
  dequant_loss: bool = True
  codebook_init_std: float = 1.0
  shared_codebook: Any = None    # a `Codebook` module shared between quantizers
  search_chunk_size: int = 0
  search_rows_per_block: int = -1

  def setup(self):
    if self.num_codes < 1 or self.code_dim < 1:
      raise ValueError(f"num_codes={self.num_codes} and code_dim={self.code_dim} "
                       "must be >= 1.")
    self.check()
    self.log_var = self.param("log_var", nn.initializers.constant(self.log_var_init),
                              (), jnp.float32)
    if self.shared_codebook is None:
      self.embedding = self.param("embedding", nn.initializers.normal(self.codebook_init_std),
                                  (self.num_codes, self.code_dim), jnp.float32)
    elif (self.shared_codebook.num_codes, self.shared_codebook.code_dim) != (
        self.num_codes, self.code_dim):
      raise ValueError(
          f"shared codebook is {self.shared_codebook.num_codes}x"
          f"{self.shared_codebook.code_dim}, the quantizer {self.num_codes}x{self.code_dim}.")

  @property
  def codebook_size(self) -> int:
    """Size of the index space of `aux['indices']`."""
    return self.num_codes

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work (`key`: argument name -> config key)."""
    check_settings(eval_mode=self.eval_mode, tau0=self.tau0, tau_rate=self.tau_rate,
                   tau_min=self.tau_min, variance_offset=self.variance_offset, key=key)
    code_search.check_chunk_size(self.search_chunk_size, self.num_codes, key=key)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [...] in [0, K) -> their codes [..., D] float32 (the 'det' z_q)."""
    return self.codebook().astype(jnp.float32)[codes]

  def codebook(self) -> jax.Array:
    """The codes [K, D] float32 (own or shared)."""
    if self.shared_codebook is None:
      return self.embedding
    return self.shared_codebook()

  def variance(self) -> jax.Array:
    """s^2 [] float32 (differentiable in theta)."""
    return variance(self.log_var, self.variance_offset)

  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    if z_e.ndim < 2 or z_e.shape[-1] != self.code_dim:
      raise ValueError(f"quantizer input has shape {z_e.shape}; expected "
                       f"[B, ..., code_dim={self.code_dim}].")
    if train and step is None:
      raise ValueError("train=True needs `step` (the Gumbel-softmax temperature "
                       "is a function of the train step).")
    lead_shape, batch = z_e.shape[:-1], z_e.shape[0]
    z = z_e.reshape(-1, self.code_dim).astype(jnp.float32)
    codebook = self.codebook().astype(jnp.float32)
    s2 = self.variance()
    precision = 1.0 / jnp.maximum(s2, MIN_VARIANCE)

    dist = squared_distances(z, codebook)                 # [N, K]
    logits = -0.5 * precision * dist
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    tau = temperature(0 if step is None else step, self.tau0, self.tau_rate, self.tau_min)

    if train:
      indices = first_minimum(dist)[1]                    # the nearest code
      gumbel = jax.random.gumbel(self.make_rng(RNG_STREAM), logits.shape, jnp.float32)
      weights = jax.nn.softmax((logits + gumbel) / jnp.maximum(tau, MIN_TEMPERATURE), axis=-1)
      z_q = jnp.dot(weights, codebook, precision=jax.lax.Precision.HIGHEST)
    else:
      if self.eval_mode == "sample":
        indices = jax.random.categorical(self.make_rng(RNG_STREAM), logits,
                                         axis=-1).astype(jnp.int32)
      else:
        chunk = self.search_chunk_size or None
        indices = nearest_code(z, codebook, chunk, resolve_rows_per_block(
            self.search_rows_per_block, self.num_codes, chunk))
      z_q = codebook[indices]

    losses = dict(neg_entropy=jnp.sum(p * log_p) / batch)
    if self.dequant_loss:
      losses["dequant"] = 0.5 * precision * jnp.sum((z - z_q) ** 2) / batch
    marginal = jnp.mean(p, axis=0)
    aux = dict(
        indices=indices.reshape(lead_shape),
        posterior=p.reshape(*lead_shape, self.num_codes),
        losses=losses,
        metrics=dict(temperature=tau, variance=s2,
                     entropy=-jnp.mean(jnp.sum(p * log_p, axis=-1)),
                     perplexity_soft=jnp.exp(jnp.sum(entr(marginal))),
                     perplexity=metrics.batch_perplexity(indices, self.num_codes)),
    )
    return z_q.reshape(z_e.shape).astype(z_e.dtype), aux
