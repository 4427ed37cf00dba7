"""Tests for vqjax.metrics against hand-computed values and NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import metrics


def _images(seed, shape=(3, 8, 8, 3), low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# ---------------------------------------------------------------------------
# Reconstruction metrics.
# ---------------------------------------------------------------------------


def test_to_unit_range():
  np.testing.assert_allclose(metrics.to_unit_range(jnp.array([-1.0, 0.0, 1.0])),
                             [0.0, 0.5, 1.0])


def test_psnr_constant_error_is_20_db():
  # Error 0.1 on [0, 1] is 0.2 on [-1, 1]: mse = 0.01 -> 10 log10(100) = 20 dB.
  x = jnp.zeros((2, 4, 4, 3))
  psnr = metrics.per_image_psnr(x, x + 0.2)
  assert psnr.shape == (2,)
  np.testing.assert_allclose(psnr, [20.0, 20.0], atol=1e-4)


def test_psnr_per_image_values():
  # Image 0 error 0.1 (20 dB), image 1 error 0.01 on [0, 1] (40 dB).
  x = jnp.zeros((2, 4, 4, 1))
  x_hat = x.at[0].add(0.2).at[1].add(0.02)
  np.testing.assert_allclose(metrics.per_image_psnr(x, x_hat), [20.0, 40.0],
                             atol=1e-3)


def test_psnr_clips_reconstruction():
  # Original at the top of the range; reconstruction overshoots to 3.0. After
  # clipping to [0, 1] the error is 0, so PSNR hits the cap instead of
  # 10 log10(1 / 1.0^2) = 0 dB without clipping ((3+1)/2 - 1 = 1.0).
  x = jnp.ones((1, 4, 4, 3))
  psnr = metrics.per_image_psnr(x, jnp.full_like(x, 3.0))
  np.testing.assert_allclose(psnr, [metrics.MAX_PSNR_DB], atol=1e-3)
  # Undershoot: x = 0.2 ([0, 1]: 0.6), x_hat = -5 -> clipped to 0 -> err 0.6.
  x = jnp.full((1, 2, 2, 3), 0.2)
  psnr = metrics.per_image_psnr(x, jnp.full_like(x, -5.0))
  np.testing.assert_allclose(psnr, [10 * math.log10(1 / 0.36)], atol=1e-4)


def test_psnr_identical_images_is_capped_and_finite():
  x = jnp.asarray(_images(0))
  psnr = metrics.per_image_psnr(x, x)
  assert psnr.shape == (3,)
  np.testing.assert_allclose(psnr, metrics.MAX_PSNR_DB, atol=1e-3)


def test_mse_matches_numpy_on_unit_scale():
  x = _images(1)
  x_hat = _images(2, low=-1.5, high=1.5)  # partly outside [-1, 1]
  expected = np.mean(
      ((x + 1) / 2 - np.clip((x_hat + 1) / 2, 0, 1)) ** 2, axis=(1, 2, 3))
  mse = jax.jit(metrics.per_image_mse)(x, x_hat)
  assert mse.shape == (3,)
  np.testing.assert_allclose(mse, expected, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(metrics.per_image_psnr)(x, x_hat),
                             10 * np.log10(1 / expected), rtol=1e-5)


# ---------------------------------------------------------------------------
# Code usage statistics.
# ---------------------------------------------------------------------------


def test_uniform_usage():
  counts = np.full(16, 7)
  assert metrics.perplexity(counts) == pytest.approx(16.0)
  assert metrics.normalized_perplexity(counts) == pytest.approx(1.0)
  assert metrics.gini(counts) == pytest.approx(0.0, abs=1e-12)
  assert metrics.unused_codes(counts) == 0


def test_single_code_used():
  k = 8
  counts = np.zeros(k, np.int64)
  counts[5] = 100
  assert metrics.perplexity(counts) == pytest.approx(1.0)
  assert metrics.normalized_perplexity(counts) == pytest.approx(1 / k)
  assert metrics.gini(counts) == pytest.approx((k - 1) / k)
  assert metrics.unused_codes(counts) == k - 1


def test_three_code_case_by_hand():
  counts = np.array([3, 1, 2])  # p = 1/2, 1/6, 1/3
  entropy = -(0.5 * math.log(0.5) + math.log(1 / 6) / 6
              + math.log(1 / 3) / 3)
  assert metrics.perplexity(counts) == pytest.approx(math.exp(entropy))
  assert metrics.normalized_perplexity(counts) == pytest.approx(
      math.exp(entropy) / 3)
  # Lorenz points (sorted 1, 2, 3 of 6): (0,0) (1/3,1/6) (2/3,1/2) (1,1).
  # Trapezoids: 1/3 * [(0+1/6) + (1/6+1/2) + (1/2+1)] / 2 = 1/3 * 14/12 = 7/18.
  x, y = metrics.lorenz_curve(counts)
  np.testing.assert_allclose(x, [0, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(y, [0, 1 / 6, 1 / 2, 1])
  assert metrics.gini(counts) == pytest.approx(1 - 2 * 7 / 18)  # = 2/9


def test_lorenz_curve_endpoints_and_monotone():
  counts = np.random.default_rng(0).poisson(3.0, size=1000)
  x, y = metrics.lorenz_curve(counts)
  assert x.shape == y.shape == (1001,)
  assert (x[0], y[0]) == (0.0, 0.0)
  assert x[-1] == pytest.approx(1.0) and y[-1] == pytest.approx(1.0)
  assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
  # Ascending frequency: convex, so never above the diagonal.
  assert np.all(np.diff(y, 2) >= -1e-12)
  assert np.all(y <= x + 1e-12)


def test_empty_histogram_raises():
  with pytest.raises(ValueError, match="sums to 0"):
    metrics.perplexity(np.zeros(4, np.int64))
  with pytest.raises(ValueError, match="sums to 0"):
    metrics.code_usage_summary(np.zeros(4, np.int64))
  with pytest.raises(ValueError):
    metrics.gini(np.array([1, -1, 2]))


def test_code_usage_summary_is_plain_python():
  summary = metrics.code_usage_summary(np.array([3, 1, 2, 0]))
  assert set(summary) == {"num_codes", "perplexity", "normalized_perplexity",
                          "unused_codes", "gini"}
  assert summary["num_codes"] == 4 and summary["unused_codes"] == 1
  assert type(summary["num_codes"]) is int
  assert type(summary["unused_codes"]) is int
  for key in ("perplexity", "normalized_perplexity", "gini"):
    assert type(summary[key]) is float
  # Sorted 0,1,2,3 of 6: y = 0, 0, 1/6, 1/2, 1 at x = i/4 ->
  # area = 1/4 * (0 + 1/6 + 4/6 + 9/6) / 2 = 14/48.
  assert summary["gini"] == pytest.approx(1 - 2 * 14 / 48)
  import json  # pylint: disable=g-import-not-at-top
  json.dumps(summary)


def test_batch_perplexity_matches_numpy_large_k_under_jit():
  k = 65536
  rng = np.random.default_rng(0)
  # Skewed usage so that the answer is far from both 1 and K.
  indices = np.minimum(rng.zipf(1.3, size=(4, 32, 32)) - 1, k - 1).astype(np.int32)
  counts = np.bincount(indices.ravel(), minlength=k)
  p = counts[counts > 0] / counts.sum()
  expected = np.exp(-np.sum(p * np.log(p)))
  got = jax.jit(metrics.batch_perplexity, static_argnums=1)(indices, k)
  assert got.shape == ()
  np.testing.assert_allclose(float(got), expected, rtol=1e-4)
  assert float(got) == pytest.approx(metrics.perplexity(counts), rel=1e-4)
  np.testing.assert_array_equal(
      jax.jit(metrics.code_counts, static_argnums=1)(indices, k), counts)


def test_batch_perplexity_extremes():
  assert float(metrics.batch_perplexity(jnp.zeros(10, jnp.int32), 4)) == (
      pytest.approx(1.0))
  assert float(metrics.batch_perplexity(jnp.arange(8) % 4, 4)) == (
      pytest.approx(4.0))
