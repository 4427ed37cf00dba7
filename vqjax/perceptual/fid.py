"""Fréchet distance between feature statistics (FID, Heusel et al., 2017), streamed.

  stats = FeatureStatistics(dim)
  for feats in batches: stats.update(feats)          # [B, dim]; a mask drops padding
  d = frechet_distance(real.mean, real.cov, fake.mean, fake.cov)

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^1/2 S_2 S_1^1/2)^1/2)

The trace term is computed from two symmetric eigen-decompositions (S_1^1/2,
then the eigenvalues of the PSD matrix S_1^1/2 S_2 S_1^1/2; eigenvalues below
rounding, d eps max|lambda|, count as 0). tr((S_1 S_2)^1/2) is the same number
(S_1 S_2 is similar to it), but that product is not symmetric, and
`scipy.linalg.sqrtm` of it goes complex or inaccurate when the covariances are
singular, as they are with fewer images than feature dimensions (82 validation
crops, 256-d features). The statistics
are accumulated in float64 with the pairwise update of Chan et al. (a batch's
mean and centred scatter merged into the running ones), so streaming over
batches equals np.mean / np.cov of all features at once.

Which features: FID proper uses Inception-v3's 2048-d pool3 (`inception.py`, a
user-supplied weight file); offline, vqjax uses the LPIPS backbone's last map
averaged over positions (`lpips.pooled_features`) as a stand-in, and always
names the network (`fid_lpips_alex`, never plain `fid`): its values are not
comparable with published FIDs.
"""

from __future__ import annotations

import functools

import numpy as np
import threadpoolctl


@functools.lru_cache(maxsize=1)
def _blas() -> threadpoolctl.ThreadpoolController:
  return threadpoolctl.ThreadpoolController()  # NumPy's BLAS is loaded by now


def _one_blas_thread(fn):
  """Runs fn with NumPy's BLAS on one thread.

  The matrices here are small (d <= 2048) and evaluation runs beside XLA's
  threads: a multi-threaded OpenBLAS then spins against them. On the 2-core
  machine of BENCHMARKS.md the statistics and distance of the default
  evaluation took 0.69 s with OpenBLAS's own threads and 0.02 s with one.
  """
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with _blas().limit(limits=1, user_api="blas"):
      return fn(*args, **kwargs)
  return wrapped


class FeatureStatistics:
  """Running count, mean [d] and centred scatter [d, d] of feature vectors (float64)."""

  def __init__(self, dim: int):
    self.dim = int(dim)
    self.count = 0
    self.mean = np.zeros(self.dim, np.float64)
    self._scatter = np.zeros((self.dim, self.dim), np.float64)

  @_one_blas_thread
  def update(self, features, mask=None) -> "FeatureStatistics":
    """Adds the rows of features [B, d] (those with mask True, if given)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[1] != self.dim:
      raise ValueError(f"features must be [B, {self.dim}], got {f.shape}")
    if mask is not None:
      f = f[np.asarray(mask, bool)]
    n_b = f.shape[0]
    if n_b == 0:
      return self
    mean_b = f.mean(0)
    centred = f - mean_b
    scatter_b = centred.T @ centred
    n = self.count + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * (n_b / n)
    self._scatter += scatter_b + np.outer(delta, delta) * (self.count * n_b / n)
    self.count = n
    return self

  @property
  def cov(self) -> np.ndarray:
    """The unbiased covariance [d, d] (divides by count - 1, as np.cov)."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
    return self._scatter / (self.count - 1)


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
  """Eigenvalues of a PSD matrix with those below rounding (d eps max|w|) set to 0.

  A zero eigenvalue comes out as +-1e-16 relative; its square root (1e-8) would
  add up over the null space of a singular covariance.
  """
  tol = len(w) * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 1e-300)
  return np.where(w > tol, w, 0.0)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric PSD matrix."""
  w, v = np.linalg.eigh((a + a.T) * 0.5)
  return (v * np.sqrt(_psd_eigvals(w))) @ v.T


@_one_blas_thread
def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: [d] means.
    sigma1, sigma2: [d, d] covariances (symmetric PSD; singular is fine).

  Returns:
    d^2 >= 0 (rounding below 0 is clipped), the number reported as FID.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f"shapes: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
  root1 = _psd_sqrt(s1)
  middle = root1 @ s2 @ root1
  eig = np.linalg.eigvalsh((middle + middle.T) * 0.5)
  trace_sqrt = np.sum(np.sqrt(_psd_eigvals(eig)))
  diff = mu1 - mu2
  d2 = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt
  return float(max(d2, 0.0))


def fid_from_statistics(real: FeatureStatistics, fake: FeatureStatistics) -> float:
  """frechet_distance of two streamed statistics (same dimension)."""
  return frechet_distance(real.mean, real.cov, fake.mean, fake.cov)


def fid_from_features(real, fake) -> float:
  """frechet_distance of two feature sets [N, d] and [M, d], all rows at once."""
  a = FeatureStatistics(np.shape(real)[1]).update(real)
  b = FeatureStatistics(np.shape(fake)[1]).update(fake)
  return fid_from_statistics(a, b)
