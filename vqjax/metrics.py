"""Reconstruction and codebook-usage metrics.

Images are float32 NHWC in [-1, 1]. Reconstruction metrics are computed on the
[0, 1] pixel range (data range 1) with the reconstruction clipped to [0, 1], so
they match what a saved 8-bit image would show (up to quantisation).

Two kinds of functions:
  * jnp, jit-friendly (usable inside a jitted train/eval step):
    `to_unit_range`, `per_image_mse`, `per_image_psnr`, `code_counts`,
    `batch_perplexity`, `perplexity_from_counts`.
  * NumPy, host side: `per_image_ssim` (scikit-image) on image batches, and
    on a code histogram `counts` [K] (number of assignments
    per code, e.g. accumulated over an eval set): `perplexity`,
    `normalized_perplexity`, `unused_codes`, `lorenz_curve`, `gini`,
    `code_usage_summary`.

Numbers only: the figures drawn from them are in vqjax/plots.py.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import entr
import numpy as np
from skimage.metrics import structural_similarity

# PSNR of a perfect reconstruction: the MSE is floored at 10^(-MAX_PSNR_DB/10)
# = 1e-10 before the log, so mse == 0 gives exactly MAX_PSNR_DB instead of inf
# (and any PSNR above it is capped). 8-bit images can not get anywhere near it:
# one grey level of error in one pixel of a 32x32x3 image is already ~83 dB.
MAX_PSNR_DB = 100.0


# ---------------------------------------------------------------------------
# Reconstruction metrics (jnp).
# ---------------------------------------------------------------------------


def to_unit_range(x: jax.Array) -> jax.Array:
  """Maps images from [-1, 1] to [0, 1] (no clipping): (x + 1) / 2."""
  return (x + 1.0) * 0.5


def per_image_mse(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """Mean squared error per image on the [0, 1] scale.

  Args:
    x: [B, H, W, C] originals in [-1, 1].
    x_hat: [B, H, W, C] reconstructions; clipped to [-1, 1] (i.e. [0, 1] after
      rescaling) before the comparison.

  Returns:
    [B] float32 MSE in (data range 1)^2 units.
  """
  if x.shape != x_hat.shape:
    raise ValueError(f"shape mismatch: x {x.shape} vs x_hat {x_hat.shape}")
  x = to_unit_range(jnp.asarray(x, jnp.float32))
  x_hat = jnp.clip(to_unit_range(jnp.asarray(x_hat, jnp.float32)), 0.0, 1.0)
  axes = tuple(range(1, x.ndim))
  return jnp.mean(jnp.square(x - x_hat), axis=axes)


def psnr_from_mse(mse: jax.Array) -> jax.Array:
  """PSNR in dB for data range 1: 10 log10(1 / mse), capped at MAX_PSNR_DB."""
  floor = 10.0 ** (-MAX_PSNR_DB / 10.0)
  return -10.0 * jnp.log10(jnp.maximum(mse, floor))


def per_image_psnr(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """PSNR per image in dB (data range 1, see `per_image_mse`). -> [B] float32.

  Identical images give MAX_PSNR_DB (100 dB) instead of inf.
  """
  return psnr_from_mse(per_image_mse(x, x_hat))


def per_image_ssim(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
  """SSIM per image (NumPy, host side) -> [B] float64.

  x, x_hat: [B, H, W, C] in [-1, 1]; both mapped to [0, 1] and x_hat clipped
  (as `per_image_mse`). skimage.metrics.structural_similarity with its
  defaults: data_range 1, a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample
  covariances, the mean over the window positions (borders of 3 pixels
  cropped) and over channels. Needs H, W >= 7.
  """
  x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
  if x.shape != x_hat.shape or x.ndim != 4:
    raise ValueError(f"SSIM needs x and x_hat of one shape [B, H, W, C]; got "
                     f"{x.shape} and {x_hat.shape}.")
  x = np.clip((x + 1.0) * 0.5, 0.0, 1.0)
  x_hat = np.clip((x_hat + 1.0) * 0.5, 0.0, 1.0)
  return np.array([structural_similarity(a, b, data_range=1.0, channel_axis=-1)
                   for a, b in zip(x, x_hat)], np.float64)


# ---------------------------------------------------------------------------
# Code usage of one batch (jnp).
# ---------------------------------------------------------------------------


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
  """Histogram of code assignments. indices: int array of any shape -> [K] int32.

  A scatter-add (segment_sum), never a [N, K] one-hot; `num_codes` must be
  static under jit. Indices outside [0, K) are dropped.
  """
  flat = jnp.ravel(indices).astype(jnp.int32)
  return jax.ops.segment_sum(jnp.ones_like(flat), flat, num_segments=num_codes)


def batch_perplexity(indices: jax.Array, num_codes: int) -> jax.Array:
  """exp(entropy) (natural log) of one batch's assignments -> [] float32.

  In [1, min(N, K)]: 1 if all N vectors use the same code, K for uniform use.
  `num_codes` must be static under jit.
  """
  return perplexity_from_counts(code_counts(indices, num_codes))


def perplexity_from_counts(counts: jax.Array) -> jax.Array:
  """exp(entropy) (natural log) of the histogram counts [K] -> [] float32 (jnp)."""
  counts = counts.astype(jnp.float32)
  probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return jnp.exp(jnp.sum(entr(probs)))


# ---------------------------------------------------------------------------
# Code usage statistics on a histogram (NumPy, host side).
# ---------------------------------------------------------------------------


def _check_counts(counts: Any) -> np.ndarray:
  """Returns counts as a float64 [K] array; raises on bad or empty input."""
  counts = np.asarray(counts)
  if counts.ndim != 1 or counts.size == 0:
    raise ValueError(f"counts must be a non-empty [K] histogram, got shape "
                     f"{counts.shape}")
  counts = counts.astype(np.float64)
  if np.any(counts < 0) or not np.all(np.isfinite(counts)):
    raise ValueError("counts must be finite and non-negative")
  if counts.sum() == 0:
    raise ValueError(
        f"counts sums to 0 over all {counts.size} codes: no assignments were "
        "recorded, so code-usage statistics are undefined")
  return counts


def perplexity(counts: np.ndarray) -> float:
  """exp(Shannon entropy, natural log) of counts / sum. counts: [K] -> [1, K]."""
  counts = _check_counts(counts)
  p = counts[counts > 0] / counts.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


def normalized_perplexity(counts: np.ndarray) -> float:
  """perplexity / K, in (0, 1]; 1 means uniform usage of all K codes."""
  return perplexity(counts) / len(counts)


def unused_codes(counts: np.ndarray) -> int:
  """Number of codes with zero assignments."""
  return int(np.sum(_check_counts(counts) == 0))


def lorenz_curve(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Lorenz curve of code usage, codes sorted by ascending frequency.

  Args:
    counts: [K] assignments per code.

  Returns:
    (x, y), each [K + 1] float64: x[i] = i / K is the fraction of (least used)
    codes, y[i] their share of all assignments; both start at 0 and end at 1.
  """
  counts = np.sort(_check_counts(counts))
  x = np.arange(len(counts) + 1, dtype=np.float64) / len(counts)
  y = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()
  return x, y


def gini(counts: np.ndarray) -> float:
  """1 - 2 * (trapezoid area under the Lorenz curve), in [0, (K - 1) / K].

  0 for uniform usage; (K - 1) / K when a single code takes every assignment.
  """
  x, y = lorenz_curve(counts)
  area = np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5)
  return float(1.0 - 2.0 * area)


def code_usage_summary(counts: np.ndarray) -> dict[str, int | float]:
  """JSON-ready usage statistics of a [K] histogram.

  Keys: num_codes, perplexity, normalized_perplexity, unused_codes, gini.
  """
  counts = _check_counts(counts)
  return {
      "num_codes": int(len(counts)),
      "perplexity": perplexity(counts),
      "normalized_perplexity": normalized_perplexity(counts),
      "unused_codes": unused_codes(counts),
      "gini": gini(counts),
  }
