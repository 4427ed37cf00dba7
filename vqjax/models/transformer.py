"""Transformer pieces of the SEMANTICIST model (semanticist.py, diffusion.py).

Pre-LayerNorm blocks as in ViT / DiT (LayerNorm eps 1e-6, MLP ratio 4, GELU),
token sequences [B, L, W] of width W:

  Block       x + Attn(LN(x), mask) ; x + MLP(LN(x))            (the ViT encoder)
  AdaLNBlock  DiT's adaLN-Zero block: shift, scale and gate of both sublayers
              regressed from a conditioning vector c [B, W] by a zero-initialised
              Dense, so every block starts as the identity (Peebles & Xie 2023,
              Sec. 3.2; the notes' section 3)
  sincos_2d   fixed 2D sine-cosine position embedding of a g x g grid [g*g, W]
  timestep_embedding  sinusoidal embedding of diffusion timesteps [B] -> [B, dim]

Attention masks are boolean [L, L] (True = the query row may attend to the key
column), broadcast over batch and heads as flax's `dot_product_attention` reads them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
LN_EPS = 1e-6
init_normal = nn.initializers.truncated_normal(0.02)  # the released ViT's init


class Mlp(nn.Module):
  """Dense(hidden) -> GELU -> Dense(width of the input)."""
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, kernel_init=init_normal)(x))
    return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=init_normal)(h)


def attention(num_heads: int, dtype: Dtype, name: str | None = None):
  return nn.MultiHeadDotProductAttention(num_heads=num_heads, dtype=dtype,
                                         kernel_init=init_normal, name=name)


class Block(nn.Module):
  """Pre-LN transformer block: x [B, L, W], mask [L, L] bool or None -> [B, L, W]."""
  num_heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    h = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)(x)
    x = x + attention(self.num_heads, self.dtype)(h, h, mask=mask)
    h = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)(x)
    return x + Mlp(self.mlp_ratio * x.shape[-1], self.dtype)(h)


def modulate(x, shift, scale):
  """x [B, L, W] * (1 + scale [B, W]) + shift [B, W]."""
  return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNBlock(nn.Module):
  """DiT block with adaLN-Zero: x [B, L, W], c [B, W] -> [B, L, W].

  (shift, scale, gate) x 2 = Dense_zero(SiLU(c)); x += gate_a * Attn(mod(LN(x)));
  x += gate_m * MLP(mod(LN(x))); LayerNorms without affine parameters.
  """
  num_heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, c):
    w = x.shape[-1]
    mod = nn.Dense(6 * w, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                   name="adaLN_modulation")(nn.silu(c))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    norm = lambda name: nn.LayerNorm(epsilon=LN_EPS, use_bias=False, use_scale=False,
                                     dtype=self.dtype, name=name)
    h = modulate(norm("norm1")(x), shift_a, scale_a)
    x = x + gate_a[:, None] * attention(self.num_heads, self.dtype)(h, h)
    h = modulate(norm("norm2")(x), shift_m, scale_m)
    return x + gate_m[:, None] * Mlp(self.mlp_ratio * w, self.dtype)(h)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """[P] positions -> [P, dim] (dim even): sin of the first half, cos of the second."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = positions.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(grid: int, dim: int) -> np.ndarray:
  """Fixed 2D sin-cos embedding of a grid x grid patch map, row-major: float32
  [grid * grid, dim] (dim divisible by 4; half for the row, half for the column,
  as DiT's / MAE's get_2d_sincos_pos_embed)."""
  if dim % 4:
    raise ValueError(f"sincos_2d needs a width divisible by 4; got {dim}.")
  rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64),
                           np.arange(grid, dtype=np.float64), indexing="ij")
  return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)],
                        axis=1).astype(np.float32)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Diffusion timesteps t [B] (int or float) -> [B, dim] float32 (dim even):
  [cos(t w_i), sin(t w_i)], w_i = max_period^(-i / (dim/2)) (DiT's TimestepEmbedder)."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C] (row-major patches)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """Inverse of patchify: [B, (h/p)(w/p), p*p*C] -> [B, h, w, C]."""
  b, _, d = x.shape
  c = d // (p * p)
  x = x.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)
