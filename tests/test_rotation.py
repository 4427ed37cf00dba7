"""Rotation trick: forward is q; Jacobian against a NumPy plane-rotation derivation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.gradients import rotation_matrix, rotation_trick, straight_through
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer


def np_rotate_rescale(z, q):
  """|q|/|z| times the rotation carrying z/|z| onto q/|q| inside their common
  plane (identity on its orthogonal complement), float64.

  Built from an orthonormal basis (u1, u2) of the plane, not from the paper's
  Householder form. Parallel: R = I. Antiparallel (vqjax's convention): the
  reflection I - 2 u1 u1^T. z = 0: the identity (straight-through).
  """
  z, q = np.asarray(z, np.float64), np.asarray(q, np.float64)
  d = len(z)
  if np.linalg.norm(z) == 0:
    return np.eye(d)
  lam = np.linalg.norm(q) / np.linalg.norm(z)
  u1, q_hat = z / np.linalg.norm(z), q / np.linalg.norm(q)
  cos = float(u1 @ q_hat)
  perp = q_hat - cos * u1
  sin = np.linalg.norm(perp)
  if sin < 1e-5:  # (anti)parallel up to float32 noise of the test inputs
    rot = np.eye(d) if cos > 0 else np.eye(d) - 2 * np.outer(u1, u1)
    return lam * rot
  u2 = perp / sin
  rot = (np.eye(d) + (cos - 1) * (np.outer(u1, u1) + np.outer(u2, u2))
         + sin * (np.outer(u2, u1) - np.outer(u1, u2)))
  return lam * rot


def pairs():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 5)).astype(np.float32)
  q = rng.normal(size=(6, 5)).astype(np.float32)
  q[3] = 3.0 * z[3]     # parallel: pure rescale
  q[4] = -2.5 * z[4]    # antiparallel
  z[5] = 0.0            # degenerate: identity
  return z, q


def test_numpy_reference_is_a_rotation_onto_q():
  z, q = pairs()
  for zi, qi in zip(z[:5], q[:5]):
    m = np_rotate_rescale(zi, qi)
    np.testing.assert_allclose(m @ zi, qi, atol=1e-5)
    rot = m * np.linalg.norm(np.float64(zi)) / np.linalg.norm(np.float64(qi))
    np.testing.assert_allclose(rot.T @ rot, np.eye(5), atol=1e-12)


def test_forward_is_exactly_q():
  z, q = pairs()
  out = jax.jit(rotation_trick)(jnp.asarray(z), jnp.asarray(q))
  np.testing.assert_array_equal(np.asarray(out), q)
  out = straight_through(jnp.asarray(z), jnp.asarray(q), "rotation")
  np.testing.assert_array_equal(np.asarray(out), q)


@pytest.mark.parametrize("jac", [jax.jacrev, jax.jacfwd])
def test_jacobian_matches_numpy_including_parallel_and_antiparallel(jac):
  z, q = pairs()
  for i, (zi, qi) in enumerate(zip(z, q)):
    want = np_rotate_rescale(zi, qi)
    got = jac(rotation_trick)(jnp.asarray(zi), jnp.asarray(qi))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, err_msg=f"pair {i}")
    np.testing.assert_allclose(np.asarray(rotation_matrix(zi, qi)), want, atol=2e-5)
  # q gets no gradient from the estimator.
  dq = jax.jacrev(rotation_trick, argnums=1)(jnp.asarray(z[0]), jnp.asarray(q[0]))
  np.testing.assert_array_equal(np.asarray(dq), 0.0)


def test_batched_gradient_is_transpose_times_cotangent():
  z, q = pairs()
  w = np.random.default_rng(1).normal(size=z.shape).astype(np.float32)
  loss = lambda zz: jnp.sum(jnp.asarray(w) * rotation_trick(zz, jnp.asarray(q)))
  got = jax.grad(loss)(jnp.asarray(z))
  want = np.stack([np_rotate_rescale(zi, qi).T @ wi for zi, qi, wi in zip(z, q, w)])
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_unknown_estimator_raises():
  with pytest.raises(ValueError, match="gradient_estimator='rot'"):
    straight_through(jnp.ones(2), jnp.ones(2), "rot")
  vq = VectorQuantizerEMA(num_codes=4, code_dim=2, codebook_init="uniform",
                          gradient_estimator="rot")
  with pytest.raises(ValueError, match="choose one of"):
    vq.init(jax.random.key(0), jnp.ones((3, 2)), train=False)


def _grad_check(make, variables_fn, check_ste=True):
  """z_q equal for both estimators; rotation gradient = NumPy (lambda R)^T w per row."""
  rng = np.random.default_rng(2)
  z = rng.normal(size=(2, 3, 4)).astype(np.float32)
  w = rng.normal(size=z.shape).astype(np.float32)
  out = {}
  for est in ("ste", "rotation"):
    q = make(est)
    variables = variables_fn(q, z)

    def loss(zz):
      z_q, _ = q.apply(variables, zz, train=False)
      return jnp.sum(jnp.asarray(w) * z_q), z_q

    out[est] = jax.grad(loss, has_aux=True)(jnp.asarray(z))
  # Same codes (STE's z + sg(q - z) is q up to rounding; the rotation trick's is exact).
  np.testing.assert_allclose(np.asarray(out["ste"][1]), np.asarray(out["rotation"][1]),
                             atol=1e-6)
  if check_ste:
    np.testing.assert_array_equal(np.asarray(out["ste"][0]), w)
  z_q = np.asarray(out["rotation"][1]).reshape(-1, 4)
  zz, ww = z.reshape(-1, 4), w.reshape(-1, 4)
  return zz, z_q, ww, np.asarray(out["rotation"][0]).reshape(-1, 4)


def test_ema_quantizer_rotation_option():
  codebook = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)

  def variables(q, z):
    v = q.init(jax.random.key(0), jnp.asarray(z), train=False)
    cb = dict(v["codebook"], embedding=jnp.asarray(codebook))
    return {"codebook": cb}

  make = functools.partial(VectorQuantizerEMA, num_codes=8, code_dim=4, codebook_init="uniform")
  zz, z_q, ww, got = _grad_check(lambda est: make(gradient_estimator=est), variables)
  want = np.stack([np_rotate_rescale(a, b).T @ c for a, b, c in zip(zz, z_q, ww)])
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("l2", [False, True])
def test_learned_quantizer_rotation_option(l2):
  def variables(q, z):
    del q, z
    emb = np.random.default_rng(4).normal(size=(8, 4)).astype(np.float32)
    return {"params": {"embedding": jnp.asarray(emb)}}

  make = lambda est: LearnedCodebookQuantizer(num_codes=8, code_dim=4, l2_normalize=l2,
                                              gradient_estimator=est)
  zz, z_q, ww, got = _grad_check(make, variables, check_ste=not l2)
  if not l2:
    want = np.stack([np_rotate_rescale(a, b).T @ c for a, b, c in zip(zz, z_q, ww)])
  else:
    # z_q is the normalised code; the rotation acts on the normalised z, whose
    # Jacobian w.r.t. z is (I - n n^T) / |z|.
    want = []
    for a, b, c in zip(zz, z_q, ww):
      n = a / np.linalg.norm(a)
      dn = (np.eye(4) - np.outer(n, n)) / np.linalg.norm(a)
      want.append(dn.T @ np_rotate_rescale(n, b).T @ c)
    want = np.stack(want)
  np.testing.assert_allclose(got, want, atol=2e-5)
