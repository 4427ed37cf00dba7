"""SEMANTICIST (Wen et al. 2025, "Principal Components" Enable a New Language of
Images): a 1D tokenizer with a causal ViT encoder, nested classifier-free
guidance and a diffusion decoder (diffusion.py).

Encoder (notes, section 1): the sequence [cls; N patches; T concept queries]
(patch embedding p x p, learned queries, one learned position embedding over all
1 + N + T positions) through pre-LN ViT blocks with one boolean mask in every
layer (`concept_mask`): cls and patches attend to cls and patches only; concept
token i attends to cls, all patches and concept tokens j <= i. The final
LayerNorm's last T outputs, Dense(width -> D), are the tokens [B, T, D]; with
normalize_tokens each token is standardised over its D channels (eps 1e-6; the
released `norm_slots`). Then either continuous (quantizer None, the paper's
choice) or quantized by any quantizer of vqjax.quantizers (level `tokens`,
codes int32 [B, T, *code_shape]).

Nested classifier-free guidance (notes, section 2): in training each image draws
a cutoff k (`sample_cutoff`): k = 0 (every token null) with probability
null_prob, else k uniform on {1, .., T}; tokens i > k (1-based) are replaced by
the learned per-position null tokens [T, D] (init N(0, 0.02)), `apply_cutoff`.
Why this distribution: uniform k is the released code's NestedSampler, under
which token i is present in (T - i + 1) / T of the images, so the earliest
tokens are trained to carry the most; the all-null share trains the
unconditional branch that guidance uses at sampling, which the released code
stops training once nesting starts (notes, pitfall 2). Before
nest_start_step every image keeps all T tokens (k = T, the all-null share kept):
the released code's plain-CFG warm-up (notes, pitfall 1). At sampling the first
k tokens are kept (`num_tokens`, default T) and the unconditional input is all
null; guidance as in diffusion.py.

Training returns the diffusion loss in aux['losses']['diffusion'] (the whole
objective with the quantizer's terms: the train step runs with
train.reconstruction_loss='none') and, as x_hat, the one-step x0 estimate at the
drawn timestep. Evaluation returns the DDIM reconstruction from all T tokens
with the fixed seed `sample_seed`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.diffusion import DiffusionDecoder
from vqjax.models.transformer import Block, LN_EPS, init_normal
from vqjax.models.vqvae import CodesModel, level_losses

Dtype = Any
LEVEL = "tokens"
TOKEN_EPS = 1e-6


def concept_mask(num_image: int, num_tokens: int) -> np.ndarray:
  """bool [L, L], L = num_image + num_tokens (num_image = 1 + N: cls and patches).

  Row q may attend to column k: image rows see image columns only; concept row
  i sees every image column and concept columns j <= i.
  """
  idx = np.arange(num_image + num_tokens)
  image = idx < num_image
  causal = idx[None, :] <= idx[:, None]
  return image[None, :] | (~image[:, None] & ~image[None, :] & causal)


def standardize(z: jax.Array, eps: float = TOKEN_EPS) -> jax.Array:
  """Each token [..., D] to zero mean and unit variance over its D channels."""
  z = z.astype(jnp.float32)
  mean = jnp.mean(z, -1, keepdims=True)
  return (z - mean) / jnp.sqrt(jnp.var(z, -1, keepdims=True) + eps)


def sample_cutoff(key: jax.Array, batch: int, num_tokens: int, null_prob: float,
                  nested: jax.Array | bool = True) -> jax.Array:
  """k int32 [batch] in {0, .., T}: 0 w.p. null_prob, else uniform on {1, .., T}
  (T where `nested` is False: before nest_start_step)."""
  key_k, key_null = jax.random.split(key)
  k = jax.random.randint(key_k, (batch,), 1, num_tokens + 1)
  k = jnp.where(nested, k, num_tokens)
  return jnp.where(jax.random.bernoulli(key_null, null_prob, (batch,)), 0, k)


def apply_cutoff(tokens: jax.Array, k: jax.Array, null: jax.Array) -> jax.Array:
  """tokens [B, T, D] with positions i >= k (0-based) replaced by null [T, D]; k [B] or []."""
  keep = jnp.arange(tokens.shape[1])[None, :] < jnp.reshape(k, (-1, 1))
  return jnp.where(keep[..., None], tokens, null[None].astype(tokens.dtype))


class CausalViTEncoder(nn.Module):
  """images [B, H, W, 3] -> tokens [B, T, D] (module docstring; not standardised)."""

  patch_size: int
  width: int
  depth: int
  num_heads: int
  num_tokens: int
  token_dim: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    p, w, t = self.patch_size, self.width, self.num_tokens
    h = nn.Conv(w, (p, p), strides=(p, p), dtype=self.dtype, name="patch_embed")(x)
    b = h.shape[0]
    h = h.reshape(b, -1, w)
    cls = self.param("cls", init_normal, (1, 1, w))
    queries = self.param("concept_queries", init_normal, (1, t, w))
    seq = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, w)).astype(h.dtype), h,
                           jnp.broadcast_to(queries, (b, t, w)).astype(h.dtype)], axis=1)
    seq = seq + self.param("pos_embed", init_normal, (1, seq.shape[1], w))
    mask = concept_mask(1 + h.shape[1], t)
    for i in range(self.depth):
      seq = Block(self.num_heads, self.mlp_ratio, self.dtype, name=f"block_{i}")(seq, mask)
    seq = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(seq)
    return nn.Dense(self.token_dim, dtype=self.dtype, name="to_tokens")(seq[:, -t:])


class Semanticist(CodesModel):
  """The tokenizer: x [B, S, S, 3] in [-1, 1] -> tokens [B, T, D] -> x_hat.

  Entry points (CodesModel): __call__(x, train, step) -> (x_hat, aux);
  encode_codes(x) -> {'tokens': codes int32 [B, T, *code_shape] or, continuous,
  float32 [B, T, D]}; decode_codes(codes, num_tokens=None, seed=None) -> x_hat
  float32 [B, S, S, 3] (unclipped) from the first num_tokens tokens (default T)
  by DDIM from jax.random.key(seed) (default sample_seed);
  decode_quantized(codes) -> {'tokens': the quantizer's decode [..., D]}.
  decode_codes(encode_codes(x)) is the x_hat of __call__(x, train=False).
  """

  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  num_tokens: int
  code_dim: int
  quantizer: Callable[..., nn.Module] | None = None  # None: continuous tokens
  normalize_tokens: bool = True
  mlp_ratio: int = 4
  decoder_patch_size: int = 4
  decoder_width: int = 128
  decoder_depth: int = 4
  decoder_heads: int = 4
  num_timesteps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02
  sample_steps: int = 25
  clip_x0: bool = True
  prediction: str = "eps"  # 'eps' | 'v' (diffusion.py)
  guidance_scale: float = 1.0
  sample_seed: int = 0
  null_prob: float = 0.1
  nest_start_step: int = 0
  dtype: Dtype = jnp.float32

  def decode_codes(self, codes: dict, num_tokens=None, seed=None) -> jax.Array:
    return self._run(None, codes, train=False, num_tokens=num_tokens, seed=seed)

  @nn.compact
  def _run(self, x, codes, *, train: bool, step=None, stage: str = "all",
           out_channels: int = 3, num_tokens=None, seed=None):
    """x -> (x_hat, aux) ('all'), x -> {'tokens': codes} ('encode'), codes ->
    x_hat (x None), codes -> {'tokens': quantized values} ('quantized')."""
    del out_channels  # RGB only
    quantizer = self.quantizer(name="quantizer") if self.quantizer is not None else None
    if stage == "quantized":
      return {LEVEL: quantizer.decode(codes[LEVEL])}
    null = self.param("null_tokens", init_normal, (self.num_tokens, self.code_dim))
    decoder = DiffusionDecoder(
        self.image_size, self.decoder_patch_size, self.decoder_width, self.decoder_depth,
        self.decoder_heads, self.mlp_ratio, 3, self.num_timesteps, self.beta_start,
        self.beta_end, self.sample_steps, self.clip_x0, self.prediction, self.dtype,
        name="decoder")
    q_aux = None
    if codes is None:
      tokens = CausalViTEncoder(self.patch_size, self.width, self.depth, self.num_heads,
                                self.num_tokens, self.code_dim, self.mlp_ratio, self.dtype,
                                name="encoder")(x)
      if self.normalize_tokens:
        tokens = standardize(tokens)
      if quantizer is not None:
        tokens, q_aux = quantizer(tokens.astype(jnp.float32), train=train, step=step)
      if stage == "encode":
        return {LEVEL: q_aux["indices"] if q_aux is not None else tokens.astype(jnp.float32)}
    elif quantizer is not None:
      tokens = quantizer.decode(codes[LEVEL])
    else:
      tokens = jnp.asarray(codes[LEVEL], jnp.float32)
    tokens = tokens.astype(jnp.float32)
    if train:
      nested = True if step is None else step >= self.nest_start_step
      k = sample_cutoff(self.make_rng("sample"), tokens.shape[0], self.num_tokens,
                        self.null_prob, nested)
      loss, x_hat = decoder.training_loss(x, apply_cutoff(tokens, k, null))
      aux = level_losses({LEVEL: q_aux} if q_aux is not None else {})
      aux["losses"]["diffusion"] = loss
      return x_hat, aux
    k = self.num_tokens if num_tokens is None else num_tokens
    cond = apply_cutoff(tokens, k, null)
    uncond = jnp.broadcast_to(null[None], tokens.shape).astype(tokens.dtype)
    x_hat = decoder.sample(cond, uncond, self.sample_seed if seed is None else seed,
                           self.guidance_scale)
    if codes is not None:
      return x_hat
    return x_hat, level_losses({LEVEL: q_aux} if q_aux is not None else {})
