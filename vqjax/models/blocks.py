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

Dtype = Any


def down_conv(features: int, dtype: Dtype, name: str | None = None) -> nn.Conv:
  """4x4 stride-2 convolution: [B, H, W, C] -> [B, H/2, W/2, features]."""
  return nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                 dtype=dtype, name=name)


def up_conv(features: int, dtype: Dtype, name: str | None = None) -> nn.ConvTranspose:
  """4x4 stride-2 transposed convolution: [B, H, W, C] -> [B, 2H, 2W, features]."""
  # PyTorch padding p=1 with k=4 is lax padding k-1-p=2 on the dilated input.
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2),
                          padding=((2, 2), (2, 2)), dtype=dtype, name=name)


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
