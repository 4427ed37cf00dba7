"""EMA vector quantizer whose codebook lives in the `codebook` collection.

The codebook is not an optimizer parameter: it is moved by exponential moving
averages of assignment counts and sums (VQ-VAE, van den Oord et al. 2017,
appendix; Razavi et al. 2019), initialised from encoder outputs on the first
training call, and dead codes are reset from recent encoder outputs once they
were assigned fewer than `reset_threshold` times over the last `reset_window`
batches (Reyhanian & Wiskott, Sec. 3.3 / 4.1).

Everything happens inside one traced function: the first-call data init and the
reset are `lax.cond`s on traced flags, never Python branches, so a jitted train
step traces once. All sums run over the whole (global) batch: under `jax.jit`
with a batch sharded over devices, XLA turns them into all-reduces, so eight
devices produce the codebook of one device with the same global batch.

Variables of the `codebook` collection (K codes of dimension D, window W):
  embedding     [K, D] float32  the codes used for the look-up
  cluster_size  [K]    float32  EMA of assignment counts
  embed_sum     [K, D] float32  EMA of the sums of assigned encoder outputs
  initialized   []     bool     False until the data init ran
  usage         [W, K] int32    ring buffer of per-batch assignment counts
  usage_pos     []     int32    next slot of the ring buffer
  code_age      [K]    int32    batches since the code was (re)initialised, capped at W
  num_resets    []     int32    codes reset so far (total)
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax import metrics
from vqjax.quantizers.base import Quantizer
from vqjax.quantizers.code_search import (nearest_code, resolve_rows_per_block,
                                          search_vectors)
from vqjax.quantizers import code_search, gradients
from vqjax.quantizers.gradients import straight_through

COLLECTION = "codebook"
INIT_CHOICES = ("data", "kmeans", "uniform")
RESET_RULES = ("average", "sample")
RESET_CRITERIA = ("window", "ema")


# ---------------------------------------------------------------------------
# Pure functions (shapes: N flattened vectors of dimension D, K codes; the
# nearest-code search is code_search.py's).
# ---------------------------------------------------------------------------


def code_sums(z: jax.Array, indices: jax.Array, num_codes: int) -> jax.Array:
  """Sum of the rows of z [N, D] assigned to each code, [K, D] float32."""
  return jax.ops.segment_sum(z.astype(jnp.float32), indices,
                             num_segments=num_codes)


def ema_update(cluster_size, embed_sum, counts, sums, *, decay: float,
               eps: float):
  """One EMA step with Laplace smoothing (Sonnet's VectorQuantizerEMA).

  Returns (cluster_size [K], embed_sum [K, D], embedding [K, D]) where
  embedding = embed_sum / ((cluster_size + eps) / (n + K eps) * n), n = sum of
  cluster_size.
  """
  cluster_size = decay * cluster_size + (1.0 - decay) * counts
  embed_sum = decay * embed_sum + (1.0 - decay) * sums
  n = jnp.sum(cluster_size)
  num_codes = cluster_size.shape[0]
  smoothed = (cluster_size + eps) / (n + num_codes * eps) * n
  return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def sample_rows(key: jax.Array, z: jax.Array, num: int,
                noise_scale: float) -> jax.Array:
  """`num` rows of z [N, D], distinct when N >= num.

  With fewer rows than `num`, rows are drawn with replacement and Gaussian noise
  of `noise_scale` times the per-dimension std of z is added, so the returned
  rows are still distinct.
  """
  n = z.shape[0]
  perm_key, noise_key = jax.random.split(key)
  if n >= num:
    # Top-k of i.i.d. uniforms = a uniformly random subset, cheaper than a
    # permutation of all N rows.
    _, idx = jax.lax.top_k(jax.random.uniform(perm_key, (n,)), num)
    return z[idx]
  idx = jax.random.randint(perm_key, (num,), 0, n)
  scale = noise_scale * jnp.std(z, axis=0, keepdims=True)
  return z[idx] + scale * jax.random.normal(noise_key, (num, z.shape[1]))


def kmeans(z: jax.Array, codes: jax.Array, num_iters: int,
           chunk_size: int | None = None, rows_per_block: int | None = None) -> jax.Array:
  """`num_iters` Lloyd iterations on z [N, D] from `codes` [K, D] -> [K, D].

  Each iteration assigns every row to its nearest code (`nearest_code`, ties to
  the lowest index) and moves each code to the mean of its rows; a code without
  rows keeps its place (as vector-quantize-pytorch's k-means init).
  """
  num_codes = codes.shape[0]

  def step(_, codes):
    idx = nearest_code(z, codes, chunk_size, rows_per_block)
    counts = metrics.code_counts(idx, num_codes)
    means = code_sums(z, idx, num_codes) / jnp.maximum(counts, 1)[:, None]
    return jnp.where(counts[:, None] > 0, means, codes)

  return jax.lax.fori_loop(0, num_iters, step, codes)


def init_counts(z: jax.Array, codes: jax.Array, chunk_size: int | None = None,
                rows_per_block: int | None = None) -> jax.Array:
  """Rows of z [N, D] nearest to each of `codes` [K, D], at least 1: [K] float32.

  The EMA cluster sizes a codebook initialised from z starts with.
  """
  idx = nearest_code(z, codes, chunk_size, rows_per_block)
  counts = metrics.code_counts(idx, codes.shape[0]).astype(jnp.float32)
  return jnp.maximum(counts, 1.0)


def replacement_candidates(key: jax.Array, z: jax.Array, num_codes: int,
                           rule: str, average_size: int,
                           noise_scale: float) -> jax.Array:
  """One candidate vector per code, [K, D], from the encoder outputs z [N, D].

  rule='average': the mean of `average_size` random encoder outputs;
  rule='sample': one encoder output, a different one for every code
  (`sample_rows`: distinct rows, or noisy draws when N < K).
  """
  if rule == "sample":
    return sample_rows(key, z, num_codes, noise_scale)
  idx = jax.random.randint(key, (num_codes, average_size), 0, z.shape[0])
  return jnp.mean(z[idx], axis=1)


def check_settings(*, decay: float, eps: float, beta: float, codebook_init: str,
                   kmeans_iters: int, reset_threshold: float, reset_window: int,
                   reset_rule: str, reset_criterion: str,
                   key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError for EMA quantizer settings that cannot work.

  The one check of these settings: `VectorQuantizerEMA` runs it, and
  `config_lib.validate` runs it with `key` mapping each argument name to its
  config key (e.g. 'model.decay'), which the messages name.
  """
  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(msg)

  need(0.0 < decay < 1.0, f"{key('decay')}={decay} must be in (0, 1).")
  need(eps > 0, f"{key('eps')}={eps} must be > 0.")
  need(beta >= 0, f"{key('beta')}={beta} must be >= 0.")
  need(codebook_init in INIT_CHOICES,
       f"{key('codebook_init')}={codebook_init!r}; choose one of {INIT_CHOICES}.")
  need(codebook_init != "kmeans" or kmeans_iters >= 1,
       f"{key('kmeans_iters')}={kmeans_iters} must be >= 1 for codebook_init='kmeans'.")
  need(reset_threshold >= 0,
       f"{key('reset_threshold')}={reset_threshold} must be >= 0 (0: no dead-code reset).")
  need(reset_window >= 1, f"{key('reset_window')}={reset_window} must be >= 1 batch.")
  need(reset_rule in RESET_RULES,
       f"{key('reset_rule')}={reset_rule!r}; choose one of {RESET_RULES}.")
  need(reset_criterion in RESET_CRITERIA,
       f"{key('reset_criterion')}={reset_criterion!r}; choose one of {RESET_CRITERIA} "
       "('window': the paper's windowed count, 'ema': the released code's EMA cluster size).")


# ---------------------------------------------------------------------------
# The module.
# ---------------------------------------------------------------------------


class VectorQuantizerEMA(Quantizer):
  """Nearest-code quantizer with an EMA codebook in the `codebook` collection.

  Call with `z_e` [..., D] (any leading shape). With `train=True` and the
  `codebook` collection mutable, the codebook is initialised (first call),
  EMA-updated and dead codes are reset; this needs the `codebook` PRNG stream
  (`rngs={'codebook': key}`), replicated across devices. With `train=False`
  nothing is mutated.

  Returns (z_q, aux) as every vqjax quantizer does (see
  `vqjax.quantizers`): z_q [..., D] with the straight-through gradient
  (forward: the codes; backward: identity to z_e); aux['indices'] [...] int32;
  aux['losses'] = {'commitment': beta * mean |z_e - sg(z_q)|^2};
  aux['metrics'] = {'perplexity' of this batch, 'codes_used_window': codes
  used in the window, 'codes_reset': codes reset in this call}. `step` is accepted and unused.
  """

  num_codes: int
  code_dim: int
  beta: float = 0.25
  decay: float = 0.99
  eps: float = 1e-5
  codebook_init: str = "data"
  kmeans_iters: int = 10
  init_noise: float = 0.01
  reset_threshold: float = 2.0
  reset_window: int = 10
  reset_rule: str = "average"
  reset_average_size: int = 4
  reset_criterion: str = "window"
  search_chunk_size: int = 0
  search_rows_per_block: int = -1  # -1: auto, see code_search.default_rows_per_block
  gradient_estimator: str = "ste"  # 'ste' | 'rotation' (gradients.straight_through)

  def _codebook_variables(self):
    self.check()
    k, d, w = self.num_codes, self.code_dim, self.reset_window

    def uniform_codes():
      key = self.make_rng("params")
      return jax.random.uniform(key, (k, d), jnp.float32, -1.0 / k, 1.0 / k)

    var = lambda name, fn: self.variable(COLLECTION, name, fn)
    embedding = var("embedding", uniform_codes)
    return dict(
        embedding=embedding,
        cluster_size=var("cluster_size", lambda: jnp.ones((k,), jnp.float32)),
        embed_sum=var("embed_sum", lambda: jnp.array(embedding.value, copy=True)),
        initialized=var("initialized",
                        lambda: jnp.asarray(self.codebook_init == "uniform")),
        usage=var("usage", lambda: jnp.zeros((w, k), jnp.int32)),
        usage_pos=var("usage_pos", lambda: jnp.zeros((), jnp.int32)),
        code_age=var("code_age", lambda: jnp.zeros((k,), jnp.int32)),
        num_resets=var("num_resets", lambda: jnp.zeros((), jnp.int32)),
    )

  @property
  def codebook_size(self) -> int:
    """Size of the index space of `aux['indices']`."""
    return self.num_codes

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work (`key`: argument name -> config key)."""
    check_settings(decay=self.decay, eps=self.eps, beta=self.beta,
                   codebook_init=self.codebook_init, kmeans_iters=self.kmeans_iters,
                   reset_threshold=self.reset_threshold, reset_window=self.reset_window,
                   reset_rule=self.reset_rule, reset_criterion=self.reset_criterion,
                   key=key)
    gradients.check_estimator(self.gradient_estimator, key=key)
    code_search.check_chunk_size(self.search_chunk_size, self.num_codes, key=key)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [...] in [0, K) -> their codes [..., D] float32 (frozen codebook)."""
    return self.get_variable(COLLECTION, "embedding")[codes]

  @nn.compact
  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    z = search_vectors(z_e, self.code_dim)
    v = self._codebook_variables()
    lead_shape = z_e.shape[:-1]
    update = train and not self.is_initializing()

    if update:
      init_key, reset_key = jax.random.split(self.make_rng(COLLECTION))
      self._data_init(v, jax.lax.stop_gradient(z), init_key)

    codebook = v["embedding"].value
    indices = nearest_code(jax.lax.stop_gradient(z), codebook,
                           self.search_chunk_size or None, self._rows_per_block())
    z_q = codebook[indices]

    counts = metrics.code_counts(indices, self.num_codes)  # [K] int32
    num_reset = jnp.zeros((), jnp.int32)
    if update:
      num_reset = self._ema_and_reset(v, jax.lax.stop_gradient(z), indices,
                                      counts, reset_key)

    commitment = self.beta * jnp.mean((z - jax.lax.stop_gradient(z_q))**2)
    z_q_st = straight_through(z, z_q, self.gradient_estimator)
    codes_used = jnp.sum(jnp.sum(v["usage"].value, axis=0) > 0)
    aux = dict(
        indices=indices.reshape(lead_shape),
        losses=dict(commitment=commitment),
        metrics=dict(perplexity=metrics.perplexity_from_counts(counts),
                     codes_used_window=codes_used, codes_reset=num_reset),
    )
    return z_q_st.reshape(z_e.shape).astype(z_e.dtype), aux

  def _rows_per_block(self) -> int:
    return resolve_rows_per_block(self.search_rows_per_block, self.num_codes,
                                  self.search_chunk_size)

  # -- state updates (all traced; no Python branching on values) -------------

  def _data_init(self, v, z, key):
    """On the first call: codes <- K random encoder outputs of this batch
    ('data'), refined by `kmeans_iters` Lloyd iterations on it ('kmeans')."""

    def init_from_batch(_):
      codes = sample_rows(key, z, self.num_codes, self.init_noise)
      if self.codebook_init == "kmeans":
        codes = kmeans(z, codes, self.kmeans_iters, self.search_chunk_size or None,
                       self._rows_per_block())
      # The EMA statistics start from the init's real assignment counts (as
      # vector-quantize-pytorch copies its k-means cluster sizes), at least 1
      # per code, with embed_sum = codes * counts so embed_sum / cluster_size
      # == codes. With one pseudo-assignment per code instead, the 'ema' reset
      # criterion would call every code with fewer than ~100 assignments dead
      # at step 1 and throw the init away.
      counts = init_counts(z, codes, self.search_chunk_size or None,
                           self._rows_per_block())
      return codes, counts, codes * counts[:, None]

    def keep(_):
      return v["embedding"].value, v["cluster_size"].value, v["embed_sum"].value

    emb, cs, es = jax.lax.cond(v["initialized"].value, keep, init_from_batch, None)
    v["embedding"].value, v["cluster_size"].value, v["embed_sum"].value = emb, cs, es
    v["initialized"].value = jnp.ones((), bool)

  def _ema_and_reset(self, v, z, indices, counts, key) -> jax.Array:
    """EMA update, then the dead-code reset. Returns codes reset.

    reset_criterion='window' (the paper): a code is dead when its assignments
    summed over the last reset_window batches (the total, not a per-batch
    count) are fewer than reset_threshold, judged once a full window has passed
    since its last (re)init; it restarts with one pseudo-assignment. A code in
    use gets about W N / K assignments per window (N vectors per batch), so
    threshold 2 catches only codes that are essentially never chosen. 'ema' (the authors' released code, vector-quantize-
    pytorch's threshold_ema_dead_code): dead when its EMA cluster size is below
    reset_threshold after this step's update, every step; it restarts with
    cluster size reset_threshold.
    """
    sums = code_sums(z, indices, self.num_codes)
    cs, es, emb = ema_update(v["cluster_size"].value, v["embed_sum"].value,
                             counts.astype(jnp.float32), sums,
                             decay=self.decay, eps=self.eps)

    window = self.reset_window
    pos = v["usage_pos"].value
    usage = v["usage"].value.at[pos].set(counts)
    age = jnp.minimum(v["code_age"].value + 1, window)
    if self.reset_criterion == "window":
      # A code is judged only after a full window since its last (re)init.
      dead = (age >= window) & (jnp.sum(usage, axis=0) < self.reset_threshold)
      restart_size = 1.0
    else:
      dead = cs < self.reset_threshold
      restart_size = self.reset_threshold

    def reset(operands):
      emb, cs, es, usage, age = operands
      new = replacement_candidates(key, z, self.num_codes, self.reset_rule,
                                   self.reset_average_size, self.init_noise)
      # The reset code restarts at its new vector (embed_sum / cluster_size ==
      # new) with `restart_size` pseudo-assignments, a cleared window and age 0.
      return (jnp.where(dead[:, None], new, emb),
              jnp.where(dead, restart_size, cs),
              jnp.where(dead[:, None], restart_size * new, es),
              jnp.where(dead[None, :], 0, usage),
              jnp.where(dead, 0, age))

    emb, cs, es, usage, age = jax.lax.cond(
        jnp.any(dead), reset, lambda ops: ops, (emb, cs, es, usage, age))
    num_reset = jnp.sum(dead).astype(jnp.int32)
    v["embedding"].value, v["cluster_size"].value, v["embed_sum"].value = emb, cs, es
    v["usage"].value, v["code_age"].value = usage, age
    v["usage_pos"].value = (pos + 1) % window
    v["num_resets"].value = v["num_resets"].value + num_reset
    return num_reset
