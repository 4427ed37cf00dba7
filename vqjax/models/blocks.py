"""VQ-VAE-2 encoder/decoder blocks (rosinality's layout, NHWC).

Convolutions mirror PyTorch's `Conv2d(k=4, s=2, p=1)` and
`ConvTranspose2d(k=4, s=2, p=1)`, so every stride-2 stage halves or doubles H
and W exactly. `dtype` is the computation dtype of the convolutions (float32 or
bfloat16); parameters stay float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


class DownConv(nn.Module):
  """PyTorch's Conv2d(k=4, s=2, p=1): [B, H, W, C] -> [B, H/2, W/2, features] (H, W even).

  Computed as space-to-depth (2x2 blocks -> 4C channels) followed by a 2x2
  stride-1 convolution: the same parameters (kernel [4, 4, C, features], bias)
  and result as the strided convolution, but a gradient without dilated
  convolutions, which XLA:CPU computes very slowly.
  """

  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      raise ValueError(f"DownConv needs even height and width, got {h}x{w}.")
    kernel = self.param("kernel", self.kernel_init,
                        (4, 4, c, self.features), jnp.float32)
    # kernel[2t + p] acts on block t, phase p: regroup to [2, 2, (2, 2, C), F].
    k = kernel.reshape(2, 2, 2, 2, c, self.features).transpose(0, 2, 1, 3, 4, 5)
    k = k.reshape(2, 2, 4 * c, self.features).astype(self.dtype)
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
    hb, wb = (h + 2) // 2, (w + 2) // 2
    blocks = padded.reshape(b, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(b, hb, wb, 4 * c)
    y = jax.lax.conv_general_dilated(
        blocks, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if not self.use_bias:
      return y
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y + bias.astype(self.dtype)


def down_conv(features: int, dtype: Dtype, name: str | None = None) -> DownConv:
  """4x4 stride-2 convolution: [B, H, W, C] -> [B, H/2, W/2, features]."""
  return DownConv(features, dtype, name=name)


# Kernel taps of a 4x4 / stride-2 / padding-1 transposed convolution that reach
# output phase 0 (even rows) and phase 1 (odd rows), for the input offsets
# (-1, 0) and (0, +1) respectively (PyTorch ConvTranspose2d semantics).
_PHASE_TAPS = ((3, 1), (2, 0))


class UpConv(nn.Module):
  """PyTorch's ConvTranspose2d(k=4, s=2, p=1): [B, H, W, C] -> [B, 2H, 2W, features].

  Sub-pixel form: output pixel (2i + a, 2j + c) depends on the 2x2 input block
  starting at (i - 1 + a, j - 1 + c) of the input padded by 1, through the
  kernel taps of phase (a, c). All four phases are computed by one 2x2
  convolution of the padded input with 4 * features outputs (the phases'
  kernels side by side), at (H + 1) x (W + 1) positions; phase (a, c) is that
  output shifted by (a, c), and the four are interleaved into the 2x output.
  Same parameters (kernel [4, 4, C, features], bias) and the same result as the
  transposed convolution, without its dilated-input formulation, which XLA:CPU
  differentiates very slowly, and with one convolution instead of one per
  phase (4 * features outputs use the machine better than features, most of
  all for the 3-channel image layer). kernel[ky, kx, c, f] is PyTorch's
  weight[c, f, ky, kx].
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    b, h, w, c = x.shape
    f = self.features
    phases = [kernel[np.array(taps_y)][:, np.array(taps_x)]          # [2, 2, C, F]
              for taps_y in _PHASE_TAPS for taps_x in _PHASE_TAPS]
    k = jnp.stack(phases, axis=3).reshape(2, 2, c, 4 * f).astype(self.dtype)
    padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = jax.lax.conv_general_dilated(
        padded, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y.reshape(b, h + 1, w + 1, 2, 2, f)                          # [..., a, c, F]
    rows = [jnp.stack([y[:, a:a + h, cc:cc + w, a, cc] for cc in range(2)], axis=3)
            for a in range(2)]                                       # [B, H, W, 2 (c), F]
    out = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, f)
    return out + bias.astype(self.dtype)


def up_conv(features: int, dtype: Dtype, name: str | None = None) -> UpConv:
  """4x4 stride-2 transposed convolution: [B, H, W, C] -> [B, 2H, 2W, features]."""
  return UpConv(features, dtype, name=name)


class ResBlock(nn.Module):
  """x + conv1x1(relu(conv3x3(relu(x)))); hidden width `res_channels`."""

  res_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(x)
    h = nn.Conv(self.res_channels, (3, 3), padding=1, dtype=self.dtype)(h)
    h = nn.relu(h)
    h = nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype)(h)
    return x + h


class Encoder(nn.Module):
  """Strided convs + residual blocks + ReLU.

  stride 4: conv4x4/2 (C/2) -> ReLU -> conv4x4/2 (C) -> ReLU -> conv3x3 (C);
  stride 2: conv4x4/2 (C/2) -> ReLU -> conv3x3 (C);
  then `num_res_blocks` ResBlocks and a final ReLU. [B, H, W, *] ->
  [B, H/stride, W/stride, C].
  """

  channels: int
  res_channels: int
  num_res_blocks: int = 2
  stride: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.channels
    if self.stride == 4:
      x = nn.relu(down_conv(c // 2, self.dtype)(x))
      x = nn.relu(down_conv(c, self.dtype)(x))
    elif self.stride == 2:
      x = nn.relu(down_conv(c // 2, self.dtype)(x))
    else:
      raise ValueError(f"Encoder stride must be 2 or 4, got {self.stride}.")
    x = nn.Conv(c, (3, 3), padding=1, dtype=self.dtype)(x)
    for _ in range(self.num_res_blocks):
      x = ResBlock(self.res_channels, self.dtype)(x)
    return nn.relu(x)


class Decoder(nn.Module):
  """conv3x3 (C) -> residual blocks -> ReLU -> transposed convs.

  stride 4: convT4x4/2 (C/2) -> ReLU -> convT4x4/2 (out);
  stride 2: convT4x4/2 (out). [B, h, w, *] -> [B, h*stride, w*stride, out].
  """

  channels: int
  res_channels: int
  out_channels: int
  num_res_blocks: int = 2
  stride: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype)(x)
    for _ in range(self.num_res_blocks):
      x = ResBlock(self.res_channels, self.dtype)(x)
    x = nn.relu(x)
    if self.stride == 4:
      x = nn.relu(up_conv(self.channels // 2, self.dtype)(x))
      x = up_conv(self.out_channels, self.dtype)(x)
    elif self.stride == 2:
      x = up_conv(self.out_channels, self.dtype)(x)
    else:
      raise ValueError(f"Decoder stride must be 2 or 4, got {self.stride}.")
    return x
