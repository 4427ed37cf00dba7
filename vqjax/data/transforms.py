"""Pixel transforms: pure functions on uint8 H x W x 3 arrays and the grain
transforms of the loaders (random crop + flip for training, centre crop for
evaluation, with the optional shorter-side resize of folder/tfds images).
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------
# Pixel transforms (pure functions on uint8 H x W x 3 arrays).


def to_model_range(images):
  """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1].

  Works on numpy and jax arrays (inside jit too). Floating-point images are
  taken to be in [-1, 1] already and returned unchanged.
  """
  if images.dtype != np.uint8:
    return images
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> uint8 HxWx3 (alpha dropped)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'Expected uint8 image, got dtype {image.dtype}.')
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f'Expected an HxWxC image with C in (1, 3, 4), got shape '
                     f'{image.shape}.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def shorter_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(H', W') with min(H', W') == size and the aspect ratio kept (rounded)."""
  if min(height, width) == size:
    return height, width
  if height <= width:
    return size, max(size, round(width * size / height))
  return max(size, round(height * size / width)), size


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """uint8 HxWx3 -> uint8 [shape[0], shape[1], 3] (bicubic); unchanged if equal."""
  if tuple(shape) == image.shape[:2]:
    return image
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(pil.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWx3 -> uint8 H'xW'x3 with min(H', W') == size (bicubic, aspect kept)."""
  return _resize(image, shorter_side_shape(*image.shape[:2], size))


def fitted_shape(height: int, width: int, image_size: int,
                 resize_size: int) -> tuple[int, int]:
  """(H', W') after the optional shorter-side resize to resize_size, with
  min(H', W') >= image_size ensured (aspect kept)."""
  if resize_size:
    height, width = shorter_side_shape(height, width, resize_size)
  if min(height, width) < image_size:
    height, width = shorter_side_shape(height, width, image_size)
  return height, width


def fit_image(image: np.ndarray, image_size: int, resize_size: int) -> np.ndarray:
  """uint8 HxWx3 resized (bicubic, once) to fitted_shape(H, W, image_size, resize_size)."""
  return _resize(image, fitted_shape(*image.shape[:2], image_size, resize_size))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWx3 (H, W >= size) -> the central uint8 size x size x 3 crop."""
  h, w = image.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def random_crop_flip(image: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray:
  """uint8 HxWx3 -> uniformly placed size x size crop, mirrored with p=1/2."""
  h, w = image.shape[:2]
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  crop = image[top:top + size, left:left + size]
  if rng.integers(0, 2):
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def random_fitted_crop_flip(image: np.ndarray, size: int, resize_size: int,
                            rng: np.random.Generator) -> np.ndarray:
  """random_crop_flip(fit_image(image, size, resize_size), size, rng), resampling only the crop.

  The crop is placed in the fitted (H', W') frame with the same random draws,
  and only its box of the original image is resized to size x size (bicubic;
  the filter still reads the pixels around the box), which skips the pixels
  the crop drops: about 1.4x faster for a 500x375 photo and resize_size 256.
  """
  h, w = image.shape[:2]
  fit_h, fit_w = fitted_shape(h, w, size, resize_size)
  top = int(rng.integers(0, fit_h - size + 1))
  left = int(rng.integers(0, fit_w - size + 1))
  if (fit_h, fit_w) == (h, w):
    crop = image[top:top + size, left:left + size]
  else:
    sy, sx = h / fit_h, w / fit_w
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    pil = Image.fromarray(np.ascontiguousarray(image))
    crop = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box))
  if rng.integers(0, 2):
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """uint8 HxWx3 record -> {'image': uint8 [S, S, 3]}."""
  image_size: int
  resize_size: int = 0
  fit: bool = True   # False for builtin: photos are used as they are

  def random_map(self, element, rng: np.random.Generator):
    image = as_rgb(element)
    if self.fit:
      crop = random_fitted_crop_flip(image, self.image_size, self.resize_size, rng)
    else:
      crop = random_crop_flip(image, self.image_size, rng)
    return {'image': crop}


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """uint8 HxWx3 record -> uint8 [S, S, 3] centre crop (after fit_image)."""
  image_size: int
  resize_size: int = 0

  def map(self, element):
    if element is None:  # an undecodable file left out (on_bad_image='skip')
      return None
    image = fit_image(as_rgb(element), self.image_size, self.resize_size)
    return np.ascontiguousarray(center_crop(image, self.image_size))

