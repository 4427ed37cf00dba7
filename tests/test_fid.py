"""The Fréchet distance (vqjax.perceptual.fid) against closed forms, a direct NumPy /
scipy computation, and streamed statistics; the Inception-v3 weight file's format."""

import numpy as np
import pytest
import scipy.linalg

from vqjax.perceptual import fid, inception


def _rotation(d: int, seed: int) -> np.ndarray:
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return q


def test_two_gaussians_in_closed_form():
  """Covariances with common eigenvectors: d^2 = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
  d = 6
  q = _rotation(d, 0)
  a = np.array([4.0, 1.0, 0.25, 9.0, 2.0, 0.0])   # singular: one zero variance
  b = np.array([1.0, 1.0, 1.0, 4.0, 0.5, 3.0])
  mu1, mu2 = np.arange(d, dtype=float), np.arange(d, dtype=float)[::-1]
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
  assert got == pytest.approx(want, rel=1e-10)
  # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2.
  assert fid.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)


def test_equals_a_direct_numpy_computation_on_random_features():
  """pytorch-fid's formula: tr of scipy.linalg.sqrtm(S1 S2), on np.mean / np.cov."""
  rng = np.random.default_rng(1)
  real = rng.normal(size=(400, 24)) @ rng.normal(size=(24, 24))
  fake = 0.8 * rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) + 0.3
  mu1, mu2 = real.mean(0), fake.mean(0)
  s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
  assert fid.fid_from_features(real, fake) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("n, d", [(200, 8), (20, 64)])  # the second: singular covariances
def test_identical_sets_are_at_distance_zero(n, d):
  feats = np.random.default_rng(2).normal(size=(n, d)) * 5 + 1
  assert fid.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
  # A shifted copy: only the mean term remains, even with rank-deficient covariances.
  assert fid.fid_from_features(feats, feats + 0.5) == pytest.approx(d * 0.25, rel=1e-8)


def test_streamed_statistics_equal_all_at_once_and_skip_masked_rows():
  rng = np.random.default_rng(3)
  feats = rng.normal(size=(83, 5)) * 100 + 1e4  # a large offset: no cancellation
  stats = fid.FeatureStatistics(5)
  start = 0
  for size in (32, 32, 19):
    batch = np.concatenate([feats[start:start + size], np.full((32 - size, 5), np.nan)])
    stats.update(batch, mask=np.arange(32) < size)  # padding rows dropped
    start += size
  assert stats.count == 83
  np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(feats, rowvar=False), rtol=1e-9)


def test_bad_shapes_and_too_few_vectors_are_clear_errors():
  with pytest.raises(ValueError, match=r"must be \[B, 3\]"):
    fid.FeatureStatistics(3).update(np.zeros((2, 4)))
  with pytest.raises(ValueError, match="at least 2"):
    _ = fid.FeatureStatistics(3).update(np.zeros((1, 3))).cov
  with pytest.raises(ValueError, match="shapes"):
    fid.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(3))


def _random_inception_npz(path, drop: str | None = None):
  rng = np.random.default_rng(0)
  arrays = {k: (rng.uniform(0.5, 1.5, s) if k.endswith("running_var")
                else rng.normal(size=s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
            for k, s in inception.param_shapes().items() if k != drop}
  arrays["fc.weight"] = np.zeros((1008, 2048), np.float32)  # in the file, not needed
  np.savez(path, **arrays)
  return arrays


def test_the_inception_weight_file_maps_every_pytorch_fid_name(tmp_path):
  shapes = inception.param_shapes()
  assert len(shapes) == 94 * 5  # 94 BasicConv2d: conv.weight + 4 BatchNorm arrays each
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  arrays = _random_inception_npz(tmp_path / "w.npz")
  params = inception.load_params(str(tmp_path / "w.npz"))
  np.testing.assert_array_equal(  # torch OIHW -> Flax HWIO
      params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
      arrays["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["Mixed_5b"]["branch1x1"]["bn"]["var"],
                                arrays["Mixed_5b.branch1x1.bn.running_var"])
  _random_inception_npz(tmp_path / "bad.npz", drop="Mixed_5b.branch1x1.bn.running_var")
  with pytest.raises(ValueError, match="1 missing.*Mixed_5b.branch1x1.bn.running_var"):
    inception.load_params(str(tmp_path / "bad.npz"))


@pytest.mark.slow
def test_inception_features_of_random_weights_have_2048_dims(tmp_path):
  _random_inception_npz(tmp_path / "w.npz")
  params = inception.load_params(str(tmp_path / "w.npz"))
  x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  feats = np.asarray(inception.inception_features(params, x))
  assert feats.shape == (2, 2048) and np.isfinite(feats).all()


def test_image_set_fid_batches_pad_and_mask_as_one_image_at_a_time():
  """perceptual.image_set_fid of 7 real vs 5 fake images, batch 3 (padded, masked):
  the LPIPS-AlexNet features of each image alone, then pytorch-fid's formula in
  NumPy/SciPy on them."""
  from vqjax import perceptual  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(4)
  real = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
  fake = np.clip(real[:5].astype(int) // 2 + 40, 0, 255).astype(np.uint8)
  got = perceptual.image_set_fid(real, fake, "lpips_alex", batch_size=3)
  params = perceptual.lpips.load_params("alex")
  one = lambda im: np.asarray(perceptual.lpips.pooled_features(perceptual.lpips.lpips_features(
      params, np.asarray(im[None], np.float32) / 127.5 - 1, "alex")))[0].astype(np.float64)
  fr, ff = np.stack([one(im) for im in real]), np.stack([one(im) for im in fake])
  s1, s2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
  want = (np.sum((fr.mean(0) - ff.mean(0)) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
  assert got["num_images"] == 5 and got["num_real_images"] == 7 and got["dim"] == 256
  np.testing.assert_allclose(got["value"], want, rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match=">= 2 images"):
    perceptual.image_set_fid(real, fake[:1])
