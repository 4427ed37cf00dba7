"""FSQ and LFQ: checked against NumPy re-derivations and hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import capacity
from vqjax.quantizers import fsq, lfq
from vqjax.quantizers.fsq import FiniteScalarQuantizer
from vqjax.quantizers.lfq import LookupFreeQuantizer

LEVEL_SETS = [(8, 5, 5, 5), (2, 3, 4, 7), (6,)]


# -- NumPy references ---------------------------------------------------------------


def np_fsq_bound(z, levels, eps=1e-3):
  """float64 bound: tanh(z + arctanh(offset / half_l)) half_l - offset."""
  lv = np.asarray(levels, np.float64)
  half_l = (lv - 1) * (1 + eps) / 2
  offset = np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0)
  return np.tanh(z + np.arctanh(offset / half_l)) * half_l - offset


def np_fsq_bound_grad(z, levels, eps=1e-3):
  lv = np.asarray(levels, np.float64)
  half_l = (lv - 1) * (1 + eps) / 2
  offset = np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0)
  return half_l * (1 - np.tanh(z + np.arctanh(offset / half_l))**2)


def np_fsq_index(codes, levels):
  """Mixed radix with channel 0 least significant, via np.ravel_multi_index."""
  half = np.asarray(levels) // 2
  digits = np.rint(codes * half + half).astype(np.int64)
  # ravel_multi_index makes the *last* index fastest: reverse the channels.
  return np.ravel_multi_index(tuple(digits[..., ::-1].reshape(-1, len(levels)).T),
                              tuple(levels[::-1])).reshape(codes.shape[:-1])


def np_usage(indices):
  _, counts = np.unique(np.ravel(indices), return_counts=True)
  p = counts / counts.sum()
  return np.exp(-np.sum(p * np.log(p))), len(counts)


def wide_inputs(shape, seed=0):
  """Normal draws at several scales, plus zeros and huge values."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=shape) * rng.choice([0.3, 1.0, 3.0], size=shape)
  z.reshape(-1)[:7] = [0.0, 1e4, -1e4, 40.0, -40.0, 1e-8, -1e-8]
  return z.astype(np.float32)


def fsq_apply(levels, z, **kw):
  q = FiniteScalarQuantizer(levels=levels, **kw)
  return q.apply({}, jnp.asarray(z), train=True)


# -- FSQ ----------------------------------------------------------------------------


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_outputs_on_the_level_grid_and_match_numpy(levels):
  z = wide_inputs((6, 50, len(levels)))
  z_q, aux = fsq_apply(levels, z)
  z_q = np.asarray(z_q)
  half = np.asarray(levels) // 2
  for i, level in enumerate(levels):
    # The L grid values k / (L // 2) (float32 division), k = -(L // 2) .. L - 1 - L // 2
    # (odd L: symmetric; even L: one more negative level). Every one is used.
    grid = np.arange(-(level // 2), level - level // 2, dtype=np.float32) / np.float32(half[i])
    np.testing.assert_array_equal(np.unique(z_q[..., i]), grid, err_msg=f"L={level}")
  # The same codes as the float64 NumPy bound + round, away from rounding boundaries.
  b = np_fsq_bound(z.astype(np.float64), levels)
  safe = np.all(np.abs(b - np.floor(b) - 0.5) > 1e-4, axis=-1)
  want = np.rint(b).astype(np.float32) / half.astype(np.float32)
  np.testing.assert_array_equal(z_q[safe], want[safe])
  assert safe.mean() > 0.9
  assert aux["losses"] == {}


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_bound_is_zero_at_zero_for_odd_and_even_levels(levels):
  b = np.asarray(fsq.bound(jnp.zeros((len(levels),)), levels))
  np.testing.assert_allclose(b, 0.0, atol=1e-6)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_index_round_trip_and_numpy_mixed_radix(levels):
  k = math.prod(levels)
  codes = fsq.indices_to_codes(jnp.arange(k), levels)
  assert len(np.unique(np.asarray(codes), axis=0)) == k
  np.testing.assert_array_equal(np.asarray(fsq.codes_to_indices(codes, levels)), np.arange(k))
  np.testing.assert_array_equal(np_fsq_index(np.asarray(codes), levels), np.arange(k))
  # Hand case: channel 0 least significant.
  if levels == (8, 5, 5, 5):
    digits = np.array([3, 1, 4, 2])
    code = (digits - np.array([4, 2, 2, 2])) / np.array([4, 2, 2, 2])
    assert int(fsq.codes_to_indices(jnp.asarray(code), levels)) == 3 + 1 * 8 + 4 * 40 + 2 * 200
  # Module indices: the index of the module's own codes.
  z = wide_inputs((4, 30, len(levels)), seed=1)
  z_q, aux = fsq_apply(levels, z)
  np.testing.assert_array_equal(np.asarray(aux["indices"]), np_fsq_index(np.asarray(z_q), levels))
  np.testing.assert_array_equal(
      np.asarray(fsq.indices_to_codes(aux["indices"], levels)), np.asarray(z_q))


def test_fsq_gradient_straight_through_and_through_the_bound():
  levels = (8, 5, 5, 5)
  rng = np.random.default_rng(2)
  # Rounding is the identity backward, inside the bounds and beyond.
  x = rng.uniform(-6, 6, size=(20, 4)).astype(np.float32)
  w = rng.normal(size=x.shape).astype(np.float32)
  g = jax.grad(lambda t: jnp.sum(jnp.asarray(w) * fsq.round_ste(t)))(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(g), w)
  # The module: d z_q / d z = bound'(z) / (L // 2), per element.
  z = rng.normal(size=(20, 4)).astype(np.float32) * 2
  g = jax.grad(lambda t: jnp.sum(jnp.asarray(w) * fsq_apply(levels, t)[0]))(jnp.asarray(z))
  want = w * np_fsq_bound_grad(z.astype(np.float64), levels) / (np.asarray(levels) // 2)
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-6)
  # The NumPy derivative itself, by central differences.
  z64, h = z.astype(np.float64), 1e-6
  fd = (np_fsq_bound(z64 + h, levels) - np_fsq_bound(z64 - h, levels)) / (2 * h)
  np.testing.assert_allclose(np_fsq_bound_grad(z64, levels), fd, rtol=1e-6, atol=1e-9)
  # Near zero, the gradient of an odd level count is half_l / (L // 2) ~ 1: the identity.
  g0 = jax.grad(lambda t: jnp.sum(fsq_apply((5, 5), t)[0]))(jnp.zeros((1, 2)))
  np.testing.assert_allclose(np.asarray(g0), 1.001, rtol=1e-6)


def test_fsq_metrics_and_validation():
  levels = (8, 5, 5, 5)
  z = wide_inputs((8, 40, 4), seed=3)
  _, aux = fsq_apply(levels, z)
  ppl, used = np_usage(np.asarray(aux["indices"]))
  np.testing.assert_allclose(float(aux["metrics"]["perplexity"]), ppl, rtol=1e-5)
  assert int(aux["metrics"]["codes_used"]) == used
  assert FiniteScalarQuantizer(levels=levels).codebook_size == 1000
  assert capacity.bits_per_position(FiniteScalarQuantizer(levels=levels)) == pytest.approx(
      math.log2(1000))
  with pytest.raises(ValueError, match="expected len\\(levels\\)=4"):
    fsq_apply(levels, np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="levels=\\(8, 1\\)"):
    fsq_apply((8, 1), np.zeros((2, 2), np.float32))
  with pytest.raises(ValueError, match="eps=0.001 with 2000 levels"):
    fsq_apply((2000,), np.zeros((2, 1), np.float32))


# -- LFQ ----------------------------------------------------------------------------


def lfq_apply(z, **kw):
  q = LookupFreeQuantizer(code_dim=z.shape[-1], **kw)
  return q.apply({}, jnp.asarray(z, jnp.float32), train=True)


def np_lfq_entropies(z, temperature):
  """Brute force over all 2^D codes: softmax(-|z - c|^2 / T), channel 0 = bit 0."""
  z = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
  d = z.shape[1]
  bits = (np.arange(2**d)[:, None] >> np.arange(d)) & 1
  codes = 2.0 * bits - 1.0                                      # [K, D]
  logits = -((z[:, None, :] - codes[None]) ** 2).sum(-1) / temperature
  logits -= logits.max(1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(1, keepdims=True)
  h = lambda q: -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), -1)
  return h(p).mean(), h(p.mean(0))


def test_lfq_index_is_the_bits_of_the_signs():
  z = wide_inputs((3, 20, 6), seed=4)
  z[0, 0] = 0.0  # zero -> -1, bit 0
  z_q, aux = lfq_apply(z, entropy_weight=0.0)
  np.testing.assert_array_equal(np.asarray(z_q), np.where(z > 0, 1.0, -1.0))
  want = np.sum((z > 0) * 2 ** np.arange(6), -1)
  np.testing.assert_array_equal(np.asarray(aux["indices"]), want)
  assert int(lfq_apply(np.array([[1.0, -1.0, -2.0, 3.0]]))[1]["indices"][0]) == 0b1001
  np.testing.assert_array_equal(np.asarray(lfq.indices_to_codes(aux["indices"], 6)),
                                np.where(z > 0, 1.0, -1.0))
  ppl, used = np_usage(want)
  np.testing.assert_allclose(float(aux["metrics"]["perplexity"]), ppl, rtol=1e-5)
  assert int(aux["metrics"]["codes_used"]) == used
  assert LookupFreeQuantizer(code_dim=6).codebook_size == 64
  assert capacity.bits_per_position(LookupFreeQuantizer(code_dim=6)) == 6


def test_lfq_entropy_penalty_hand_computed():
  h34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  # D = 2, temperature 4: p(bit = 1 | z) = sigmoid(z); z = ln 3 gives 3/4, z = 0 gives 1/2.
  z = np.array([[math.log(3), 0.0], [math.log(3), math.log(3)]])
  per_sample = ((h34 + math.log(2)) + 2 * h34) / 2
  # Code probabilities (index = b0 + 2 b1): sample 1 [1/8, 3/8, 1/8, 3/8],
  # sample 2 [1/16, 3/16, 3/16, 9/16]; batch mean [3/32, 9/32, 5/32, 15/32].
  avg = np.array([3, 9, 5, 15]) / 32
  codebook = -np.sum(avg * np.log(avg))
  _, aux = lfq_apply(z, temperature=4.0, entropy_weight=0.1, diversity_weight=1.0,
                     commitment_weight=0.0)
  np.testing.assert_allclose(float(aux["metrics"]["per_sample_entropy"]), per_sample, rtol=1e-5)
  np.testing.assert_allclose(float(aux["metrics"]["codebook_entropy"]), codebook, rtol=1e-5)
  np.testing.assert_allclose(float(aux["losses"]["entropy"]), 0.1 * (per_sample - codebook),
                             rtol=1e-5)
  assert set(aux["losses"]) == {"entropy"}
  # All zeros: every assignment uniform, so both entropies are D ln 2 and the penalty 0.
  _, aux = lfq_apply(np.zeros((5, 3)), diversity_weight=0.5, commitment_weight=0.0)
  np.testing.assert_allclose(float(aux["losses"]["entropy"]), 0.1 * (3 - 1.5) * math.log(2),
                             rtol=1e-5)
  # Confident and spread over all four codes: -weight ln 4.
  z = np.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
  _, aux = lfq_apply(z, entropy_weight=0.2, commitment_weight=0.0)
  np.testing.assert_allclose(float(aux["losses"]["entropy"]), -0.2 * math.log(4), rtol=1e-5)


@pytest.mark.parametrize("chunk", [4, 32])
def test_lfq_entropy_matches_numpy_brute_force_and_its_gradient(chunk):
  rng = np.random.default_rng(5)
  z = (rng.normal(size=(2, 7, 5)) * 0.5).astype(np.float32)
  temperature = 1.5
  per_sample, codebook = np_lfq_entropies(z, temperature)
  _, aux = lfq_apply(z, temperature=temperature, entropy_chunk_size=chunk, diversity_weight=0.7)
  np.testing.assert_allclose(float(aux["metrics"]["per_sample_entropy"]), per_sample, rtol=1e-5)
  np.testing.assert_allclose(float(aux["metrics"]["codebook_entropy"]), codebook, rtol=1e-5)
  np.testing.assert_allclose(float(aux["losses"]["commitment"]),
                             0.25 * np.mean((z - np.where(z > 0, 1, -1))**2), rtol=1e-5)

  def np_loss(zz):
    a, b = np_lfq_entropies(zz, temperature)
    return 0.1 * (a - 0.7 * b)

  g = jax.grad(lambda t: lfq_apply(t, temperature=temperature, entropy_chunk_size=chunk,
                                   diversity_weight=0.7)[1]["losses"]["entropy"])(jnp.asarray(z))
  z64, h = z.astype(np.float64), 1e-5
  for idx in [(0, 0, 0), (1, 3, 2), (0, 6, 4)]:
    e = np.zeros_like(z64)
    e[idx] = h
    fd = (np_loss(z64 + e) - np_loss(z64 - e)) / (2 * h)
    np.testing.assert_allclose(float(g[idx]), fd, rtol=1e-3, atol=1e-6)


def test_lfq_losses_have_finite_gradients_at_the_default_temperature():
  # temperature 0.01: sigmoid(4 z / T) saturates to exactly 0 or 1 and most of the
  # 2^10 code probabilities underflow to 0; neither may turn the gradient into NaN.
  z = np.random.default_rng(8).normal(size=(64, 10)).astype(np.float32)
  g = jax.grad(lambda t: sum(lfq_apply(t)[1]["losses"].values()))(jnp.asarray(z))
  assert np.all(np.isfinite(np.asarray(g)))


def test_lfq_straight_through_gradient_and_validation():
  z = wide_inputs((4, 8), seed=6)
  w = np.random.default_rng(7).normal(size=z.shape).astype(np.float32)
  g = jax.grad(lambda t: jnp.sum(jnp.asarray(w) * lfq_apply(t, entropy_weight=0.0,
                                                            commitment_weight=0.0)[0]))(
      jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(g), w)
  _, aux = lfq_apply(np.ones((2, 20)), entropy_weight=0.0)  # D = 20: no entropy, fine
  assert set(aux["losses"]) == {"commitment"}
  with pytest.raises(ValueError, match="MAX_ENTROPY_BITS=16"):
    lfq_apply(np.ones((2, 17)))
  with pytest.raises(ValueError, match="expected code_dim=3"):
    LookupFreeQuantizer(code_dim=3).apply({}, jnp.ones((2, 4)), train=False)
