"""Grouped (MGVQ) quantizer: G = 1 is the plain quantizer, groups are independent,
nested dropout frequencies, 8 simulated devices match 1; bits per position."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from devices_worker import run_worker
from vqjax import capacity
from vqjax.quantizers.ema_vq import VectorQuantizerEMA
from vqjax.quantizers.grouped import GroupedProjection, GroupedQuantizer, keep_probabilities
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer
from vqjax.quantizers import FiniteScalarQuantizer, LookupFreeQuantizer, ResidualQuantizer

RELEASED_KEEP = [0.2, 0.1, 0.1, 0.6]  # MGVQ notes: P(keep 1/2/3/4 groups)


def np_assign(z, codebook):
  d = ((z[:, None, :] - codebook[None]) ** 2).sum(-1)
  return d.argmin(1)


def np_perplexity(idx):
  _, counts = np.unique(idx, return_counts=True)
  p = counts / counts.sum()
  return float(np.exp(-np.sum(p * np.log(p))))


# -- G = 1 is the plain quantizer --------------------------------------------------


class AsGroup0(nn.Module):
  """The plain quantizer at the path of the grouped quantizer's first group, so
  both draw the same PRNG streams (flax folds the module path into them)."""

  make: object

  @nn.compact
  def __call__(self, z, train):
    return self.make(name="group_0")(z, train=train)


@pytest.mark.parametrize("kind", ["ema", "learned"])
def test_one_group_equals_the_plain_quantizer_bit_for_bit(kind):
  if kind == "ema":
    sub = functools.partial(VectorQuantizerEMA, codebook_init="data", reset_window=2,
                            reset_threshold=3.0)
  else:
    sub = functools.partial(LearnedCodebookQuantizer, l2_normalize=True)
  plain = AsGroup0(functools.partial(sub, num_codes=16, code_dim=3))
  grouped = GroupedQuantizer(num_groups=1, num_codes=16, code_dim=3, group_quantizer=sub)
  rng = np.random.default_rng(0)
  z0 = jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)
  va = plain.init(jax.random.key(0), z0, train=False)
  vb = grouped.init(jax.random.key(0), z0, train=False)
  chex.assert_trees_all_equal(va, vb)
  rngs = lambda t: {"codebook": jax.random.key(t), "sample": jax.random.key(100 + t)}
  resets = 0
  for t in range(4):  # EMA: data init, updates and (window 2) dead-code resets
    z = jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)
    (qa, aa), va_new = plain.apply(va, z, train=True, mutable=["codebook"], rngs=rngs(t))
    (qb, ab), vb_new = grouped.apply(vb, z, train=True, mutable=["codebook"], rngs=rngs(t))
    chex.assert_trees_all_equal(qa, qb)
    chex.assert_trees_all_equal(aa["indices"], ab["indices"][..., 0])
    chex.assert_trees_all_equal(aa["losses"], ab["losses"])
    for name, value in aa["metrics"].items():
      chex.assert_trees_all_equal(jnp.asarray(value), ab["metrics"][f"group_0/{name}"])
    if kind == "ema":
      resets += int(aa["metrics"]["codes_reset"])
      va, vb = {**va, **va_new}, {**vb, **vb_new}
      chex.assert_trees_all_equal(va, vb)
  if kind == "ema":
    assert resets > 0


# -- groups are independent -----------------------------------------------------------


def block_mask(groups, d_in, d_out):
  """[G d_out, G d_in] True where output group i meets input group i."""
  return np.kron(np.eye(groups), np.ones((d_out, d_in))).astype(bool)


def test_each_group_uses_its_own_codebook_and_channels():
  g, d, k = 3, 2, 4
  rng = np.random.default_rng(1)
  sub = functools.partial(VectorQuantizerEMA, codebook_init="uniform")
  q = GroupedQuantizer(num_groups=g, num_codes=g * k, code_dim=g * d, group_quantizer=sub)
  z = rng.normal(size=(2, 6, g * d)).astype(np.float32)
  variables = q.init(jax.random.key(0), jnp.asarray(z), train=False)
  books = [rng.normal(size=(k, d)).astype(np.float32) for _ in range(g)]
  cb = {f"group_{i}": dict(variables["codebook"][f"group_{i}"], embedding=jnp.asarray(books[i]))
        for i in range(g)}
  z_q, aux = q.apply({"codebook": cb}, jnp.asarray(z), train=False)
  assert aux["indices"].shape == (2, 6, g) and q.codebook_size == k
  flat = z.reshape(-1, g * d)
  want_q, commit = [], []
  for i in range(g):
    zi = flat[:, i * d:(i + 1) * d]
    idx = np_assign(zi, books[i])
    np.testing.assert_array_equal(np.asarray(aux["indices"][..., i]).ravel(), idx)
    np.testing.assert_allclose(float(aux["metrics"][f"group_{i}/perplexity"]),
                               np_perplexity(idx), rtol=1e-5)
    want_q.append(books[i][idx])
    commit.append(0.25 * np.mean((zi - books[i][idx]) ** 2))
  np.testing.assert_allclose(np.asarray(z_q).reshape(-1, g * d), np.concatenate(want_q, 1),
                             atol=1e-6)
  np.testing.assert_allclose(float(aux["losses"]["commitment"]), np.mean(commit), rtol=1e-5)
  np.testing.assert_allclose(float(aux["metrics"]["perplexity"]),
                             np.mean([np_perplexity(np.asarray(aux["indices"][..., i]))
                                      for i in range(g)]), rtol=1e-5)


def test_no_gradient_crosses_groups_also_through_grouped_projections():
  g, d, c = 4, 2, 12  # quantizer width G*d = 8, model width C = 12 (3 per group)
  sub = functools.partial(LearnedCodebookQuantizer, l2_normalize=True,  # non-trivial blocks
                          gradient_estimator="rotation")
  q = GroupedQuantizer(num_groups=g, num_codes=4 * g, code_dim=g * d, group_quantizer=sub)
  proj_in, proj_out = GroupedProjection(g * d, g), GroupedProjection(c, g)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1, 1, c)), jnp.float32)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  p_in = proj_in.init(k1, x)
  h = proj_in.apply(p_in, x)
  vq = q.init(k2, h, train=False)
  p_out = proj_out.init(k3, h)

  jac_q = jax.jacrev(lambda t: q.apply(vq, t, train=False)[0])(h).reshape(g * d, g * d)
  mask = block_mask(g, d, d)
  np.testing.assert_array_equal(np.asarray(jac_q)[~mask], 0.0)
  assert np.all(np.abs(np.asarray(jac_q)[mask]).reshape(g, -1).max(1) > 1e-3)

  def model(t):
    z_q, _ = q.apply(vq, proj_in.apply(p_in, t), train=False)
    return proj_out.apply(p_out, z_q)

  jac = np.asarray(jax.jacrev(model)(x)).reshape(c, c)
  mask = block_mask(g, c // g, c // g)
  np.testing.assert_array_equal(jac[~mask], 0.0)
  assert np.all(np.abs(jac[mask]).reshape(g, -1).max(1) > 1e-4)
  # Perturbing one group's channels moves only that group's index.
  base = np.asarray(q.apply(vq, h, train=False)[1]["indices"])
  for j in range(g):
    moved = np.asarray(h).copy()
    moved[..., j * d:(j + 1) * d] *= -3.0
    idx = np.asarray(q.apply(vq, jnp.asarray(moved), train=False)[1]["indices"])
    others = [i for i in range(g) if i != j]
    np.testing.assert_array_equal(idx[..., others], base[..., others])


def test_grouped_projection_matches_numpy_block_matmul():
  g, cin, cout = 4, 8, 12
  x = np.random.default_rng(3).normal(size=(2, 3, 3, cin)).astype(np.float32)
  proj = GroupedProjection(cout, g)
  params = proj.init(jax.random.key(0), jnp.asarray(x))["params"]["conv"]
  kernel, bias = np.asarray(params["kernel"])[0, 0], np.asarray(params["bias"])
  assert kernel.shape == (cin // g, cout)
  a, b = cin // g, cout // g
  want = np.concatenate([x[..., j * a:(j + 1) * a] @ kernel[:, j * b:(j + 1) * b]
                         for j in range(g)], -1) + bias
  got = proj.apply({"params": {"conv": params}}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  with pytest.raises(ValueError, match="divisible by num_groups=4"):
    GroupedProjection(10, g).init(jax.random.key(0), jnp.asarray(x))


# -- nested group dropout -----------------------------------------------------------------


def kept_groups(z_q, g):
  """[..., G*d] outputs -> [..., G] bool: group output not all zero."""
  z_q = np.asarray(z_q).reshape(*z_q.shape[:-1], g, -1)
  return np.any(z_q != 0, axis=-1)


def check_frequencies(kept, probs):
  """kept [N, G] bool: every row a prefix; P(k kept) within 4.5 binomial std."""
  n, g = kept.shape
  k = kept.sum(1)
  np.testing.assert_array_equal(kept, np.arange(g)[None, :] < k[:, None])  # prefixes only
  for kk, p in zip(range(1, g + 1), probs):
    count = np.sum(k == kk)
    std = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 4.5 * std + 1e-9, (kk, count, n * p, std)


def learned_grouped(g, **kw):
  return GroupedQuantizer(num_groups=g, num_codes=4 * g, code_dim=2 * g,
                          group_quantizer=LearnedCodebookQuantizer, **kw)


def test_nested_dropout_batch_scope_frequencies():
  g, draws = 4, 20000
  q = learned_grouped(g)
  z = jnp.ones((2, 3, 2 * g))
  variables = q.init(jax.random.key(0), z, train=False)
  keys = jax.random.split(jax.random.key(42), draws)
  run = jax.jit(jax.vmap(lambda key: q.apply(variables, z, train=True, rngs={"sample": key})))
  z_q, aux = run(keys)
  kept = kept_groups(z_q, g)                          # [draws, 2, 3, G]
  assert np.all(kept == kept[:, :1, :1])              # one draw for the whole batch
  np.testing.assert_allclose(keep_probabilities(q.drop_probs, g), RELEASED_KEEP, atol=1e-12)
  check_frequencies(kept[:, 0, 0], RELEASED_KEEP)
  np.testing.assert_array_equal(np.asarray(aux["metrics"]["groups_kept"]),
                                kept[:, 0, 0].sum(1))


def test_nested_dropout_example_scope_and_groups_beyond_the_list():
  g, n = 8, 20000
  q = learned_grouped(g, dropout_scope="example")
  z = jnp.ones((n, 1, 2 * g))
  variables = q.init(jax.random.key(0), z, train=False)
  z_q, aux = jax.jit(lambda t: q.apply(variables, t, train=True,
                                       rngs={"sample": jax.random.key(7)}))(z)
  kept = kept_groups(z_q, g)[:, 0]
  # Groups 4..7 go with group 3: P(keep k) = 0.2, 0.1, 0.1, 0, 0, 0, 0, 0.6.
  want = [0.2, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.6]
  np.testing.assert_allclose(keep_probabilities(q.drop_probs, g), want, atol=1e-12)
  check_frequencies(kept, want)
  np.testing.assert_allclose(float(aux["metrics"]["groups_kept"]), kept.sum(1).mean(), rtol=1e-6)


def test_dropout_off_eval_and_active_groups():
  g = 4
  z = jnp.ones((3, 2 * g))
  rngs = {"sample": jax.random.key(3)}
  for q, train in [(learned_grouped(g, group_dropout=False), True), (learned_grouped(g), False),
                   (learned_grouped(g, drop_probs=(0.0, 0.0)), True)]:
    variables = q.init(jax.random.key(0), z, train=False)
    z_q, _ = q.apply(variables, z, train=train, rngs=rngs)
    assert kept_groups(z_q, g).all()
  q = learned_grouped(g, active_groups=3)
  variables = q.init(jax.random.key(0), z, train=False)
  full = q.apply(variables, z, train=False, active_groups=4)[0]
  for k in (1, 2, 3):
    z_q, aux = q.apply(variables, z, train=False, active_groups=k if k != 3 else None)
    assert (kept_groups(z_q, g) == (np.arange(g) < k)).all()
    np.testing.assert_array_equal(np.asarray(z_q)[:, :2 * k], np.asarray(full)[:, :2 * k])
    assert aux["indices"].shape == (3, g) and float(aux["metrics"]["groups_kept"]) == k
  with pytest.raises(ValueError, match="active_groups=5"):
    q.apply(variables, z, train=False, active_groups=5)
  with pytest.raises(ValueError, match="'sample' PRNG stream"):
    learned_grouped(g).apply(variables, z, train=True)
  with pytest.raises(ValueError, match="non-decreasing"):
    learned_grouped(g, drop_probs=(0.0, 0.3, 0.2)).init(jax.random.key(0), z, train=False)
  with pytest.raises(ValueError, match="divide num_codes=10"):
    GroupedQuantizer(num_groups=4, num_codes=10, code_dim=8).init(jax.random.key(0), z,
                                                                  train=False)


# -- 8 simulated devices match 1 -------------------------------------------------------

@pytest.mark.slow
def test_grouped_dropout_eight_devices_match_one(tmp_path):
  # Per-example draws over the sharded batch ('batch' scope draws one scalar).
  run = {"scenario": "grouped_quantizer", "devices": [1, 8], "scope": "example"}
  runs = run_worker(tmp_path, {"grouped": run}, host_devices=8)["grouped"]
  a, b = runs[1], runs[8]
  assert set(a) == set(b)
  kept = np.array([a[f"kept/{t}"] for t in range(6)])
  assert kept.min() < 4 and kept.max() > 1                 # dropout really happened
  assert sum(int(a[f"resets/{t}"]) for t in range(6)) > 0  # and dead-code resets
  exact = ("indices/", "kept/", "resets/")
  pick = lambda r, want: {k: v for k, v in r.items() if k.startswith(exact) == want}
  chex.assert_trees_all_equal(pick(a, True), pick(b, True))
  chex.assert_trees_all_close(pick(a, False), pick(b, False), atol=1e-5, rtol=0)


# -- capacity --------------------------------------------------------------------------


def test_bits_per_position():
  bits = lambda q: capacity.bits_per_position(q)
  assert bits(VectorQuantizerEMA(num_codes=1024, code_dim=4)) == 10
  assert bits(GroupedQuantizer(num_groups=4, num_codes=32768, code_dim=8)) == 52  # 4 x 13
  assert bits(GroupedQuantizer(num_groups=8, num_codes=16384, code_dim=8)) == 88  # 8 x 11
  assert bits(GroupedQuantizer(num_groups=1, num_codes=512, code_dim=8)) == 9
  assert bits(LookupFreeQuantizer(code_dim=18)) == 18
  assert bits(FiniteScalarQuantizer(levels=(8, 5, 5, 5))) == pytest.approx(3 + 3 * math.log2(5))
  assert bits(ResidualQuantizer(num_codes=1024, code_dim=4, num_stages=3)) == 30
  # The code space: grouped codes are G entries of K/G codes, offset by group.
  q = GroupedQuantizer(num_groups=4, num_codes=32, code_dim=8)
  assert (q.code_shape, q.codebook_size, q.histogram_size) == ((4,), 8, 32)
  np.testing.assert_array_equal(np.asarray(q.flat_codes(jnp.asarray([[7, 0, 3, 1]]))),
                                [[7, 8, 19, 25]])
