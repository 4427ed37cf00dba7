"""Reconstruction objectives, pure functions of images x, x_hat [B, H, W, C].

  mse           mean squared error over all values (vqjax's VQ-VAE loss)
  arelbo        (D/2) log(SSE per image): the Gaussian NLL with sigma^2 at its
                batch maximum-likelihood value SSE/D, up to a constant (SQ-VAE
                and HQ-VAE's default; the released code's `flags.arelbo`)
  gaussian_nll  SSE/(2 sigma^2) + (D/2) log sigma^2 with a learned scalar
                log sigma^2 (the released code's alternative)
  none          0: no reconstruction term; the model's aux['losses'] are the
                whole objective (SEMANTICIST's diffusion loss)

D = H * W * C (values per image); SSE per image = sum over the batch of
|x_hat - x|^2 divided by B. arelbo takes the log of this batch mean, not the
mean of per-image logs, so its gradient is grad(SSE) / (2 SSE / D).
All in float32; scalars [].

The learned log sigma^2 is a model parameter: the model declares
`self.param(DECODER_LOG_VAR, nn.initializers.constant(DECODER_LOG_VAR_INIT), ())`
at its top level (the HQ-VAE models do so with `decoder_variance=True`), so it
sits in `params['decoder_log_var']`, is trained by the optimizer with the rest,
and the train step passes it to `gaussian_nll`.

Adversarial terms (config.loss; docs/PERCEPTUAL.md), on the discriminator's
logits [B, h, w, 1] (a PatchGAN's map; means over every entry):

  hinge           D: (mean relu(1 - real) + mean relu(1 + fake)) / 2,
                  G: -mean fake (VQGAN's `hinge_d_loss` and generator loss)
  non_saturating  D: (mean softplus(-real) + mean softplus(fake)) / 2 (the
                  logistic loss, -log sigmoid(real) - log(1 - sigmoid(fake))),
                  G: mean softplus(-fake) = -log sigmoid(fake) (Goodfellow's
                  non-saturating generator loss)

`adaptive_weight` is VQGAN's Eq. 7 on the gradients of the two generator terms
at the decoder's last layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GAN_LOSSES = ("hinge", "non_saturating")
ADAPTIVE_EPS = 1e-4         # VQGAN: ||grad L_rec|| / (||grad L_G|| + 1e-4)
ADAPTIVE_MAX = 1e4          # ... clamped to [0, 1e4]
RECONSTRUCTION_LOSSES = ("mse", "arelbo", "gaussian_nll", "none")
DECODER_LOG_VAR = "decoder_log_var"
DECODER_LOG_VAR_INIT = math.log(0.1)   # the released SQ-VAE code's init
MIN_SSE = 1e-30                        # keeps log finite for a perfect reconstruction


def _check(x: jax.Array, x_hat: jax.Array) -> None:
  if x.shape != x_hat.shape or x.ndim != 4:
    raise ValueError(f"reconstruction losses need x and x_hat of one shape "
                     f"[B, H, W, C]; got {x.shape} and {x_hat.shape}.")


def values_per_image(x: jax.Array) -> int:
  """D = H * W * C of images [B, H, W, C]."""
  return math.prod(x.shape[1:])


def sse_per_image(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """Sum of squared errors over the batch divided by B -> [] float32."""
  _check(x, x_hat)
  diff = x_hat.astype(jnp.float32) - x.astype(jnp.float32)
  return jnp.sum(diff ** 2) / x.shape[0]


def mse(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """Mean of |x_hat - x|^2 over every value of the batch -> [] float32."""
  return sse_per_image(x, x_hat) / values_per_image(x)


def arelbo(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """(D/2) log(SSE per image) -> [] float32 (nats per image, constants dropped)."""
  sse = sse_per_image(x, x_hat)
  return 0.5 * values_per_image(x) * jnp.log(jnp.maximum(sse, MIN_SSE))


def gaussian_nll(x: jax.Array, x_hat: jax.Array, log_var: jax.Array) -> jax.Array:
  """SSE/(2 exp(log_var)) + (D/2) log_var per image -> [] float32.

  log_var: [] the learned log sigma^2 (params[DECODER_LOG_VAR]).
  """
  log_var = jnp.asarray(log_var, jnp.float32)
  if log_var.shape:
    raise ValueError(f"log_var must be a scalar, got shape {log_var.shape}.")
  sse = sse_per_image(x, x_hat)
  return 0.5 * sse * jnp.exp(-log_var) + 0.5 * values_per_image(x) * log_var


def reconstruction_loss(kind: str, x: jax.Array, x_hat: jax.Array,
                        log_var: jax.Array | None = None) -> jax.Array:
  """The objective `kind` (one of RECONSTRUCTION_LOSSES) -> [] float32."""
  if kind == "mse":
    return mse(x, x_hat)
  if kind == "arelbo":
    return arelbo(x, x_hat)
  if kind == "none":
    _check(x, x_hat)
    return jnp.zeros((), jnp.float32)
  if kind == "gaussian_nll":
    if log_var is None:
      raise ValueError("gaussian_nll needs log_var (params['decoder_log_var']; build "
                       "the model with decoder_variance=True).")
    return gaussian_nll(x, x_hat, log_var)
  raise ValueError(f"reconstruction loss {kind!r}; choose one of {RECONSTRUCTION_LOSSES}.")


# -- adversarial terms -----------------------------------------------------------


def _check_gan(kind: str) -> None:
  if kind not in GAN_LOSSES:
    raise ValueError(f"GAN loss {kind!r}; choose one of {GAN_LOSSES}.")


def discriminator_loss(kind: str, logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """The discriminator's loss on real and reconstructed images' logits -> [] float32."""
  _check_gan(kind)
  real, fake = logits_real.astype(jnp.float32), logits_fake.astype(jnp.float32)
  if kind == "hinge":
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))
  return 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))


def generator_loss(kind: str, logits_fake: jax.Array) -> jax.Array:
  """The generator's (autoencoder's) adversarial loss on the reconstructions' logits -> []."""
  _check_gan(kind)
  fake = logits_fake.astype(jnp.float32)
  if kind == "hinge":
    return -jnp.mean(fake)
  return jnp.mean(jax.nn.softplus(-fake))


def adaptive_weight(rec_grad: jax.Array, gan_grad: jax.Array) -> jax.Array:
  """VQGAN's Eq. 7: ||rec_grad|| / (||gan_grad|| + 1e-4), clipped to [0, 1e4] -> [].

  rec_grad, gan_grad: the gradients of the reconstruction (+ perceptual) loss
  and of the generator's adversarial loss with respect to the decoder's last
  layer's kernel. The result carries no gradient (stop_gradient).
  """
  num = jnp.sqrt(jnp.sum(jnp.square(rec_grad.astype(jnp.float32))))
  den = jnp.sqrt(jnp.sum(jnp.square(gan_grad.astype(jnp.float32)))) + ADAPTIVE_EPS
  return jax.lax.stop_gradient(jnp.clip(num / den, 0.0, ADAPTIVE_MAX))
