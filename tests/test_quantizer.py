"""EMA quantizer: checked against NumPy re-derivations written here and in
ema_helpers.py. The dead-code reset: test_dead_code_reset.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.quantizers import ema_vq

from ema_helpers import init_vars, make_vq, np_assign, np_ema, train_call


# -- EMA --------------------------------------------------------------------------


def test_three_ema_updates_match_numpy():
  decay, eps = 0.9, 1e-5
  rng = np.random.default_rng(1)
  codebook = rng.normal(size=(8, 2)).astype(np.float32)
  vq = make_vq(decay=decay, eps=eps)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  cs, es, emb = np.ones(8), codebook.astype(np.float64), codebook.astype(np.float64)
  for step in range(3):
    z = rng.normal(size=(64, 2)).astype(np.float32)
    idx = np_assign(z, emb)
    counts = np.bincount(idx, minlength=8).astype(np.float64)
    sums = np.zeros((8, 2))
    np.add.at(sums, idx, z)
    cs, es, emb = np_ema(cs, es, counts, sums, decay, eps)
    _, aux, variables = train_call(vq, variables, jnp.asarray(z), step)
    np.testing.assert_array_equal(np.asarray(aux["indices"]), idx)
    got = variables["codebook"]
    np.testing.assert_allclose(got["cluster_size"], cs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["embed_sum"], es, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got["embedding"], emb, atol=1e-6, rtol=0)


# -- straight-through estimator ----------------------------------------------------


def test_straight_through_and_commitment_gradients():
  beta = 0.25
  rng = np.random.default_rng(2)
  codebook = rng.normal(size=(8, 2)).astype(np.float32)
  z = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
  vq = make_vq(beta=beta)
  variables = init_vars(vq, z, codebook)
  float_keys = ("embedding", "cluster_size", "embed_sum")
  floats = {k: variables["codebook"][k] for k in float_keys}

  def with_floats(cb):
    return {"codebook": {**variables["codebook"], **cb}}

  def decoder_term(z_e, cb):
    z_q, _ = vq.apply(with_floats(cb), z_e, train=False)
    return jnp.sum(w * z_q)

  def commitment(z_e, cb):
    return vq.apply(with_floats(cb), z_e, train=False)[1]["losses"]["commitment"]

  # d/dz_e of sum(w * z_q) is w: the quantizer is the identity backwards.
  g_z, g_cb = jax.grad(decoder_term, argnums=(0, 1))(z, floats)
  np.testing.assert_allclose(g_z, w, rtol=1e-6)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g_cb))

  zn = np.asarray(z).reshape(-1, 2)
  zq = codebook[np_assign(zn, codebook)]
  want = 2 * beta * (zn - zq) / zn.size
  g_z, g_cb = jax.grad(commitment, argnums=(0, 1))(z, floats)
  np.testing.assert_allclose(np.asarray(g_z).reshape(-1, 2), want, rtol=1e-5, atol=1e-8)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(g_cb))
  np.testing.assert_allclose(commitment(z, floats),
                             beta * np.mean((zn - zq) ** 2), rtol=1e-6)


# -- data init ---------------------------------------------------------------------


def test_data_init_sets_codes_from_the_batch():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(16, 4)).astype(np.float32)  # N == K: every row becomes a code
  vq = make_vq(num_codes=16, code_dim=4, codebook_init="data")
  variables = init_vars(vq, jnp.asarray(z))
  assert not bool(variables["codebook"]["initialized"])
  _, aux, new = train_call(vq, variables, jnp.asarray(z))
  cb = new["codebook"]
  emb = np.asarray(cb["embedding"])
  assert bool(cb["initialized"])
  # Each code is one of the batch's vectors, all distinct: a permutation of z.
  match = np.abs(emb[:, None, :] - z[None]).max(-1) < 1e-6
  assert match.any(1).all() and (match.sum(0) == 1).all()
  np.testing.assert_allclose(np.asarray(cb["embed_sum"]) / np.asarray(cb["cluster_size"])[:, None],
                             emb, atol=1e-5)
  # Second call must not re-initialise: a re-init would put codes onto z2;
  # the EMA moves each code only a fraction of the way (< 0.2 of 100).
  z2 = z + 100.0
  _, _, newer = train_call(vq, new, jnp.asarray(z2), seed=1)
  emb2 = np.asarray(newer["codebook"]["embedding"])
  assert np.abs(emb2[:, None, :] - z2[None]).max(-1).min() > 50


def np_lloyd(z, codes, iters):
  """NumPy Lloyd iterations; a code without points keeps its place."""
  codes = codes.astype(np.float64).copy()
  for _ in range(iters):
    idx = np_assign(z, codes)
    for k in range(len(codes)):
      if (idx == k).any():
        codes[k] = z[idx == k].mean(0)
  return codes


def test_kmeans_matches_numpy_lloyd_with_an_empty_cluster():
  rng = np.random.default_rng(4)
  centres = np.array([[0, 0], [5, 0], [0, 5], [5, 5]], np.float32)
  z = (centres[rng.integers(0, 4, 300)] + rng.normal(scale=0.5, size=(300, 2))).astype(np.float32)
  start = z[rng.choice(300, 6, replace=False)].copy()
  start[5] = (100.0, 100.0)  # never nearest: must stay where it is
  for iters in (1, 3, 8):
    got = np.asarray(ema_vq.kmeans(jnp.asarray(z), jnp.asarray(start), iters))
    np.testing.assert_allclose(got, np_lloyd(z, start, iters), atol=1e-4)
  np.testing.assert_array_equal(got[5], (100.0, 100.0))


def test_kmeans_init_is_lloyd_from_the_data_init():
  rng = np.random.default_rng(5)
  centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], np.float32)
  z = (centres[np.repeat(np.arange(4), 40)] + rng.normal(scale=0.7, size=(160, 2)))
  z = jnp.asarray(z, jnp.float32)
  # decay ~ 1: the EMA step after the init leaves the codes where the init put
  # them (to ~1e-4), so the two runs show their inits; both draw the same rows.
  common = dict(num_codes=8, code_dim=2, decay=1 - 1e-7)
  data_vq = make_vq(codebook_init="data", **common)
  kmeans_vq = make_vq(codebook_init="kmeans", kmeans_iters=5, **common)
  _, _, data = train_call(data_vq, init_vars(data_vq, z), z)
  _, _, km = train_call(kmeans_vq, init_vars(kmeans_vq, z), z)
  start = np.asarray(data["codebook"]["embedding"])
  want = np_lloyd(np.asarray(z), start, 5)
  np.testing.assert_allclose(np.asarray(km["codebook"]["embedding"]), want, atol=1e-3)
  assert np.abs(want - start).max() > 0.1  # Lloyd really moved the codes
  cb = km["codebook"]
  np.testing.assert_allclose(np.asarray(cb["embed_sum"]) / np.asarray(cb["cluster_size"])[:, None],
                             np.asarray(cb["embedding"]), atol=1e-4)
  with pytest.raises(ValueError, match="kmeans_iters"):
    make_vq(codebook_init="kmeans", kmeans_iters=0).init({"params": jax.random.key(0)}, z,
                                                        train=False)


def test_sample_rows_distinct_or_noisy():
  rng = np.random.default_rng(4)
  z = rng.normal(size=(100, 3)).astype(np.float32)
  rows = np.asarray(ema_vq.sample_rows(jax.random.key(0), jnp.asarray(z), 40, 0.01))
  d = np.abs(rows[:, None] - z[None]).max(-1)
  assert (d.min(1) == 0).all()                      # each is a row of z
  assert len({tuple(r) for r in rows}) == 40        # distinct
  few = np.asarray(ema_vq.sample_rows(jax.random.key(0), jnp.asarray(z[:5]), 40, 0.01))
  d = np.abs(few[:, None] - z[None, :5]).max(-1).min(1)
  assert (d < 0.01 * 5 * z[:5].std(0).max()).all()  # within the noise of a row
  assert len({tuple(r) for r in few}) == 40


# -- jit / eval -----------------------------------------------------------------------


def test_jit_traces_once_over_12_steps_and_eval_is_frozen():
  vq = make_vq(num_codes=16, code_dim=2, codebook_init="data", reset_window=3)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(variables, z, key):
    (_, aux), new = vq.apply(variables, z, train=True, mutable=["codebook"],
                             rngs={"codebook": key})
    return new, aux["metrics"]["codes_reset"]

  rng = np.random.default_rng(8)
  variables = init_vars(vq, jnp.zeros((64, 2)))
  resets = 0
  for i in range(12):
    z = jnp.asarray(rng.normal(size=(64, 2)) * (1 + (i < 1) * 0), jnp.float32)
    variables, n = step(variables, z, jax.random.key(i))
    resets += int(n)
  # 64 Gaussian vectors on 16 codes with a window of 3: the tail codes fall
  # below 2 uses, so the traced reset branch really runs (and never retraces).
  assert resets >= 1
  assert bool(variables["codebook"]["initialized"])

  before = jax.tree.map(np.asarray, variables)
  (_, _), after = vq.apply(variables, jnp.asarray(rng.normal(size=(64, 2)), jnp.float32),
                           train=False, mutable=["codebook"])
  chex.assert_trees_all_equal(before, jax.device_get(after))


def test_bad_hyperparameters_fail_clearly():
  with pytest.raises(ValueError, match="reset_rule"):
    make_vq(reset_rule="mean").init({"params": jax.random.key(0)}, jnp.zeros((2, 2)), train=False)
  with pytest.raises(ValueError, match="code_dim"):
    make_vq().init({"params": jax.random.key(0)}, jnp.zeros((2, 3)), train=False)


# -- issue 11: tests that pin the exact behaviour (initialisation; the reset ones are in
# test_dead_code_reset.py) --------------------------------------------------------


def clustered_batch(rng, num_clusters, per_cluster, dim=4, spread=0.3):
  centres = rng.normal(scale=5.0, size=(num_clusters, dim))
  z = centres[np.repeat(np.arange(num_clusters), per_cluster)]
  return jnp.asarray(z + rng.normal(scale=spread, size=z.shape), jnp.float32)


@pytest.mark.parametrize("init", ["data", "kmeans"])
@pytest.mark.parametrize("criterion", ["window", "ema"])
def test_initialised_codes_survive_the_first_step(init, criterion):
  # K = 64 codes, 4,096 vectors (64 per code). With one pseudo-assignment per
  # code at init, the 'ema' rule reset 53 ('data') / 59 ('kmeans') codes here.
  rng = np.random.default_rng(11)
  z = jnp.asarray(rng.normal(size=(4096, 4)), jnp.float32)
  vq = make_vq(num_codes=64, code_dim=4, codebook_init=init, reset_criterion=criterion,
               reset_threshold=2.0, reset_window=10)
  _, aux, new = train_call(vq, init_vars(vq, z), z)
  assert int(aux["metrics"]["codes_reset"]) == 0
  # The EMA statistics start from the init's assignment counts (NumPy).
  cs = np.asarray(new["codebook"]["cluster_size"])
  assert cs.min() >= 2.0


def test_data_init_then_first_ema_step_matches_numpy():
  rng = np.random.default_rng(12)
  z = np.asarray(clustered_batch(rng, 8, 12, dim=3, spread=1.0))  # 96 vectors
  k, decay, eps = 16, 0.9, 1e-5
  vq = make_vq(num_codes=k, code_dim=3, codebook_init="data", decay=decay, eps=eps,
               reset_threshold=0.0)
  _, aux, new = train_call(vq, init_vars(vq, jnp.asarray(z)), jnp.asarray(z))
  idx = np.asarray(aux["indices"])
  emb = np.asarray(new["codebook"]["embedding"])
  # The draw is random: recover each code's initial vector as the one of its
  # assigned rows that the NumPy pipeline maps onto the final embedding.
  start = np.zeros((k, 3), np.float64)
  for code in range(k):
    rows = z[idx == code]
    assert len(rows), f"code {code} got no rows: it is a batch row, nearest to itself"
    counts = (idx == code).sum()
    sums = rows.sum(0)
    # One code alone: cs = d n + (1 - d) n = n, es = d n e + (1 - d) S; the
    # Laplace smoothing is a common factor, checked on the whole codebook below.
    errors = [np.abs((decay * counts * r + (1 - decay) * sums) / counts - emb[code]).max()
              for r in rows]
    start[code] = rows[int(np.argmin(errors))]
  assert len({tuple(r) for r in start}) == k            # k distinct batch rows
  np.testing.assert_array_equal(np_assign(z, start), idx)
  counts = np.bincount(idx, minlength=k).astype(np.float64)
  sums = np.stack([z[idx == c].sum(0) for c in range(k)])
  cs0 = np.maximum(counts, 1)
  cs, es, want = np_ema(cs0, start * cs0[:, None], counts, sums, decay, eps)
  np.testing.assert_allclose(np.asarray(new["codebook"]["cluster_size"]), cs, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["codebook"]["embed_sum"]), es, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
