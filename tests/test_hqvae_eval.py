"""SSIM and the stochastic levels' evaluation statistics against NumPy references."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from vqjax import evaluate, metrics
from vqjax.experiments import hqvae_configs
from vqjax.quantizers import StochasticQuantizer


def np_ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
  """Wang et al. 2004 SSIM of [H, W, C] images on [0, 1], written out: every
  valid win x win window (uniform weights, sample covariances), K1 = 0.01,
  K2 = 0.03, data range 1, mean over windows and channels."""
  c1, c2, n = 0.01 ** 2, 0.03 ** 2, win * win
  values = []
  for ch in range(a.shape[-1]):
    wa = sliding_window_view(a[..., ch], (win, win)).reshape(-1, n)
    wb = sliding_window_view(b[..., ch], (win, win)).reshape(-1, n)
    mu_a, mu_b = wa.mean(1), wb.mean(1)
    var_a = ((wa - mu_a[:, None]) ** 2).sum(1) / (n - 1)
    var_b = ((wb - mu_b[:, None]) ** 2).sum(1) / (n - 1)
    cov = ((wa - mu_a[:, None]) * (wb - mu_b[:, None])).sum(1) / (n - 1)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
         / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    values.append(s.mean())
  return float(np.mean(values))


def test_ssim_of_identical_images_is_one():
  x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 12, 3))
  np.testing.assert_allclose(metrics.per_image_ssim(x, x), 1.0, atol=1e-12)


def test_ssim_of_a_constant_shift_in_closed_form():
  # b = a + d: every window has equal variances and covariance var_a, so
  # SSIM = (2 mu (mu + d) + C1) / (mu^2 + (mu + d)^2 + C1) for constant a = mu.
  mu, d = 0.3, 0.2
  a = np.full((1, 9, 9, 1), 2 * mu - 1)      # [-1, 1] range: 0.3 on [0, 1]
  b = a + 2 * d
  c1 = 0.01 ** 2
  want = (2 * mu * (mu + d) + c1) / (mu ** 2 + (mu + d) ** 2 + c1)
  np.testing.assert_allclose(metrics.per_image_ssim(a, b), want, rtol=1e-10)


def test_ssim_matches_the_formula_written_out():
  rng = np.random.default_rng(1)
  x = rng.uniform(-1, 1, (4, 20, 16, 3))
  x_hat = np.clip(x + rng.normal(0, 0.3, x.shape), -1.5, 1.5)  # some values clipped
  want = [np_ssim((a + 1) / 2, np.clip((b + 1) / 2, 0, 1)) for a, b in zip(x, x_hat)]
  np.testing.assert_allclose(metrics.per_image_ssim(x, x_hat), want, rtol=1e-9)
  with pytest.raises(ValueError, match="one shape"):
    metrics.per_image_ssim(x, x_hat[:2])


class FixedPosterior(nn.Module):
  """Returns x as its reconstruction and a given posterior [B, 2, 2, K] per level."""

  posterior: np.ndarray

  @nn.compact
  def __call__(self, x, *, train: bool, step=None):
    p = jnp.asarray(self.posterior)
    level = dict(indices=jnp.argmax(p, -1).astype(jnp.int32), posterior=p,
                 losses={}, metrics=dict(variance=jnp.float32(0.25)))
    return x, dict(losses={}, levels=dict(layer_1=level))


def test_eval_step_soft_histogram_and_entropy_skip_masked_images():
  rng = np.random.default_rng(2)
  k, batch = 5, 3
  logits = rng.normal(size=(batch, 2, 2, k)) * 2
  post = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  mask = np.array([True, False, True])
  model = FixedPosterior(post.astype(np.float32))
  counts = {"layer_1": jnp.zeros(k), "layer_1/posterior": jnp.zeros(k),
            "layer_1/entropy": jnp.zeros(())}
  batch_dict = {"image": jnp.zeros((batch, 4, 4, 3)), "mask": jnp.asarray(mask)}
  quantizers = {"layer_1": StochasticQuantizer(num_codes=k, code_dim=1)}
  out = evaluate.eval_step({}, {}, counts, batch_dict, model=model, quantizers=quantizers)
  out = evaluate.eval_step({}, {}, out["counts"], batch_dict, model=model,  # accumulates
                           quantizers=quantizers)

  kept = post[mask]                                         # [2, 2, 2, K]
  soft = 2 * kept.reshape(-1, k).sum(0)
  entropy_sum = 2 * -(kept * np.log(kept)).sum()
  hard = 2 * np.bincount(kept.argmax(-1).ravel(), minlength=k)
  np.testing.assert_allclose(out["counts"]["layer_1/posterior"], soft, rtol=1e-5)
  np.testing.assert_allclose(out["counts"]["layer_1/entropy"], entropy_sum, rtol=1e-5)
  np.testing.assert_array_equal(out["counts"]["layer_1"], hard)
  np.testing.assert_allclose(out["variance"]["layer_1"], 0.25)

  # summarize: perplexity_soft = exp H(normalised soft histogram); entropy per position.
  extra = dict(ssim=np.array([1.0, 0.5]),
               levels=dict(layer_1=dict(posterior=soft, variance=0.25,
                                        entropy=entropy_sum / soft.sum())))

  class Config:  # the fields summarize reads
    class data:  # noqa: N801
      name, image_size = "builtin", 4
    model = hqvae_configs.hqvae_model("injected_topdown", "stochastic", (k,), num_layers=1,
                                      num_pools=0)

  result = evaluate.summarize(Config, 7, np.array([20.0, 30.0]), np.array([0.01, 0.001]),
                              {"layer_1": hard}, extra)
  q = soft / soft.sum()
  level = result["levels"]["layer_1"]
  np.testing.assert_allclose(level["perplexity_soft"], np.exp(-(q * np.log(q)).sum()))
  np.testing.assert_allclose(level["entropy"], entropy_sum / (2 * 2 * 2 * 2))
  assert result["ssim"] == {"mean": 0.75, "std": 0.25}
