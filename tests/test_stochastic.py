"""Stochastic quantizer and reconstruction losses, checked against NumPy written here."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from devices_worker import run_worker
from vqjax import losses
from vqjax.quantizers.stochastic import StochasticQuantizer, temperature


def np_nearest(z, codebook):
  """Brute-force nearest code, ties to the lowest index."""
  return ((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)


def np_posterior(z, codebook, s2):
  logits = -((z[:, None, :] - codebook[None]) ** 2).sum(-1) / (2 * s2)
  logits = logits - logits.max(1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(1, keepdims=True)


def with_codebook(q, z, codebook, log_var=None):
  variables = q.init({"params": jax.random.key(0)}, z, train=False)
  params = dict(variables["params"], embedding=jnp.asarray(codebook, jnp.float32))
  if log_var is not None:
    params["log_var"] = jnp.asarray(log_var, jnp.float32)
  return {"params": params}


def call(q, variables, z, *, train, seed=0, step=0):
  return q.apply(variables, z, train=train, step=jnp.int32(step),
                 rngs={"sample": jax.random.key(seed)})


# -- temperature -------------------------------------------------------------------


def test_temperature_schedule():
  np.testing.assert_allclose(temperature(0, 0.7, 1e-3), 0.7, rtol=1e-6)
  np.testing.assert_allclose(temperature(1e3, 0.7, 1e-3), 0.7 / math.e, rtol=1e-6)
  np.testing.assert_allclose(temperature(1e5, 1.0, 1e-5), 1 / math.e, rtol=1e-6)
  np.testing.assert_allclose(temperature(10**6, 1.0, 1e-5, tau_min=0.5), 0.5)
  # A traced step: one trace for every step.
  traces = []

  @jax.jit
  def tau(step):
    traces.append(1)
    return temperature(step, 2.0, 0.01, 0.1)

  got = [float(tau(jnp.int32(s))) for s in (0, 50, 1000)]
  np.testing.assert_allclose(got, [2.0, 2.0 * math.exp(-0.5), 0.1], rtol=1e-6)
  assert len(traces) == 1


# -- the quantizer's outputs ---------------------------------------------------------


def tie_case():
  rng = np.random.default_rng(0)
  codebook = rng.integers(-3, 4, size=(16, 3)).astype(np.float32)
  codebook[9] = codebook[2]           # duplicate codes: exact ties
  codebook[13] = codebook[5]
  z = rng.integers(-3, 4, size=(4, 5, 5, 3)).astype(np.float32)
  z[0, 0, 0] = (codebook[0] + codebook[1]) / 2   # equidistant from two codes
  return z, codebook


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_det_at_small_variance_is_nearest_code_with_ties(offset):
  z, codebook = tie_case()
  # offset 1 floors s^2 at 1: the deterministic path is the nearest code anyway.
  q = StochasticQuantizer(16, 3, variance_offset=offset)
  variables = with_codebook(q, z, codebook, log_var=-30.0)
  want = np_nearest(z.reshape(-1, 3), codebook)
  z_q, aux = call(q, variables, z, train=False)
  np.testing.assert_array_equal(np.asarray(aux["indices"]).reshape(-1), want)
  np.testing.assert_array_equal(np.asarray(z_q).reshape(-1, 3), codebook[want])
  if offset == 0.0:
    # Training at s^2 = e^-30: the Gumbel noise cannot beat the 1/(2 s^2)
    # logit gaps, so the soft sample is the nearest code too wherever one
    # code vector is nearest (duplicates are one vector; equidistant
    # distinct codes are mixed by the noise).
    zz = z.reshape(-1, 3)
    dist = ((zz[:, None] - codebook[None]) ** 2).sum(-1)
    nearest = [np.unique(codebook[d == d.min()], axis=0) for d in dist]
    unique = np.array([len(n) == 1 for n in nearest])
    assert not unique[0] and unique.sum() > 50
    z_q, _ = call(q, variables, z, train=True, step=0)
    np.testing.assert_allclose(np.asarray(z_q).reshape(-1, 3)[unique], codebook[want][unique],
                               atol=1e-5)


def test_det_codes_come_from_the_blocked_search_with_ties():
  # N = 192 rows, K = 40 codes in blocks of 8 codes and 48 rows: the codes
  # and z_q of 'det' equal NumPy's first argmin (duplicate codes 2 / 17 sit in
  # different code blocks), and a jit that returns only them holds no [N, K]
  # array: the dense distances and the posterior are dropped as unused.
  rng = np.random.default_rng(3)
  codebook = rng.integers(-3, 4, size=(40, 3)).astype(np.float32)
  codebook[17] = codebook[2]
  codebook[30] = codebook[29]                     # a tie inside one block
  z = rng.integers(-3, 4, size=(3, 8, 8, 3)).astype(np.float32)
  z[0, 0, :4] = codebook[2]
  z[1, 0, :4] = codebook[29]
  zz = z.reshape(-1, 3)
  want = ((zz[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)   # NumPy, ties lowest
  assert (want[:4] == 2).all() and (want[64:68] == 29).all()
  q = StochasticQuantizer(40, 3, search_chunk_size=8, search_rows_per_block=48)
  variables = with_codebook(q, z, codebook, log_var=0.0)
  codes = jax.jit(lambda v, z: q.apply(v, z, train=False)[1]["indices"])
  z_q = jax.jit(lambda v, z: q.apply(v, z, train=False)[0])
  np.testing.assert_array_equal(np.asarray(codes(variables, z)).reshape(-1), want)
  np.testing.assert_array_equal(np.asarray(z_q(variables, z)).reshape(-1, 3), codebook[want])
  for fn in (codes, z_q):
    hlo = fn.lower(variables, z).compile().as_text()
    assert "[192,40]" not in hlo and "[48,40]" not in hlo and "[48,8]" in hlo
  # The full call (posterior, losses, metrics) still builds the [N, K] posterior.
  _, aux = call(q, variables, z, train=False)
  np.testing.assert_array_equal(np.asarray(aux["indices"]).reshape(-1), want)
  np.testing.assert_allclose(np.asarray(aux["posterior"]).reshape(-1, 40),
                             np_posterior(zz, codebook, 1.0), rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="must divide"):
    q = StochasticQuantizer(40, 3, search_chunk_size=7)
    q.apply(variables, z, train=False)


def test_training_output_is_a_convex_combination_of_codes():
  rng = np.random.default_rng(1)
  codebook = rng.normal(size=(5, 8)).astype(np.float32)   # linearly independent
  z = rng.normal(size=(3, 4, 8)).astype(np.float32)
  q = StochasticQuantizer(5, 8, log_var_init=math.log(2.0))
  variables = with_codebook(q, z, codebook)
  z_q, _ = call(q, variables, z, train=True, step=0)
  z_q = np.asarray(z_q, np.float64).reshape(-1, 8)
  weights, *_ = np.linalg.lstsq(codebook.T.astype(np.float64), z_q.T, rcond=None)
  np.testing.assert_allclose(codebook.T @ weights, z_q.T, atol=1e-5)
  assert weights.min() > -1e-5
  np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-5)
  assert (weights.max(0) < 0.999).any()        # soft, not one-hot
  # A different key gives different noise; the same key the same sample.
  again, _ = call(q, variables, z, train=True, step=0)
  other, _ = call(q, variables, z, train=True, step=0, seed=1)
  np.testing.assert_array_equal(np.asarray(again).reshape(-1, 8), z_q.astype(np.float32))
  assert not np.allclose(np.asarray(other).reshape(-1, 8), z_q)


@pytest.mark.parametrize("log_var, offset, s2", [(0.0, 0.0, 1.0), (0.0, 1.0, 2.0),
                                                 (math.log(0.5), 0.0, 0.5)])
def test_negative_entropy_and_dequant_by_hand(log_var, offset, s2):
  # Codes {0, 2} in 1-D; z = 0.5 (image 0) and z = 1 (image 1, equidistant).
  z = np.array([[[0.5]], [[1.0]]], np.float32)               # [B=2, 1, D=1]
  q = StochasticQuantizer(2, 1, variance_offset=offset)
  variables = with_codebook(q, z, [[0.0], [2.0]], log_var=log_var)
  z_q, aux = call(q, variables, z, train=False)
  # z = 0.5: logits -0.25/(2 s2), -2.25/(2 s2): P(1)/P(0) = exp(-1/s2).
  r = math.exp(-1.0 / s2)
  p0 = np.array([1 / (1 + r), r / (1 + r)])
  neg_entropy = (np.sum(p0 * np.log(p0)) + math.log(0.5)) / 2     # image 1: P = (1/2, 1/2)
  dequant = (0.25 + 1.0) / (2 * s2) / 2     # both map to code 0 (tie -> lowest index)
  np.testing.assert_allclose(aux["losses"]["neg_entropy"], neg_entropy, rtol=1e-6)
  np.testing.assert_allclose(aux["losses"]["dequant"], dequant, rtol=1e-6)
  np.testing.assert_allclose(aux["metrics"]["variance"], s2, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(z_q).ravel(), [0.0, 0.0])
  # Training: the dequant term uses the soft sample the decoder sees.
  z_q, aux = call(q, variables, z, train=True, step=0)
  want = np.sum((z - np.asarray(z_q)) ** 2) / (2 * s2) / 2
  np.testing.assert_allclose(aux["losses"]["dequant"], want, rtol=1e-5)
  np.testing.assert_allclose(aux["losses"]["neg_entropy"], neg_entropy, rtol=1e-6)


def test_metrics_match_numpy():
  rng = np.random.default_rng(2)
  codebook = rng.normal(size=(6, 4)).astype(np.float32)
  z = rng.normal(size=(5, 3, 4)).astype(np.float32)
  q = StochasticQuantizer(6, 4, log_var_init=math.log(0.7), tau0=0.8, tau_rate=0.01,
                          tau_min=0.1)
  variables = with_codebook(q, z, codebook)
  _, aux = call(q, variables, z, train=True, step=30)
  zz = z.reshape(-1, 4)
  p = np_posterior(zz, codebook, 0.7)
  m = aux["metrics"]
  np.testing.assert_allclose(m["temperature"], 0.8 * math.exp(-0.3), rtol=1e-6)
  np.testing.assert_allclose(m["variance"], 0.7, rtol=1e-6)
  np.testing.assert_allclose(m["entropy"], -np.mean(np.sum(p * np.log(p), 1)), rtol=1e-5)
  marginal = p.mean(0)
  np.testing.assert_allclose(m["perplexity_soft"], np.exp(-np.sum(marginal * np.log(marginal))),
                             rtol=1e-5)
  counts = np.bincount(np_nearest(zz, codebook), minlength=6) / len(zz)
  nz = counts[counts > 0]
  np.testing.assert_allclose(m["perplexity"], np.exp(-np.sum(nz * np.log(nz))), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(aux["indices"]).ravel(), np_nearest(zz, codebook))


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_variance_positive_with_finite_gradient(offset):
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32)
  q = StochasticQuantizer(8, 4, variance_offset=offset)
  variables = q.init({"params": jax.random.key(0)}, z, train=False)

  def loss(log_var):
    params = dict(variables["params"], log_var=log_var)
    _, aux = q.apply({"params": params}, z, train=True, step=jnp.int32(0),
                     rngs={"sample": jax.random.key(1)})
    return sum(aux["losses"].values()), aux["metrics"]["variance"]

  for theta in (-25.0, -5.0, 0.0, 5.0, 25.0):
    grad, s2 = jax.grad(loss, has_aux=True)(jnp.float32(theta))
    assert float(s2) > 0 and np.isfinite(float(grad)), (theta, s2, grad)
    np.testing.assert_allclose(s2, offset + math.exp(theta), rtol=1e-5)
  # All of the quantizer's parameters get finite gradients at tiny s^2.
  grads = jax.grad(lambda p: sum(q.apply({"params": p}, z, train=True, step=jnp.int32(0),
                                         rngs={"sample": jax.random.key(1)})[1][
                                             "losses"].values()))(
      dict(variables["params"], log_var=jnp.float32(-20.0)))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_evaluation_is_deterministic_and_sampling_follows_the_posterior():
  rng = np.random.default_rng(4)
  codebook = rng.normal(size=(4, 2)).astype(np.float32)
  z = np.broadcast_to(rng.normal(size=(1, 1, 2)), (2, 4000, 2)).astype(np.float32)
  det = StochasticQuantizer(4, 2, log_var_init=0.0)
  variables = with_codebook(det, z, codebook)
  a = call(det, variables, z, train=False, seed=0)
  b = call(det, variables, z, train=False, seed=1)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  sample = StochasticQuantizer(4, 2, log_var_init=0.0, eval_mode="sample")
  z_q, aux = call(sample, variables, z, train=False, seed=0)
  idx = np.asarray(aux["indices"]).ravel()
  np.testing.assert_array_equal(np.asarray(z_q).reshape(-1, 2), codebook[idx])
  freq = np.bincount(idx, minlength=4) / idx.size
  np.testing.assert_allclose(freq, np_posterior(z[0, :1], codebook, 1.0)[0], atol=0.02)


def test_invalid_arguments_raise():
  z = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match="eval_mode"):
    StochasticQuantizer(4, 4, eval_mode="mean").init(jax.random.key(0), z, train=False)
  with pytest.raises(ValueError, match="code_dim=3"):
    StochasticQuantizer(4, 3).init(jax.random.key(0), z, train=False)
  q = StochasticQuantizer(4, 4)
  variables = q.init(jax.random.key(0), z, train=False)
  with pytest.raises(ValueError, match="needs `step`"):
    q.apply(variables, z, train=True, rngs={"sample": jax.random.key(0)})


# -- reconstruction losses ---------------------------------------------------------


def images(seed=5):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, size=(3, 4, 5, 2)).astype(np.float32)
  x_hat = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
  return x, x_hat


def test_arelbo_value_and_gradient():
  x, x_hat = images()
  d = 4 * 5 * 2
  diff = x_hat.astype(np.float64) - x
  sse = np.sum(diff ** 2) / 3                    # per image, batch mean
  np.testing.assert_allclose(losses.arelbo(x, x_hat), d / 2 * np.log(sse), rtol=1e-6)
  np.testing.assert_allclose(losses.mse(x, x_hat), np.mean(diff ** 2), rtol=1e-6)
  grad = jax.grad(losses.arelbo, argnums=1)(x, x_hat)
  grad_sse = 2 * diff / 3
  np.testing.assert_allclose(grad, grad_sse / (2 * sse / d), rtol=1e-5)


def test_gaussian_nll_at_its_optimum_is_arelbo_plus_a_constant():
  x, x_hat = images(6)
  d = 40
  sse = np.sum((x_hat.astype(np.float64) - x) ** 2) / 3
  log_var = 0.3
  np.testing.assert_allclose(losses.gaussian_nll(x, x_hat, log_var),
                             sse / (2 * math.exp(log_var)) + d / 2 * log_var, rtol=1e-6)
  best = jnp.float32(math.log(sse / d))           # the MLE of sigma^2
  grad = jax.grad(losses.gaussian_nll, argnums=2)(x, x_hat, best)
  assert abs(float(grad)) < 1e-3
  np.testing.assert_allclose(losses.gaussian_nll(x, x_hat, best) - losses.arelbo(x, x_hat),
                             d / 2 * (1 - math.log(d)), rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_loss("gaussian_nll", x, x_hat, best),
                             losses.gaussian_nll(x, x_hat, best))
  with pytest.raises(ValueError, match="log_var"):
    losses.reconstruction_loss("gaussian_nll", x, x_hat)
  with pytest.raises(ValueError, match="choose one of"):
    losses.reconstruction_loss("l1", x, x_hat)


# -- several devices -----------------------------------------------------------------


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
  runs = run_worker(tmp_path, {"sq": {"scenario": "stochastic_quantizer", "devices": [1, 8]}},
                    host_devices=8)["sq"]
  one, eight = runs[1], runs[8]
  assert set(one) == set(eight)
  assert any(n.startswith("quantizer/['grads']") for n in one)
  assert any(n.startswith("sqvae2/['grad']") for n in one)
  codes = lambda r: {k: v for k, v in r.items() if "indices" in k}
  rest = lambda r: {k: v for k, v in r.items() if "indices" not in k}
  chex.assert_trees_all_equal(codes(one), codes(eight))
  chex.assert_trees_all_close(rest(one), rest(eight), rtol=1e-4, atol=1e-5)
