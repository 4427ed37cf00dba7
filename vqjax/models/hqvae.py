"""HQ-VAE top-down networks (Takida et al., TMLR 2024), for either quantizer family.

  InjectedTopDownVAE  L layers at increasing resolution, one quantizer each:
                      SQ-VAE-2 with StochasticQuantizer, the VQ-VAE-2 baseline
                      (Eq. 7) with VectorQuantizerEMA.
  ResidualTopDownVAE  L layers at one resolution quantizing residuals: RSQ-VAE
                      (Eq. 14) with StochasticQuantizer, the RQ-VAE baseline
                      (Eq. 15) with VectorQuantizerEMA.

Both take images [B, H, W, C] and return (x_hat [B, H, W, C] float32, aux) with
aux = {'losses': {'layer_l/<term>': []}, 'levels': {'layer_l': quantizer aux}}
(`vqvae.level_losses`); layer_1 is the top (coarsest / first) layer. The
`quantizer` factory gets num_codes=K_l and code_dim per layer, e.g.
functools.partial(StochasticQuantizer, log_var_init=...) or
functools.partial(VectorQuantizerEMA, beta=0.25). The reconstruction term
(`vqjax.losses`) is the train step's business.

Networks (paper Fig. 1/7; Fig. 7's layouts are not in our text, so [I] marks
choices made here). Bottom-up: `stem_downsamples` 4x4 stride-2 convs, then
`num_pools` times [num_res_blocks ResBlocks (bottleneck c_mid = 0.5: vqjax's
ResBlock with width/2 hidden channels) + 2x2 average pool] and a last group of
ResBlocks; the features after each group are H^r (paper App. F: CIFAR-10 is one
stem conv + one pool, 32 -> 16 -> 8, i.e. w = 8, 16 as App. F.1.1 says; Table
5's (4^2, 8^2) needs num_pools=2). Injected layer l reads H^l of the l-th
coarsest resolution: layer 1 encodes H^1; layer l >= 2 encodes
concat(upsampled state, H^l) [I: conv3x3 -> ResBlock -> ReLU -> conv1x1 to
code_dim]; the top-down state (width channels) is nearest-upsampled (as VDVAE)
and each layer adds conv1x1(Z_l) and one ResBlock [I: the notes' "state +
Z_l" with learned projections]. The decoder reads the final state: conv3x3,
ResBlocks, ReLU, then 4x4 stride-2 transposed convs back to the input size.
With decoder_variance=True the model also holds the learned decoder
log-variance params['decoder_log_var'] (`losses.gaussian_nll`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax import losses as losses_lib
from vqjax.models.blocks import ResBlock, down_conv, up_conv
from vqjax.models.vqvae import CodesModel, level_losses
from vqjax.quantizers.stochastic import Codebook, StochasticQuantizer

Dtype = Any


def is_stochastic(quantizer: Callable[..., nn.Module]) -> bool:
  """True if the factory (a class or functools.partial) builds a StochasticQuantizer."""
  cls = getattr(quantizer, "func", quantizer)
  return isinstance(cls, type) and issubclass(cls, StochasticQuantizer)


def layer_names(num_layers: int) -> tuple[str, ...]:
  return tuple(f"layer_{l}" for l in range(1, num_layers + 1))


def upsample_nearest(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], each value repeated 2x2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def check_injected_layers(num_layers: int, num_pools: int,
                          key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError unless L injected layers get a resolution each (num_pools >= L - 1).

  InjectedTopDownVAE runs it; `config_lib.validate` too, `key` naming config keys.
  """
  if num_layers < 1 or num_pools < num_layers - 1:
    raise ValueError(f"{key('num_pools')}={num_pools}: {num_layers} injected layers need "
                     f"num_pools >= {num_layers - 1} (one resolution per layer).")


def check_shared_codebook(num_codes: Sequence[int],
                          key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError unless a codebook shared by every residual layer can be (one K).

  `residual_quantize` runs it; `config_lib.validate` too, `key` naming config keys.
  """
  if len(set(num_codes)) != 1:
    raise ValueError(f"{key('shared_codebook')}=True needs one K for every layer; got "
                     f"{key('num_codes')}={tuple(num_codes)}.")


def _check_image(x: jax.Array, downsamples: int) -> None:
  factor = 2 ** downsamples
  if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
    raise ValueError(f"images must be [B, H, W, C] with H and W divisible by {factor} "
                     f"(stem_downsamples + num_pools halvings); got {x.shape}.")


def _declare_decoder_variance(module: nn.Module) -> None:
  module.param(losses_lib.DECODER_LOG_VAR,
               nn.initializers.constant(losses_lib.DECODER_LOG_VAR_INIT), (), jnp.float32)


class BottomUp(nn.Module):
  """x [B, H, W, *] -> features [H^R (finest), ..., H^1 (coarsest)], width channels.

  H^R is at H / 2^stem_downsamples, each following one at half the resolution.
  """

  width: int
  num_res_blocks: int = 2
  stem_downsamples: int = 1
  num_pools: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    h = x.astype(self.dtype)
    for i in range(self.stem_downsamples):
      h = down_conv(self.width, self.dtype, name=f"stem_{i}")(h)
      h = nn.relu(h) if i < self.stem_downsamples - 1 else h
    feats = []
    for r in range(self.num_pools + 1):
      for j in range(self.num_res_blocks):
        h = ResBlock(self.width // 2, self.dtype, name=f"res_{r}_{j}")(h)
      feats.append(h)
      if r < self.num_pools:
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    return feats


class EncodeBlock(nn.Module):
  """conv3x3 (width) -> ResBlock -> ReLU -> conv1x1 (code_dim): features -> Z^_l."""

  width: int
  code_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Conv(self.width, (3, 3), padding=1, dtype=self.dtype)(x)
    h = nn.relu(ResBlock(self.width // 2, self.dtype)(h))
    return nn.Conv(self.code_dim, (1, 1), dtype=self.dtype)(h)


class UpDecoder(nn.Module):
  """conv3x3 -> ResBlocks -> ReLU -> `num_upsamples` convT4x4/2 (ReLU between).

  [B, h, w, *] -> [B, h * 2^num_upsamples, w * 2^num_upsamples, out_channels].
  """

  width: int
  out_channels: int
  num_res_blocks: int = 2
  num_upsamples: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Conv(self.width, (3, 3), padding=1, dtype=self.dtype)(x.astype(self.dtype))
    for _ in range(self.num_res_blocks):
      h = ResBlock(self.width // 2, self.dtype)(h)
    h = nn.relu(h)
    if not self.num_upsamples:
      return nn.Conv(self.out_channels, (1, 1), dtype=self.dtype)(h)
    for i in range(self.num_upsamples):
      last = i == self.num_upsamples - 1
      h = up_conv(self.out_channels if last else self.width, self.dtype)(h)
      h = h if last else nn.relu(h)
    return h


class _TopDownVAE(CodesModel):
  """The fields both HQ-VAE networks share (quantizer factory, layer sizes,
  widths, bottom-up geometry, decoder variance, dtype)."""

  quantizer: Callable[..., nn.Module]
  num_codes: Sequence[int] = (512, 512)
  code_dim: int = 64
  width: int = 64
  num_res_blocks: int = 2
  stem_downsamples: int = 1
  num_pools: int = 1
  decoder_variance: bool = False
  dtype: Dtype = jnp.float32

  @property
  def level_names(self) -> tuple[str, ...]:
    return layer_names(len(self.num_codes))


class InjectedTopDownVAE(_TopDownVAE):
  """SQ-VAE-2 / VQ-VAE-2: layer l quantizes at 2^(l-1) times the top resolution.

  num_codes: K_l per layer, top (coarsest) first; its length is L. Needs
  num_pools >= L - 1; the top layer sits at H / 2^(stem_downsamples +
  num_pools), the last at 2^(L-1) times that.
  """



  @nn.compact
  def _run(self, x, codes, *, train: bool, step=None, stage: str = "all",
           out_channels: int = 3):
    """x -> (x_hat, aux) ('all'), x -> codes ('encode'), or codes -> x_hat (x None).

    The top-down path reads only the quantized layers, so it decodes from codes.
    """
    num_layers, dt = len(self.num_codes), self.dtype
    check_injected_layers(num_layers, self.num_pools)
    if x is not None:
      _check_image(x, self.stem_downsamples + self.num_pools)
      out_channels = x.shape[-1]
      feats = BottomUp(self.width, self.num_res_blocks, self.stem_downsamples,
                       self.num_pools, dt, name="bottom_up")(x)[::-1]   # coarsest first
    if self.decoder_variance:
      _declare_decoder_variance(self)
    levels, state = {}, None
    for l, (name, k) in enumerate(zip(self.level_names, self.num_codes)):
      if state is not None:
        state = upsample_nearest(state)
      quantizer = self.quantizer(num_codes=k, code_dim=self.code_dim, name=name)
      if codes is None:
        inp = feats[l] if state is None else jnp.concatenate([state, feats[l]], axis=-1)
        z_hat = EncodeBlock(self.width, self.code_dim, dt, name=f"encode_{l + 1}")(inp)
        z, levels[name] = quantizer(z_hat, train=train, step=step)
      else:
        z = levels[name] = quantizer.decode(codes[name]).astype(dt)
        if stage == "quantized":
          continue
      inject = nn.Conv(self.width, (1, 1), dtype=dt, name=f"inject_{l + 1}")(z.astype(dt))
      state = inject if state is None else state + inject
      state = ResBlock(self.width // 2, dt, name=f"top_down_{l + 1}")(state)
    if stage == "encode":
      return {name: aux["indices"] for name, aux in levels.items()}
    if stage == "quantized":
      return levels
    ups = self.stem_downsamples + self.num_pools - (num_layers - 1)
    x_hat = UpDecoder(self.width, out_channels, self.num_res_blocks, ups, dt,
                      name="decoder")(state).astype(jnp.float32)
    return x_hat if codes is not None else (x_hat, level_losses(levels))


def residual_quantize(h: jax.Array | None, *, quantizer: Callable[..., nn.Module],
                      num_codes: Sequence[int], code_dim: int, shared_codebook: bool,
                      train: bool, step=None, codes: dict | None = None,
                      dtype: Dtype = jnp.float32) -> tuple[jax.Array, dict]:
  """Quantizes h [B, ..., code_dim] as a sum of L codes; -> (sum [h's shape], levels).

  Call from a compact method: the quantizers `layer_1..layer_L` belong to the
  caller. Stochastic family (RSQ-VAE): layer l quantizes the residual
  R_{l-1} = h - sum_{l'<l} Z_l' (soft codes in training) with its own s_l^2;
  every layer has its negative entropy and the last layer carries Eq. 14's
  dequant = |h - sum_l Z_l|^2 / (2 sum_l s_l^2) per image; shared_codebook:
  one `Codebook` 'shared_codebook', per-layer s_l^2. Deterministic family
  (RQ-VAE, e.g. EMA): layer l quantizes h - sg(sum_{l'<l} Z_l'), so its
  commitment is Eq. 15's beta |h - sg(sum_{l'<=l} Z_l')|^2; the sum is passed
  on with one straight-through estimator; shared_codebook: one quantizer
  'shared_quantizer' called L times (for EMA: L sequential updates per step).
  codes {layer_l: int32 [B, ...]} (h None): the sum of the layers' decoded
  codes in `dtype`, as the forward pass in evaluation gives it, and
  {layer_l: decoded code}.
  """
  num_layers = len(num_codes)
  if num_layers < 1:
    raise ValueError("residual quantization needs at least one layer (num_codes).")
  if shared_codebook:
    check_shared_codebook(num_codes)
  names = layer_names(num_layers)
  levels = {}
  stochastic = is_stochastic(quantizer)
  if stochastic:
    book = Codebook(num_codes[0], code_dim, name="shared_codebook") if shared_codebook else None
    qs = [quantizer(num_codes=k, code_dim=code_dim, dequant_loss=False,
                    shared_codebook=book, name=name) for name, k in zip(names, num_codes)]
  elif shared_codebook:
    qs = [quantizer(num_codes=num_codes[0], code_dim=code_dim, name="shared_quantizer")] * num_layers
  else:
    qs = [quantizer(num_codes=k, code_dim=code_dim, name=name) for name, k in zip(names, num_codes)]
  if codes is not None:  # levels: {layer: its decoded code}
    total = None
    for name, q in zip(names, qs):
      z = levels[name] = q.decode(codes[name]).astype(dtype)
      total = z if total is None else total + z
    return total, levels
  total = jnp.zeros_like(h)
  if stochastic:
    residual = h
    for name, q in zip(names, qs):
      z, levels[name] = q(residual, train=train, step=step)
      residual, total = residual - z, total + z
    s2_sum = sum(q.variance() for q in qs)
    err = jnp.sum((h.astype(jnp.float32) - total.astype(jnp.float32)) ** 2)
    levels[names[-1]]["losses"]["dequant"] = 0.5 * err / s2_sum / h.shape[0]
    return total, levels
  for name, q in zip(names, qs):
    z, levels[name] = q(h - total, train=train, step=step)
    total = total + jax.lax.stop_gradient(z)
  # Value: the sum exactly (h - sg(h) is 0); gradient: the identity to h.
  return total + (h - jax.lax.stop_gradient(h)), levels


class ResidualLayers(nn.Module):
  """`residual_quantize` as a module: (h [B, ..., D], train, step) -> (sum, levels)."""

  quantizer: Callable[..., nn.Module]
  num_codes: Sequence[int] = (32, 32)
  code_dim: int = 64
  shared_codebook: bool = False

  @nn.compact
  def __call__(self, h: jax.Array, *, train: bool, step: jax.Array | None = None):
    return residual_quantize(h, quantizer=self.quantizer, num_codes=self.num_codes,
                             code_dim=self.code_dim, shared_codebook=self.shared_codebook,
                             train=train, step=step)


class ResidualTopDownVAE(_TopDownVAE):
  """RSQ-VAE / RQ-VAE: L = len(num_codes) residual layers at H / 2^(stem + pools).

  Bottom-up as InjectedTopDownVAE (its coarsest feature), EncodeBlock to
  code_dim, `residual_quantize`, UpDecoder of the summed codes.
  """

  num_codes: Sequence[int] = (32, 32)
  shared_codebook: bool = False


  @nn.compact
  def _run(self, x, codes, *, train: bool, step=None, stage: str = "all",
           out_channels: int = 3):
    """x -> (x_hat, aux) ('all'), x -> codes ('encode'), codes -> x_hat (x
    None), or codes -> {layer: decoded code} ('quantized')."""
    dt = self.dtype
    if self.decoder_variance:
      _declare_decoder_variance(self)
    h = None
    if x is not None:
      _check_image(x, self.stem_downsamples + self.num_pools)
      out_channels = x.shape[-1]
      feat = BottomUp(self.width, self.num_res_blocks, self.stem_downsamples,
                      self.num_pools, dt, name="bottom_up")(x)[-1]
      h = EncodeBlock(self.width, self.code_dim, dt, name="encode")(feat)
    z, levels = residual_quantize(h, quantizer=self.quantizer, num_codes=self.num_codes,
                                  code_dim=self.code_dim,
                                  shared_codebook=self.shared_codebook,
                                  train=train, step=step, codes=codes, dtype=dt)
    if stage in ("encode", "quantized"):
      return levels if stage == "quantized" else {n: a["indices"] for n, a in levels.items()}
    x_hat = UpDecoder(self.width, out_channels, self.num_res_blocks,
                      self.stem_downsamples + self.num_pools, dt,
                      name="decoder")(z).astype(jnp.float32)
    return x_hat if codes is not None else (x_hat, level_losses(levels))


def latent_shapes(model: nn.Module, image_size: int) -> dict[str, tuple[int, int]]:
  """{level name: (h, w)} of a model's code maps for square images."""
  top = image_size // 2 ** (model.stem_downsamples + model.num_pools)
  if isinstance(model, InjectedTopDownVAE):
    return {name: (top * 2**l, top * 2**l) for l, name in enumerate(model.level_names)}
  return {name: (top, top) for name in model.level_names}

