"""FID's Inception-v3 in Flax, from a user-supplied weight file (nothing is downloaded).

The network is pytorch-fid's `FIDInceptionA/C/E_1/E_2` variant of torchvision's
Inception3: the port of TensorFlow's 2015-12-05 graph that FID was defined
with (average pools without the padding in the count, a max pool in the last
block). `inception_features` returns the 2048-d pool3 vector per image.

The weight file. vqjax reads a NumPy `.npz` whose keys are pytorch-fid's
state_dict names with PyTorch layouts, e.g.

  Conv2d_1a_3x3.conv.weight      [32, 3, 3, 3]   (out, in, kh, kw)
  Conv2d_1a_3x3.bn.weight / .bn.bias / .bn.running_mean / .bn.running_var   [32]
  Mixed_7c.branch_pool.conv.weight  [192, 2048, 1, 1]  ...

(every BasicConv2d: a bias-free conv plus BatchNorm with eps 1e-3; `fc.*` and
`num_batches_tracked` are ignored). Make it once, on a machine with PyTorch,
from pytorch-fid's released weights `pt_inception-2015-12-05-6726825d.pth`
(the `fid_weights` release of github.com/mseitzer/pytorch-fid, which
`pytorch_fid.inception.fid_inception_v3` downloads):

  python scripts/inception_npz.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz

and point `--config.eval.inception_weights` at the .npz (with
`--config.eval.fid=inception_v3`). Input: images in [-1, 1], resized to 299x299
bilinearly (half-pixel centres, no antialiasing: torch's `F.interpolate(...,
align_corners=False)`, which pytorch-fid uses), as pytorch-fid's
`normalize_input` maps [0, 1] to [-1, 1].
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
DIM = 2048
BN_EPS = 1e-3


class BasicConv2d(nn.Module):
  """Conv (no bias) + inference BatchNorm (eps 1e-3) + ReLU, torch's names (conv, bn)."""
  features: int
  kernel: tuple = (1, 1)
  strides: tuple = (1, 1)
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    bn = _FrozenBatchNorm(self.features, name="bn")
    return nn.relu(bn(x))


class _FrozenBatchNorm(nn.Module):
  """BatchNorm with running statistics as parameters (scale, bias, mean, var)."""
  features: int

  @nn.compact
  def __call__(self, x):
    c = (self.features,)
    scale = self.param("scale", nn.initializers.ones, c)
    bias = self.param("bias", nn.initializers.zeros, c)
    mean = self.param("mean", nn.initializers.zeros, c)
    var = self.param("var", nn.initializers.ones, c)
    return (x - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias


def _avg_pool(x):  # FID's blocks: 3x3, stride 1, padding 1, padding not counted
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool(x, stride=2, pad=0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name="branch1x1")(x)
    b5 = BasicConv2d(48, name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x)], -1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = BasicConv2d(192, name="branch1x1")(x)
    b7 = BasicConv2d(c, name="branch7x7_1")(x)
    b7 = BasicConv2d(c, **row, name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, **col, name="branch7x7_3")(b7)
    bd = BasicConv2d(c, name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c, **col, name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c, **row, name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c, **col, name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, **row, name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], -1)


class InceptionE(nn.Module):
  """FIDInceptionE_1 (average pool) or, with max_pool, FIDInceptionE_2."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = BasicConv2d(320, name="branch1x1")(x)
    b3 = BasicConv2d(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, **row, name="branch3x3_2a")(b3),
                          BasicConv2d(384, **col, name="branch3x3_2b")(b3)], -1)
    bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, **row, name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, **col, name="branch3x3dbl_3b")(bd)], -1)
    pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool(x)
    bp = BasicConv2d(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nn.Module):
  """[-1, 1] images [B, H, W, 3] -> pool3 features [B, 2048]."""

  @nn.compact
  def __call__(self, x):
    x = jax.image.resize(jnp.asarray(x, jnp.float32),
                         (x.shape[0], INPUT_SIZE, INPUT_SIZE, x.shape[-1]),
                         "bilinear", antialias=False)
    x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool(x)
    x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


# torch state_dict suffix -> (Flax leaf path suffix, layout change).
_TORCH_LEAVES = {"conv.weight": ("conv", "kernel"), "bn.weight": ("bn", "scale"),
                 "bn.bias": ("bn", "bias"), "bn.running_mean": ("bn", "mean"),
                 "bn.running_var": ("bn", "var")}


def param_shapes() -> dict:
  """{torch state_dict name: torch shape} of every weight the network needs."""
  return dict(_param_shapes())


@functools.lru_cache(maxsize=1)
def _param_shapes() -> dict:
  abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                            jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))["params"]
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    names = [p.key for p in path]
    torch_leaf = {v: k for k, v in _TORCH_LEAVES.items()}[tuple(names[-2:])]
    shape = leaf.shape if names[-1] != "kernel" else (leaf.shape[3], leaf.shape[2],
                                                       leaf.shape[0], leaf.shape[1])
    shapes[".".join(names[:-2] + [torch_leaf])] = tuple(shape)
  return shapes


def load_params(path: str) -> dict:
  """The Flax params of FIDInceptionV3 from the .npz described in the module docstring.

  Raises:
    FileNotFoundError: no such file.
    ValueError: a weight missing or of the wrong shape (named in the message).
  """
  with np.load(path) as f:
    arrays = {k: np.asarray(f[k], np.float32) for k in f.files}
  params: dict = {}
  missing, wrong = [], []
  for name, shape in param_shapes().items():
    if name not in arrays:
      missing.append(name)
      continue
    a = arrays[name]
    if a.shape != shape:
      wrong.append(f"{name} {a.shape} (expected {shape})")
      continue
    parts = name.split(".")
    module, leaf = parts[:-2], _TORCH_LEAVES[".".join(parts[-2:])]
    if leaf[1] == "kernel":
      a = np.transpose(a, (2, 3, 1, 0))  # torch OIHW -> Flax HWIO
    node = params
    for p in module + [leaf[0]]:
      node = node.setdefault(p, {})
    node[leaf[1]] = a
  if missing or wrong:
    raise ValueError(
        f"{path} is not pytorch-fid's Inception-v3 as .npz (vqjax/perceptual/inception.py): "
        + (f"{len(missing)} missing, e.g. {missing[:3]}; " if missing else "")
        + (f"wrong shapes: {wrong[:3]}" if wrong else ""))
  return params


def inception_features(params: dict, x: jax.Array) -> jax.Array:
  """[B, 2048] pool3 features of images x [B, H, W, 3] in [-1, 1]."""
  return FIDInceptionV3().apply({"params": params}, x)
