"""Single-level and two-level (VQ-VAE-2 style) VQ-VAEs of the paper.

Both models take images [B, H, W, 3] (H, W divisible by 4, resp. 8) and return
`(x_hat, aux)`: x_hat [B, H, W, 3] and aux = {'losses': {'<level>/<term>':
scalar}, 'levels': {level_name: quantizer aux}}, level names `codes` (single)
or `top`/`bottom`. The training loss is the reconstruction term plus every
entry of aux['losses'].
The quantizers are built by the `quantizer` factory (e.g. a
`functools.partial(VectorQuantizerEMA, num_codes=..., code_dim=...)`), which
keeps the models independent of the quantizer family.

For using a trained model, `model.apply(variables, x, method='encode_codes')`
gives the codes {level: int32 [B, h, w, *code_shape]} (the quantizer's
`encode`; code_shape () for VQ, (G,) grouped, (L,) residual) and
`model.apply(variables, codes, method='decode_codes')` decodes them
(`decode_codes(encode_codes(x))` is the x_hat of `__call__(x, train=False)`).

Following the paper (Eq. 1), a 1x1 convolution projects the encoder output
(C channels) to the code dimension D, and the decoder reads the D-dimensional
codes; this reproduces the paper's parameter counts (Table 1).

factorized_codes=True is the authors' released code instead: the 1x1
convolution keeps C channels, a linear layer projects them to D for the code
lookup and another projects the codes back to C (vector-quantize-pytorch's
`codebook_dim`), so the decoder always reads C channels.

num_groups > 1 (grouped quantizers, MGVQ): the 1x1 convolutions before the
quantizer are `GroupedProjection`s, so group j of the codes is computed from
channel group j of the encoder output only and the groups stay independent up
to the quantizer (the decoder mixes them). C and D must divide by num_groups;
factorized_codes is not combined with groups.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models.blocks import Decoder, Encoder, up_conv
from vqjax.quantizers.grouped import GroupedProjection

Dtype = Any

# The decoder's last layer (the one whose output is x_hat) in the params of
# both models: the stride-4 Decoder's second transposed convolution (C/2 -> 3
# channels). VQGAN's adaptive weight compares the gradients at its kernel.
LAST_LAYER = ("decoder", "UpConv_1", "kernel")


def last_layer_kernel(params) -> jax.Array:
  """params[LAST_LAYER]: the decoder's last kernel [4, 4, C/2, 3] (of params or
  of a gradient tree with their structure)."""
  node = params
  for key in LAST_LAYER:
    node = node[key]
  return node


def level_losses(levels: dict) -> dict:
  """The model aux of per-level quantizer auxes: every level's loss terms as
  '<level>/<term>' in aux['losses'], the auxes under aux['levels']."""
  losses = {f"{name}/{term}": value for name, aux in levels.items()
            for term, value in aux["losses"].items()}
  return dict(losses=losses, levels=levels)


def pre_quant(features: int, num_groups: int, dtype: Dtype, name: str) -> nn.Module:
  """The 1x1 convolution before a quantizer: plain, or grouped for num_groups > 1."""
  if num_groups > 1:
    return GroupedProjection(features, num_groups, dtype=dtype, name=name)
  return nn.Conv(features, (1, 1), dtype=dtype, name=name)


def quantize(z: jax.Array, *, quantizer, name: str, code_dim: int, factorized: bool,
             dtype: Dtype, train: bool, step=None):
  """Quantizes z [..., width]; returns (codes [..., width], quantizer aux).

  Call from a model's compact __call__: the modules made here belong to it, so
  the quantizer's codebook collection path is the model's `name`.

  factorized=False: width == code_dim and the quantizer `name` acts directly.
  True: Dense(code_dim) `name + '_project_in'`, the quantizer, Dense(width)
  `name + '_project_out'`.
  """
  width = z.shape[-1]
  if factorized:
    z = nn.Dense(code_dim, dtype=dtype, name=f"{name}_project_in")(z)
  codes, aux = quantizer(name=name)(z, train=train, step=step)
  if factorized:
    codes = nn.Dense(width, dtype=dtype, name=f"{name}_project_out")(codes.astype(dtype))
  return codes, aux


def lookup(indices: jax.Array, *, quantizer, name: str, factorized: bool, width: int,
           dtype: Dtype) -> jax.Array:
  """Codes `indices` [..., *code_shape] -> [..., width]: what `quantize` returns for them.

  The quantizer's own `decode` (vqjax.quantizers.base), then, for factorized
  codes, the Dense `name + '_project_out'` that `quantize` made. Call from a
  model's compact method. Indices must be in [0, codebook_size).
  """
  codes = quantizer(name=name).decode(indices).astype(dtype)
  if factorized:
    codes = nn.Dense(width, dtype=dtype, name=f"{name}_project_out")(codes)
  return codes


class CodesModel(nn.Module):
  """The entry points every vqjax model has, all through its one compact `_run`.

  __call__(x, train, step) -> (x_hat, aux); encode_codes(x) -> {level: int32
  [B, h, w, *code_shape]} (frozen codebooks); decode_codes(codes) -> x_hat
  float32 [B, H, W, out_channels] (unclipped); decode_quantized(codes) ->
  {level: the level quantizer's `decode` [..., D]} (no decoder network).
  `decode_codes(encode_codes(x))` is the x_hat of `__call__(x, train=False)`.
  """

  def __call__(self, x: jax.Array, *, train: bool, step: jax.Array | None = None):
    return self._run(x, None, train=train, step=step)

  def encode_codes(self, x: jax.Array) -> dict[str, jax.Array]:
    return self._run(x, None, train=False, stage="encode")

  def decode_codes(self, codes: dict[str, jax.Array], out_channels: int = 3) -> jax.Array:
    return self._run(None, codes, train=False, out_channels=out_channels)

  def decode_quantized(self, codes: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return self._run(None, codes, train=False, stage="quantized")


class SingleLevelVQVAE(CodesModel):
  """x -> Encoder (stride 4, C) -> 1x1 conv (D) -> VQ -> Decoder -> x_hat.

  At 256x256 input the latent map is 64x64xC (the paper: C_s = 160).
  """

  channels: int
  code_dim: int
  quantizer: Callable[..., nn.Module]
  res_channels: int | None = None  # default C / 2
  num_res_blocks: int = 2
  factorized_codes: bool = False
  num_groups: int = 1  # > 1: grouped pre_quant (module docstring)
  dtype: Dtype = jnp.float32


  @nn.compact
  def _run(self, x, codes, *, train: bool, step=None, stage: str = "all",
           out_channels: int = 3):
    """The forward pass: x -> (x_hat, aux) ('all'), x -> indices ('encode'),
    or indices `codes` -> x_hat (x None)."""
    res = self.res_channels or self.channels // 2
    width = self.channels if self.factorized_codes else self.code_dim
    if codes is None:
      h = Encoder(self.channels, res, self.num_res_blocks, 4, self.dtype,
                  name="encoder")(x)
      z_e = pre_quant(width, self.num_groups, self.dtype, "pre_quant")(h)
      z_q, q_aux = quantize(z_e, quantizer=self.quantizer, name="quantizer",
                            code_dim=self.code_dim, factorized=self.factorized_codes,
                            dtype=self.dtype, train=train, step=step)
      if stage == "encode":
        return dict(codes=q_aux["indices"])
      out_channels = x.shape[-1]
    elif stage == "quantized":
      return dict(codes=self.quantizer(name="quantizer").decode(codes["codes"]))
    else:
      z_q = lookup(codes["codes"], quantizer=self.quantizer, name="quantizer",
                   factorized=self.factorized_codes, width=width, dtype=self.dtype)
    x_hat = Decoder(self.channels, res, out_channels, self.num_res_blocks, 4,
                    self.dtype, name="decoder")(z_q.astype(self.dtype))
    if codes is not None:
      return x_hat.astype(jnp.float32)
    return x_hat.astype(jnp.float32), level_losses(dict(codes=q_aux))


class HierarchicalVQVAE(CodesModel):
  """Two-level VQ-VAE: bottom latents at H/4, top latents at H/8, C_h channels.

  conditioned=False (the paper): both levels are quantized independently,
    z_b = conv1x1(enc_b).
  conditioned=True (VQ-VAE-2): the bottom quantizer sees the decoded top,
    z_b = conv1x1(concat(enc_b, dec_t(q_t))).
  The decoder reads concat(convT4x4/2(q_t), q_b) (2D channels; 2C with
  factorized_codes).
  """

  channels: int
  code_dim: int
  quantizer: Callable[..., nn.Module]
  conditioned: bool = False
  res_channels: int | None = None
  num_res_blocks: int = 2
  factorized_codes: bool = False
  num_groups: int = 1
  dtype: Dtype = jnp.float32


  @nn.compact
  def _run(self, x, codes, *, train: bool, step=None, stage: str = "all",
           out_channels: int = 3):
    """The forward pass: x -> (x_hat, aux) ('all'), x -> indices ('encode'),
    or indices `codes` -> x_hat (x None)."""
    c, dt = self.channels, self.dtype
    width = c if self.factorized_codes else self.code_dim
    res = self.res_channels or c // 2
    if codes is None:
      level = lambda z, name: quantize(z, quantizer=self.quantizer, name=name,
                                       code_dim=self.code_dim,
                                       factorized=self.factorized_codes, dtype=dt,
                                       train=train, step=step)
      enc_b = Encoder(c, res, self.num_res_blocks, 4, dt, name="encoder_bottom")(x)
      enc_t = Encoder(c, res, self.num_res_blocks, 2, dt, name="encoder_top")(enc_b)

      z_t = pre_quant(width, self.num_groups, dt, "pre_quant_top")(enc_t)
      q_t, aux_t = level(z_t, "quantizer_top")
      q_t = q_t.astype(dt)

      if self.conditioned:
        dec_t = Decoder(c, res, c, self.num_res_blocks, 2, dt, name="decoder_top")(q_t)
        enc_b = jnp.concatenate([enc_b, dec_t], axis=-1)
      z_b = pre_quant(width, self.num_groups, dt, "pre_quant_bottom")(enc_b)
      q_b, aux_b = level(z_b, "quantizer_bottom")
      if stage == "encode":
        return dict(top=aux_t["indices"], bottom=aux_b["indices"])
      out_channels = x.shape[-1]
    elif stage == "quantized":
      return {level: self.quantizer(name=f"quantizer_{level}").decode(codes[level])
              for level in ("top", "bottom")}
    else:
      look = lambda name: lookup(codes[name.removeprefix("quantizer_")],
                                 quantizer=self.quantizer, name=name,
                                 factorized=self.factorized_codes, width=width, dtype=dt)
      q_t, q_b = look("quantizer_top").astype(dt), look("quantizer_bottom")

    up_t = up_conv(width, dt, name="upsample_top")(q_t)
    x_hat = Decoder(c, res, out_channels, self.num_res_blocks, 4, dt,
                    name="decoder")(jnp.concatenate([up_t, q_b.astype(dt)], -1))
    if codes is not None:
      return x_hat.astype(jnp.float32)
    return x_hat.astype(jnp.float32), level_losses(dict(top=aux_t, bottom=aux_b))
