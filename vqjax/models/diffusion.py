"""The diffusion decoder of SEMANTICIST: noise schedule, DiT, DDIM sampler, guidance.

Gaussian diffusion on pixels in [-1, 1] (the notes, section 3 "Tiny pixel
version": no VAE latent at this scale), the released code's objective without
the learned variance (section 7):

  schedule   T = num_timesteps (1000) steps, linear betas beta_start -> beta_end
             (1e-4 -> 0.02; DDPM, Ho et al. 2020, Sec. 4, and ADM's 'linear'),
             abar_t = prod_{s <= t} (1 - beta_s) for t = 0 .. T-1 (0-based)
  forward    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps ~ N(0, I),
             t ~ uniform on {0, .., T-1}
  objective  prediction='eps' (the released code's): E |eps_theta(x_t, t, tokens) -
             eps|^2; prediction='v' (Salimans & Ho 2022, Sec. 4): the network
             predicts v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, E |v_theta - v|^2.
             Means over pixels and images; fixed variance (no variational-bound
             term). In x_0 terms eps weighs the error by the SNR abar/(1 - abar),
             v by 1/(1 - abar): v keeps the noisiest steps, where only the tokens
             tell the image, in the objective (docs/SEMANTICIST.md, "v, not eps")
  sampler    DDIM with eta = 0 (Song et al. 2021, Eq. 12), S = sample_steps steps
             t_S > .. > t_1 = round(linspace(T - 1, 0, S)), the prediction as eps
             (v: eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v):
               x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1]
               (clip_x0; eps is then recomputed from the clipped x0),
               x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps,
             abar_prev = abar of the next timestep, 1 after t_1; x_T ~ N(0, I) from
             a fixed seed, so a reconstruction is a deterministic function of the
             tokens and the seed
  guidance   eps = eps_c + (w - 1) (eps_c - eps_u) = eps_u + w (eps_c - eps_u)
             (classifier-free guidance; w = 1 is exactly eps_c, and the
             unconditional pass is then skipped)

The DiT (Peebles & Xie 2023) reads the noisy image as patch tokens with fixed 2D
sin-cos positions and the concept tokens in-context, as the released code does
(notes, section 3): Dense(token_dim -> width) plus a learned position embedding
(a harmless deviation, notes 6.3), appended after the image tokens, full
attention, their outputs dropped; adaLN-Zero on the timestep only; a zero-
initialised final layer, so eps_theta starts at 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models.transformer import (AdaLNBlock, LN_EPS, init_normal, modulate, patchify,
                                      sincos_2d, timestep_embedding, unpatchify)

Dtype = Any
TIME_FREQ_DIM = 256  # DiT's frequency embedding size


# -- the schedule and one sampler step (pure functions) ---------------------------


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """beta_t, t = 0 .. T-1: float64 [T] evenly spaced from beta_start to beta_end."""
  return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
  """abar_t = prod_{s <= t} (1 - beta_s): float64 [T], decreasing from 1 - beta_0."""
  return np.cumprod(1.0 - np.asarray(betas, np.float64))


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """The sampler's timesteps, descending: int32 [S] = round(linspace(T-1, 0, S))."""
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"sample_steps={num_steps} must be in [1, {num_timesteps}].")
  return np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int32)


def _per_image(a: jax.Array, ndim: int) -> jax.Array:
  """[B] or [] -> broadcastable to images of rank ndim."""
  a = jnp.asarray(a, jnp.float32)
  return a.reshape(a.shape + (1,) * (ndim - a.ndim)) if a.ndim else a


def q_sample(x0: jax.Array, abar_t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; abar_t [B] or []."""
  a = _per_image(abar_t, x0.ndim)
  return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def v_target(x0: jax.Array, noise: jax.Array, abar_t: jax.Array) -> jax.Array:
  """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0."""
  a = _per_image(abar_t, x0.ndim)
  return jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * x0


def eps_from_v(x_t: jax.Array, v: jax.Array, abar_t: jax.Array) -> jax.Array:
  """The eps that x_t and v imply: sqrt(1 - abar_t) x_t + sqrt(abar_t) v."""
  a = _per_image(abar_t, x_t.ndim)
  return jnp.sqrt(1.0 - a) * x_t + jnp.sqrt(a) * v


def predict_x0(x_t: jax.Array, eps: jax.Array, abar_t: jax.Array) -> jax.Array:
  """The x_0 that x_t and eps imply: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
  a = _per_image(abar_t, x_t.ndim)
  return (x_t - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def ddim_step(x_t: jax.Array, eps: jax.Array, abar_t, abar_prev, *,
              clip_x0: bool = True) -> tuple[jax.Array, jax.Array]:
  """One deterministic DDIM step (eta = 0) -> (x_prev, x0) (module docstring)."""
  a_t, a_prev = _per_image(abar_t, x_t.ndim), _per_image(abar_prev, x_t.ndim)
  x0 = predict_x0(x_t, eps, a_t)
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x_t - jnp.sqrt(a_t) * x0) / jnp.sqrt(1.0 - a_t)
  return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps, x0


def guided(eps_cond: jax.Array, eps_uncond: jax.Array, scale) -> jax.Array:
  """Classifier-free guidance eps_c + (w - 1)(eps_c - eps_u); w = 1 gives eps_c exactly."""
  return eps_cond + (scale - 1.0) * (eps_cond - eps_uncond)


# -- the network ------------------------------------------------------------------


class DiT(nn.Module):
  """eps_theta: x_t [B, H, W, C], t [B] int, tokens [B, T, D] -> eps [B, H, W, C]."""

  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_t, t, tokens):
    b, h, w, c = x_t.shape
    p, width = self.patch_size, self.width
    x = nn.Dense(width, dtype=self.dtype, name="patch_embed")(patchify(x_t, p))
    n = x.shape[1]
    x = x + sincos_2d(h // p, width)[None]
    temb = timestep_embedding(t, TIME_FREQ_DIM)
    temb = nn.Dense(width, dtype=self.dtype, kernel_init=init_normal, name="t_embed_1")(temb)
    cond = nn.Dense(width, dtype=self.dtype, kernel_init=init_normal,
                    name="t_embed_2")(nn.silu(temb))
    ctx = nn.Dense(width, dtype=self.dtype, name="token_embed")(tokens.astype(self.dtype))
    ctx = ctx + self.param("token_pos_embed", init_normal, (1, tokens.shape[1], width))
    x = jnp.concatenate([x, ctx.astype(x.dtype)], axis=1)
    for i in range(self.depth):
      x = AdaLNBlock(self.num_heads, self.mlp_ratio, self.dtype, name=f"block_{i}")(x, cond)
    shift, scale = jnp.split(nn.Dense(2 * width, dtype=self.dtype,
                                      kernel_init=nn.initializers.zeros,
                                      name="final_modulation")(nn.silu(cond)), 2, axis=-1)
    x = modulate(nn.LayerNorm(epsilon=LN_EPS, use_bias=False, use_scale=False,
                              dtype=self.dtype)(x[:, :n]), shift, scale)
    x = nn.Dense(p * p * c, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                 name="final")(x)
    return unpatchify(x.astype(jnp.float32), p, h, w)


class DiffusionDecoder(nn.Module):
  """tokens [B, T, D] -> images: the diffusion loss in training, DDIM sampling otherwise.

  Randomness in training (timesteps, noise) comes from the `sample` PRNG stream,
  drawn with the global batch shape (so N devices draw what 1 does); sampling
  draws x_T from jax.random.key(seed), one [H, W, C] array shared by every image
  of the batch (a reconstruction does not depend on the batch it is in).
  """

  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: int = 4
  channels: int = 3
  num_timesteps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02
  sample_steps: int = 25
  clip_x0: bool = True
  prediction: str = "eps"  # 'eps' | 'v'
  dtype: Dtype = jnp.float32

  def setup(self):
    self.dit = DiT(self.patch_size, self.width, self.depth, self.num_heads,
                   self.mlp_ratio, self.dtype)

  @property
  def abar(self) -> np.ndarray:
    return alphas_cumprod(linear_betas(self.num_timesteps, self.beta_start, self.beta_end))

  def __call__(self, x_t, t, tokens):
    """The network's prediction (eps or v) for x_t, t, tokens: [B, H, W, C] float32."""
    return self.dit(x_t, t, tokens)

  def predicted_eps(self, x_t, t, tokens, abar_t):
    """eps_theta: the network's output, or the eps that its v implies."""
    out = self.dit(x_t, t, tokens)
    return out if self.prediction == "eps" else eps_from_v(x_t, out, abar_t)

  def training_loss(self, x0: jax.Array, tokens: jax.Array):
    """(the prediction's MSE [], the one-step x0 estimate [B, H, W, C] clipped to [-1, 1])."""
    key_t, key_eps = jax.random.split(self.make_rng("sample"))
    t = jax.random.randint(key_t, (x0.shape[0],), 0, self.num_timesteps)
    noise = jax.random.normal(key_eps, x0.shape, jnp.float32)
    abar_t = jnp.asarray(self.abar, jnp.float32)[t]
    x_t = q_sample(x0, abar_t, noise)
    out = self.dit(x_t, t, tokens)
    target = noise if self.prediction == "eps" else v_target(x0, noise, abar_t)
    loss = jnp.mean((out - target) ** 2)
    eps = out if self.prediction == "eps" else eps_from_v(x_t, out, abar_t)
    return loss, jnp.clip(predict_x0(x_t, eps, abar_t), -1.0, 1.0)

  def sample(self, cond: jax.Array, uncond: jax.Array | None, seed, guidance_scale: float):
    """DDIM from a seeded x_T: cond / uncond tokens [B, T, D] -> x_0 [B, H, W, C].

    uncond None (or guidance_scale == 1): the conditioned prediction only.
    seed: int or [] int32 (traced).
    """
    b, s = cond.shape[0], self.image_size
    noise = jax.random.normal(jax.random.key(seed), (1, s, s, self.channels), jnp.float32)
    x = jnp.broadcast_to(noise, (b, s, s, self.channels))
    steps = ddim_timesteps(self.num_timesteps, self.sample_steps)
    abar = self.abar
    abar_prev = np.concatenate([abar[steps[1:]], [1.0]])
    xs = (jnp.asarray(steps), jnp.asarray(abar[steps], jnp.float32),
          jnp.asarray(abar_prev, jnp.float32))
    guide = uncond is not None and guidance_scale != 1.0
    tokens = jnp.concatenate([cond, uncond], 0) if guide else cond

    def body(mdl, x, step):
      t, a_t, a_prev = step
      x_in = jnp.concatenate([x, x], 0) if guide else x
      eps = mdl.predicted_eps(x_in, jnp.full((x_in.shape[0],), t), tokens, a_t)
      if guide:
        eps = guided(eps[:b], eps[b:], guidance_scale)
      return ddim_step(x, eps, a_t, a_prev, clip_x0=self.clip_x0)[0], None

    scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
    return scan(self, x, xs)[0]
