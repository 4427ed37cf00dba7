"""Colour augmentation: random hue rotation and random channel permutation.

The built-in training photos hold almost no green, so a model trained on them
alone turns leaves and grass brown (issue 15). Rotating the hue of every
training crop by a random angle and permuting its colour channels shows the
codebook and the decoder every hue while keeping each crop's structure,
brightness (HSV value) and saturation.

Pure NumPy on uint8 [..., 3] images; `ColorAugment` is the grain RandomMap the
training loader appends after the crop (`data.create_train_loader`),
so the draws are a pure function of the loader seed and the record position.
"""

from __future__ import annotations

import dataclasses
import itertools

import grain
import numpy as np

# The 6 orders of (R, G, B); PERMUTATIONS[0] is the identity.
PERMUTATIONS = tuple(itertools.permutations(range(3)))


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """float [..., 3] RGB in [0, 1] -> float64 HSV, hue in [0, 1) (turns)."""
  rgb = np.asarray(rgb, np.float64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = rgb.max(-1)
  delta = v - rgb.min(-1)
  s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
  d = np.where(delta > 0, delta, 1.0)
  h = np.where(v == r, ((g - b) / d) % 6.0,
               np.where(v == g, (b - r) / d + 2.0, (r - g) / d + 4.0)) / 6.0
  h = np.where(delta > 0, h, 0.0) % 1.0
  return np.stack([h, s, v], axis=-1)


# Sector k of the HSV hexagon: (r, g, b) = the values at these positions of
# (v, q, p, t); the classic table (v,t,p), (q,v,p), (p,v,t), (p,q,v), (t,p,v), (v,p,q).
_SECTOR_PICKS = np.array([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """float [..., 3] HSV (hue in turns, any real) -> float64 RGB in [0, 1]."""
  hsv = np.asarray(hsv, np.float64)
  h, s, v = (hsv[..., 0] % 1.0) * 6.0, hsv[..., 1], hsv[..., 2]
  sector = np.floor(h).astype(np.int64) % 6
  f = h - np.floor(h)
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  # One gather from the four candidates instead of a 6-way select per channel
  # (the same values, picked, not recomputed).
  values = np.stack([v, q, p, t], axis=-1)                       # [..., 4]
  return np.take_along_axis(values, _SECTOR_PICKS[sector], axis=-1)


def rotate_hue(image: np.ndarray, degrees: float) -> np.ndarray:
  """uint8 [..., 3] with every pixel's HSV hue turned by `degrees` -> uint8.

  Saturation and value are kept (no clipping needed: HSV -> RGB stays in
  gamut); 0 degrees returns the image unchanged; 120 degrees is the channel
  cycle (R, G, B) -> (B, R, G).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.shape[-1] != 3:
    raise ValueError(f"rotate_hue needs uint8 [..., 3] images, got {image.dtype} "
                     f"{image.shape}.")
  hsv = rgb_to_hsv(image / 255.0)
  hsv[..., 0] += degrees / 360.0
  return np.clip(np.rint(hsv_to_rgb(hsv) * 255.0), 0, 255).astype(np.uint8)


def permute_channels(image: np.ndarray, order) -> np.ndarray:
  """image[..., order]: uint8 [..., 3] with its colour channels reordered."""
  return np.ascontiguousarray(np.asarray(image)[..., tuple(order)])


@dataclasses.dataclass(frozen=True)
class ColorAugment(grain.transforms.RandomMap):
  """{'image': uint8 [S, S, 3]} -> the same with random colours.

  With probability `prob` the crop's hue is rotated by an angle drawn
  uniformly from [-max_hue_degrees, max_hue_degrees] and, if `permute`, its
  channels are put in one of the 6 orders (uniform, identity included). The
  same number of draws is made for every record, so the stream is a pure
  function of seed and position.
  """
  max_hue_degrees: float = 180.0
  permute: bool = True
  prob: float = 1.0

  def random_map(self, element, rng: np.random.Generator):
    apply, angle, order = rng.random(), rng.uniform(-1.0, 1.0), rng.integers(0, 6)
    if apply >= self.prob:
      return element
    image = element["image"]
    if self.max_hue_degrees:
      image = rotate_hue(image, float(angle) * self.max_hue_degrees)
    if self.permute:
      image = permute_channels(image, PERMUTATIONS[int(order)])
    return {**element, "image": image}
