"""HQ-VAE top-down networks with both quantizer families; references in NumPy here."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import losses
from vqjax.models.hqvae import (InjectedTopDownVAE, ResidualLayers, ResidualTopDownVAE,
                                latent_shapes)
from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.stochastic import StochasticQuantizer

FAMILIES = {"sq": functools.partial(StochasticQuantizer, log_var_init=0.5),
            "ema": functools.partial(VectorQuantizerEMA, reset_window=2)}
SMALL = dict(code_dim=4, width=8, num_res_blocks=1)
IMAGE = 16
RNGS = dict(sample=jax.random.key(1), codebook=jax.random.key(2))


def np_nearest(z, codebook):
  return ((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)


def np_neg_entropy(z, codebook, s2, batch):
  logits = -((z[:, None, :] - codebook[None]) ** 2).sum(-1) / (2 * s2)
  logits -= logits.max(1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  return np.sum(np.exp(log_p) * log_p) / batch


def build(kind, family):
  q = FAMILIES[family]
  if kind == "injected":
    return InjectedTopDownVAE(q, num_codes=(8, 16), **SMALL)
  return ResidualTopDownVAE(q, num_codes=(8, 8), shared_codebook=kind == "shared", **SMALL)


@pytest.mark.parametrize("family", ["sq", "ema"])
@pytest.mark.parametrize("kind", ["injected", "residual", "shared"])
def test_shapes_level_names_losses_and_state(kind, family):
  model = build(kind, family)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, IMAGE, IMAGE, 3)), jnp.float32)
  variables = model.init({"params": jax.random.key(0)}, x, train=False)
  mutable = ["codebook"] if family == "ema" else False
  out = model.apply(variables, x, train=True, step=jnp.int32(5), rngs=RNGS, mutable=mutable)
  (x_hat, aux), updates = out if family == "ema" else (out, None)

  names = ("layer_1", "layer_2")
  assert model.level_names == names and tuple(aux["levels"]) == names
  assert x_hat.shape == x.shape and x_hat.dtype == jnp.float32
  want_shapes = {"injected": {"layer_1": (4, 4), "layer_2": (8, 8)}}.get(
      kind, {"layer_1": (4, 4), "layer_2": (4, 4)})
  assert latent_shapes(model, IMAGE) == want_shapes
  for name in names:
    assert aux["levels"][name]["indices"].shape == (2, *want_shapes[name])
    assert aux["levels"][name]["indices"].dtype == jnp.int32
    assert all(np.isfinite(v) for v in aux["levels"][name]["metrics"].values())

  if family == "ema":
    want_losses = {"layer_1/commitment", "layer_2/commitment"}
    holders = ["shared_quantizer"] if kind == "shared" else list(names)
    assert sorted(variables["codebook"]) == sorted(holders)
    for holder in holders:
      assert not variables["codebook"][holder]["initialized"]
      assert updates["codebook"][holder]["initialized"]     # data init ran in training
      assert not np.allclose(updates["codebook"][holder]["embedding"],
                             variables["codebook"][holder]["embedding"])
  else:
    assert "codebook" not in variables
    if kind == "injected":
      want_losses = {f"{n}/{t}" for n in names for t in ("neg_entropy", "dequant")}
    else:  # Eq. 14: one entropy per layer, one dequant term on the final residual
      want_losses = {"layer_1/neg_entropy", "layer_2/neg_entropy", "layer_2/dequant"}
    params = variables["params"]
    for name in names:
      assert params[name]["log_var"].shape == ()
      assert ("embedding" in params[name]) == (kind != "shared")
    if kind == "shared":
      assert params["shared_codebook"]["embedding"].shape == (8, 4)
    # Evaluation: the nearest codes, whatever the sample key.
    a = model.apply(variables, x, train=False, rngs=dict(sample=jax.random.key(3)))
    b = model.apply(variables, x, train=False, rngs=dict(sample=jax.random.key(4)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
  assert set(aux["losses"]) == want_losses
  assert all(np.isfinite(v) for v in aux["losses"].values())


def data_codebooks():
  """h [B=3, 5, 5, 2] = coarse + fine, with the coarse and fine code sets."""
  rng = np.random.default_rng(7)
  coarse = np.array([[10, 0], [0, 10], [-10, 0], [0, -10]], np.float32)
  fine = np.array([[0.5, 0], [0, 0.5], [-0.5, 0], [0, -0.5]], np.float32)
  i, j = rng.integers(0, 4, size=(2, 3, 5, 5))
  return coarse[i] + fine[j], coarse, fine, i, j


def residual_variables(rq, h, coarse, fine, family, log_vars=(0.0, 0.0)):
  variables = rq.init({"params": jax.random.key(0)}, h, train=False)
  variables = jax.tree.map(lambda v: v, variables)   # a mutable copy
  for name, book, log_var in zip(("layer_1", "layer_2"), (coarse, fine), log_vars):
    if family == "sq":
      variables["params"][name] = dict(embedding=jnp.asarray(book),
                                       log_var=jnp.float32(log_var))
    else:
      cb = dict(variables["codebook"][name])
      cb.update(embedding=jnp.asarray(book), embed_sum=jnp.asarray(book))
      variables["codebook"][name] = cb
  return variables


@pytest.mark.parametrize("family", ["sq", "ema"])
def test_residual_quantizer_reconstructs_its_input_from_data_codebooks(family):
  h, coarse, fine, i, j = data_codebooks()
  rq = ResidualLayers(FAMILIES[family], num_codes=(4, 4), code_dim=2)
  variables = residual_variables(rq, h, coarse, fine, family)
  total, levels = rq.apply(variables, h, train=False)
  np.testing.assert_array_equal(levels["layer_1"]["indices"], i)
  np.testing.assert_array_equal(levels["layer_2"]["indices"], j)
  if family == "sq":
    np.testing.assert_array_equal(total, h)        # exact: h was built as coarse + fine
    np.testing.assert_allclose(levels["layer_2"]["losses"]["dequant"], 0.0, atol=0)
  else:
    np.testing.assert_allclose(total, h, atol=1e-6)  # h + (sum - h): one rounding


def test_rsq_losses_follow_eq14():
  h, coarse, fine, _, _ = data_codebooks()
  h = h + np.random.default_rng(8).normal(0, 0.3, h.shape).astype(np.float32)
  log_vars = (math.log(30.0), math.log(0.5))
  rq = ResidualLayers(FAMILIES["sq"], num_codes=(4, 4), code_dim=2)
  variables = residual_variables(rq, h, coarse, fine, "sq", log_vars)
  _, levels = rq.apply(variables, h, train=False)
  z = h.reshape(-1, 2).astype(np.float64)
  first = coarse[np_nearest(z, coarse)]
  second = fine[np_nearest(z - first, fine)]
  err = np.sum((z - first - second) ** 2)
  np.testing.assert_allclose(levels["layer_2"]["losses"]["dequant"],
                             err / (2 * (30.0 + 0.5)) / 3, rtol=1e-5)
  assert "dequant" not in levels["layer_1"]["losses"]
  np.testing.assert_allclose(levels["layer_1"]["losses"]["neg_entropy"],
                             np_neg_entropy(z, coarse, 30.0, 3), rtol=1e-5)
  np.testing.assert_allclose(levels["layer_2"]["losses"]["neg_entropy"],
                             np_neg_entropy(z - first, fine, 0.5, 3), rtol=1e-5)


def test_rq_baseline_commits_every_partial_sum_and_passes_the_sum_straight_through():
  h, coarse, fine, _, _ = data_codebooks()
  h = h + np.random.default_rng(9).normal(0, 0.3, h.shape).astype(np.float32)
  beta = 0.25
  rq = ResidualLayers(functools.partial(VectorQuantizerEMA, beta=beta),
                         num_codes=(4, 4), code_dim=2)
  variables = residual_variables(rq, h, coarse, fine, "ema")
  weights = np.random.default_rng(10).normal(size=h.shape).astype(np.float32)

  def objective(h):
    total, levels = rq.apply(variables, h, train=False)
    commitment = sum(levels[n]["losses"]["commitment"] for n in ("layer_1", "layer_2"))
    return commitment + jnp.sum(weights * total), [levels[n]["losses"]["commitment"]
                                                   for n in ("layer_1", "layer_2")]

  grad, values = jax.grad(objective, has_aux=True)(jnp.asarray(h))
  z = h.reshape(-1, 2).astype(np.float64)
  first = coarse[np_nearest(z, coarse)]
  partial_sums = [first, first + fine[np_nearest(z - first, fine)]]
  for value, p in zip(values, partial_sums):   # Eq. 15: beta |h - sg(sum_{l'<=l} Z)|^2
    np.testing.assert_allclose(value, beta * np.mean((z - p) ** 2), rtol=1e-5)
  want = weights.reshape(-1, 2) + sum(2 * beta * (z - p) / z.size for p in partial_sums)
  np.testing.assert_allclose(np.asarray(grad).reshape(-1, 2), want, rtol=1e-5, atol=1e-6)


def test_rsq_gradients_reach_every_layer_variance_and_the_shared_codebook():
  model = ResidualTopDownVAE(FAMILIES["sq"], num_codes=(8, 8), shared_codebook=True,
                             decoder_variance=True, **SMALL)
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, IMAGE, IMAGE, 3)), jnp.float32)
  params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]
  np.testing.assert_allclose(params[losses.DECODER_LOG_VAR], math.log(0.1), rtol=1e-6)

  @jax.jit
  def grads(params):
    def loss(p):
      x_hat, aux = model.apply({"params": p}, x, train=True, step=jnp.int32(0), rngs=RNGS)
      rec = losses.gaussian_nll(x, x_hat, p[losses.DECODER_LOG_VAR])
      return rec + sum(aux["losses"].values())
    return jax.grad(loss)(params)

  g = grads(params)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(g))
  for leaf in (g["layer_1"]["log_var"], g["layer_2"]["log_var"],
               g["shared_codebook"]["embedding"], g[losses.DECODER_LOG_VAR],
               g["bottom_up"]["stem_0"]["kernel"]):
    assert np.abs(leaf).max() > 0


def test_invalid_networks_raise():
  x = jnp.zeros((1, IMAGE, IMAGE, 3))
  init = lambda m, x=x: m.init({"params": jax.random.key(0)}, x, train=False)
  with pytest.raises(ValueError, match="num_pools >= 2"):
    init(InjectedTopDownVAE(FAMILIES["sq"], num_codes=(4, 4, 4), **SMALL))
  with pytest.raises(ValueError, match="one K for every layer"):
    init(ResidualTopDownVAE(FAMILIES["sq"], num_codes=(4, 8), shared_codebook=True, **SMALL))
  with pytest.raises(ValueError, match="divisible by 4"):
    init(ResidualTopDownVAE(FAMILIES["ema"], **SMALL), jnp.zeros((1, 18, 18, 3)))
