"""Gradient estimators through the (non-differentiable) code look-up.

Both take the encoder output z [..., D] and its code q [..., D] and return a
value equal to q whose gradient flows to z only (q gets none from here: a
learned codebook is trained by its own codebook loss):

  'ste'       straight-through: backward is the identity, dq/dz = I.
  'rotation'  the rotation trick (Fifty et al. 2024, "Restructuring Vector
              Quantization with the Rotation Trick", Eq. 3-4): backward through
              the rotation-and-rescale that carries z onto q, treated as a
              constant: dq/dz = lambda R with lambda = |q| / |z| and
              R = I - 2 r r^T + 2 q_hat z_hat^T, r = (z_hat + q_hat) / |z_hat + q_hat|.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GRADIENT_ESTIMATORS = ("ste", "rotation")


def check_estimator(estimator: str, key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError unless `estimator` is one of GRADIENT_ESTIMATORS (`straight_through`
  runs it; `config_lib.validate` too, `key` naming the config key)."""
  if estimator not in GRADIENT_ESTIMATORS:
    raise ValueError(f"{key('gradient_estimator')}={estimator!r}; choose one of "
                     f"{GRADIENT_ESTIMATORS}.")

# |z_hat + q_hat| below this (float32 noise of two unit vectors): z and q are
# treated as antiparallel and r = 0 (see `rotation_trick`).
ANTIPARALLEL_TOL = 1e-5
# |z| below this: the rotation is undefined; the gradient falls back to the identity.
TINY_NORM = 1e-12


def _rotation_parts(z: jax.Array, q: jax.Array):
  """(lambda [..., 1], r, z_hat, q_hat [..., D], degenerate [..., 1]) in float32."""
  z = z.astype(jnp.float32)
  q = q.astype(jnp.float32)
  z_norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
  q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
  degenerate = z_norm <= TINY_NORM
  z_hat = z / jnp.where(degenerate, 1.0, z_norm)
  q_hat = q / jnp.where(q_norm <= TINY_NORM, 1.0, q_norm)
  s = z_hat + q_hat
  s_norm = jnp.linalg.norm(s, axis=-1, keepdims=True)
  r = jnp.where(s_norm < ANTIPARALLEL_TOL, 0.0, s / jnp.maximum(s_norm, ANTIPARALLEL_TOL))
  lam = q_norm / jnp.where(degenerate, 1.0, z_norm)
  return lam, r, z_hat, q_hat, degenerate


def rotation_matrix(z: jax.Array, q: jax.Array) -> jax.Array:
  """lambda R of `rotation_trick` as explicit matrices: z, q [..., D] -> [..., D, D].

  For inspection and tests; `rotation_trick` never forms it (O(D) per vector).
  """
  lam, r, z_hat, q_hat, degenerate = _rotation_parts(z, q)
  eye = jnp.eye(z.shape[-1], dtype=jnp.float32)
  outer = lambda a, b: a[..., :, None] * b[..., None, :]
  m = lam[..., None] * (eye - 2.0 * outer(r, r) + 2.0 * outer(q_hat, z_hat))
  return jnp.where(degenerate[..., None], eye, m)


@jax.custom_jvp
def rotation_trick(z: jax.Array, q: jax.Array) -> jax.Array:
  """The rotation trick: forward q exactly, backward through sg(lambda R) z.

  Args:
    z: [..., D] encoder outputs.
    q: [..., D] their codes (same shape).

  Returns:
    q (same values, dtype of q). The Jacobian w.r.t. z is lambda R per vector
    (module docstring); none flows to q. Special cases: z parallel to q gives
    R = I (only the rescale lambda remains); z antiparallel to q (|z_hat +
    q_hat| < ANTIPARALLEL_TOL) gives r = 0, i.e. R = I - 2 z_hat z_hat^T, the
    reflection that maps z_hat onto q_hat = -z_hat and keeps the orthogonal
    complement; z = 0 falls back to the straight-through identity.
  """
  if z.shape != q.shape:
    raise ValueError(f"rotation_trick: z {z.shape} and q {q.shape} must have the same shape.")
  return q


@rotation_trick.defjvp
def _rotation_trick_jvp(primals, tangents):
  z, q = primals
  z_dot, _ = tangents  # q gets no gradient from the estimator
  lam, r, z_hat, q_hat, degenerate = _rotation_parts(z, q)
  z_dot = z_dot.astype(jnp.float32)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rotated = lam * (z_dot - 2.0 * r * dot(r, z_dot) + 2.0 * q_hat * dot(z_hat, z_dot))
  out_dot = jnp.where(degenerate, z_dot, rotated)
  return rotation_trick(z, q), out_dot.astype(q.dtype)


def straight_through(z: jax.Array, q: jax.Array, estimator: str = "ste") -> jax.Array:
  """Value q, gradient to z by `estimator` ('ste' | 'rotation'); z, q [..., D]."""
  if estimator == "ste":  # z - sg(z) is exactly 0: the value is q itself
    return jax.lax.stop_gradient(q) + (z - jax.lax.stop_gradient(z)).astype(q.dtype)
  check_estimator(estimator)
  return rotation_trick(z, q)
