"""Residual quantization (RQ) against NumPy: stage l quantizes what stages
before it left, the sum is the output, decode(encode(z)) is the forward z_q bit
for bit, each stage moves and resets its own EMA codebook, and the code space
(code_shape (L,), histogram offsets, L log2 K bits) is what RQ means.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ema_helpers import np_assign, np_ema
from vqjax.quantizers import COLLECTION
from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer
from vqjax.quantizers.residual import ResidualQuantizer

K, D, L = 8, 3, 3


def rq(**kw):
  stage = functools.partial(VectorQuantizerEMA, codebook_init="uniform", reset_threshold=0.0)
  args = dict(num_codes=K, code_dim=D, num_stages=L, stage_quantizer=stage)
  return ResidualQuantizer(**{**args, **kw})


def with_codebooks(q, variables, books):
  """variables with stage l's EMA codebook (and its statistics) set to books[l]."""
  cb = jax.tree.map(lambda x: x, dict(variables[COLLECTION]))
  names = ["stage_shared"] if q.shared_codebook else [f"stage_{l}" for l in range(L)]
  for name, book in zip(names, books):
    cb[name] = dict(cb[name], embedding=jnp.asarray(book), embed_sum=jnp.asarray(book),
                    cluster_size=jnp.ones((K,), jnp.float32))
  return {**variables, COLLECTION: cb}


def np_rq(z, books):
  """(codes [N, L], z_q [N, D]) of greedy residual quantization."""
  residual, total, codes = z.copy(), np.zeros_like(z), []
  for book in books:
    idx = np_assign(residual, book)
    codes.append(idx)
    total = total + book[idx]
    residual = z - total
  return np.stack(codes, -1), total


@pytest.mark.parametrize("shared", [False, True])
def test_codes_and_output_match_greedy_residual_quantization(shared):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, 5, D)).astype(np.float32)
  books = rng.normal(size=(1 if shared else L, K, D)).astype(np.float32)
  q = rq(shared_codebook=shared)
  variables = with_codebooks(q, q.init(jax.random.key(0), jnp.asarray(z), train=False), books)
  z_q, aux = q.apply(variables, jnp.asarray(z), train=False)
  want_codes, want_zq = np_rq(z.reshape(-1, D), [books[0]] * L if shared else books)
  np.testing.assert_array_equal(np.asarray(aux["indices"]).reshape(-1, L), want_codes)
  np.testing.assert_allclose(np.asarray(z_q).reshape(-1, D), want_zq, rtol=0, atol=1e-6)
  # decode(encode(z)) is the forward output bit for bit.
  codes = q.apply(variables, jnp.asarray(z), method="encode")
  np.testing.assert_array_equal(np.asarray(q.apply(variables, codes, method="decode")),
                                np.asarray(z_q))


def test_code_space_offsets_and_bits():
  separate, shared = rq(), rq(shared_codebook=True)
  assert separate.code_shape == (L,) and separate.codebook_size == K
  assert separate.histogram_size == L * K and shared.histogram_size == K
  assert separate.bits_per_position == pytest.approx(L * np.log2(K))
  codes = jnp.asarray([[1, 2, 7]])
  np.testing.assert_array_equal(np.asarray(separate.flat_codes(codes)), [[1, 2 + K, 7 + 2 * K]])
  np.testing.assert_array_equal(np.asarray(shared.flat_codes(codes)), [[1, 2, 7]])
  assert separate.entries == ("stages", ("stage_0", "stage_1", "stage_2"))


def test_each_stage_updates_its_own_ema_codebook_from_its_residual():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(16, D)).astype(np.float32)
  books = rng.normal(size=(L, K, D)).astype(np.float32)
  q = rq()
  variables = with_codebooks(q, q.init(jax.random.key(0), jnp.asarray(z), train=False), books)
  _, updates = q.apply(variables, jnp.asarray(z), train=True, mutable=[COLLECTION],
                       rngs={COLLECTION: jax.random.key(3)})
  residual, total = z.copy(), np.zeros_like(z)
  for l in range(L):
    idx = np_assign(residual, books[l])   # the codebook before this step's update
    counts = np.bincount(idx, minlength=K).astype(np.float64)
    sums = np.zeros((K, D))
    np.add.at(sums, idx, residual)
    _, es, emb = np_ema(np.ones(K), books[l].astype(np.float64), counts, sums, 0.99, 1e-5)
    got = updates[COLLECTION][f"stage_{l}"]
    np.testing.assert_allclose(np.asarray(got["embed_sum"]), es, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["embedding"]), emb, rtol=1e-4, atol=1e-5)
    total = total + books[l][idx]
    residual = z - total


def test_dead_codes_are_reset_per_stage():
  """Window 1, threshold 1: a code no residual of its stage chose is reset,
  counted in that stage's own num_resets."""
  rng = np.random.default_rng(2)
  z = rng.normal(size=(16, D)).astype(np.float32)
  books = rng.normal(size=(L, K, D)).astype(np.float32)
  stage = functools.partial(VectorQuantizerEMA, codebook_init="uniform", reset_window=1,
                            reset_threshold=1.0, reset_rule="sample")
  q = rq(stage_quantizer=stage)
  variables = with_codebooks(q, q.init(jax.random.key(0), jnp.asarray(z), train=False), books)
  _, updates = q.apply(variables, jnp.asarray(z), train=True, mutable=[COLLECTION],
                       rngs={COLLECTION: jax.random.key(3)})
  residual, total = z.copy(), np.zeros_like(z)
  for l in range(L):
    idx = np_assign(residual, books[l])
    unused = K - len(np.unique(idx))
    assert int(updates[COLLECTION][f"stage_{l}"]["num_resets"]) == unused, l
    total = total + books[l][idx]
    residual = z - total


def test_learned_stages_train_their_codebooks():
  q = rq(stage_quantizer=LearnedCodebookQuantizer)
  z = jnp.asarray(np.random.default_rng(3).normal(size=(8, D)), jnp.float32)
  params = q.init(jax.random.key(0), z, train=False)["params"]
  assert sorted(params) == ["stage_0", "stage_1", "stage_2"]

  def loss(p):
    z_q, aux = q.apply({"params": p}, z, train=True)
    return jnp.sum(z_q) + sum(aux["losses"].values())

  grads = jax.grad(loss)(params)
  for l in range(L):
    assert np.abs(np.asarray(grads[f"stage_{l}"]["embedding"])).max() > 0, l
  # The output's gradient to z is the identity (one straight-through estimator).
  g = jax.grad(lambda t: jnp.sum(q.apply({"params": params}, t, train=True)[0]))(z)
  np.testing.assert_array_equal(np.asarray(g), np.ones_like(np.asarray(z)))


def test_bad_settings_name_the_field():
  with pytest.raises(ValueError, match="num_stages=0 must be >= 1"):
    rq(num_stages=0).init(jax.random.key(0), jnp.zeros((2, D)), train=False)
  bad = functools.partial(VectorQuantizerEMA, decay=1.5)
  with pytest.raises(ValueError, match="stage_quantizer.decay=1.5"):
    rq(stage_quantizer=bad).init(jax.random.key(0), jnp.zeros((2, D)), train=False)
