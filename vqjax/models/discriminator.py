"""PatchGAN discriminator (pix2pix's / VQGAN's NLayerDiscriminator) in Flax.

  conv4x4/2 (C) -> LeakyReLU(0.2)
  `num_layers - 1` times: conv4x4/2 (C * min(2^n, 8)) -> norm -> LeakyReLU(0.2)
  conv4x4/1 (C * min(2^num_layers, 8)) -> norm -> LeakyReLU(0.2)
  conv4x4/1 (1): one logit per patch, [B, h, w, 1]

All convolutions pad by 1, as PyTorch's `Conv2d(k=4, p=1)`; the stride-2 ones
are blocks.DownConv (the same function as the strided convolution, with a
gradient XLA:CPU computes fast). An input of side S gives logits of side
S / 2^num_layers - 2 (`logits_size`); VQGAN's default (3 layers, C = 64) maps
256x256 images to 30x30 patches.

Departure from VQGAN: its normalisation is BatchNorm, whose batch statistics
make the train step impure (a mutable collection) and depend on how the batch
is split over devices. Here `norm` is 'group' (GroupNorm with gcd(32, width)
groups, statistics per image) or 'none', so the discriminator is a pure
per-image function and N devices train exactly what one device trains.
Weights are initialised as pix2pix's `weights_init`: convolutions N(0, 0.02),
biases 0 (GroupNorm scale 1, bias 0). As in pix2pix, a convolution followed by a
normalisation has no bias (the normalisation would cancel it: its gradient is
rounding noise, which Adam's normalised step would turn into steps of the
learning rate, different on every device count).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vqjax.models.blocks import DownConv

NORMS = ("group", "none")
INIT_STD = 0.02


def logits_size(image_size: int, num_layers: int) -> int:
  """Side of the logit map for square inputs of side `image_size`."""
  size = image_size
  for _ in range(num_layers):
    size //= 2
  return size - 2  # two 4x4 stride-1 convolutions with padding 1: -1 each


class PatchDiscriminator(nn.Module):
  """Images [B, H, W, 3] in [-1, 1] -> logits [B, h, w, 1] float32 (`logits_size`)."""

  channels: int = 64
  num_layers: int = 3
  norm: str = "group"

  def _norm(self, x: jax.Array, name: str) -> jax.Array:
    if self.norm == "none":
      return x
    if self.norm != "group":
      raise ValueError(f"discriminator norm {self.norm!r}; use one of {NORMS}.")
    return nn.GroupNorm(num_groups=math.gcd(32, x.shape[-1]), name=name)(x)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.normal(INIT_STD)
    x = jnp.asarray(x, jnp.float32)
    x = nn.leaky_relu(DownConv(self.channels, kernel_init=init, name="conv_0")(x), 0.2)
    bias = self.norm == "none"
    for n in range(1, self.num_layers):
      width = self.channels * min(2 ** n, 8)
      x = DownConv(width, kernel_init=init, use_bias=bias, name=f"conv_{n}")(x)
      x = nn.leaky_relu(self._norm(x, f"norm_{n}"), 0.2)
    width = self.channels * min(2 ** self.num_layers, 8)
    x = nn.Conv(width, (4, 4), padding=((1, 1), (1, 1)), kernel_init=init, use_bias=bias,
                name=f"conv_{self.num_layers}")(x)
    x = nn.leaky_relu(self._norm(x, f"norm_{self.num_layers}"), 0.2)
    return nn.Conv(1, (4, 4), padding=((1, 1), (1, 1)), kernel_init=init, name="logits")(x)


def create_discriminator(loss_config: ml_collections.ConfigDict) -> PatchDiscriminator:
  """The discriminator of config.loss (disc_channels, disc_layers, disc_norm)."""
  return PatchDiscriminator(channels=int(loss_config.disc_channels),
                            num_layers=int(loss_config.disc_layers),
                            norm=str(loss_config.disc_norm))
