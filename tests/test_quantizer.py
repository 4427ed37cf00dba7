"""EMA quantizer: checked against NumPy re-derivations written here."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.quantizers import ema_vq
from vqjax.quantizers.ema_vq import VectorQuantizerEMA


def np_assign(z, codebook):
  """Brute-force nearest code, ties to the lowest index."""
  d = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
  return d.argmin(1)


def np_ema(cs, es, counts, sums, decay, eps):
  cs = decay * cs + (1 - decay) * counts
  es = decay * es + (1 - decay) * sums
  n = cs.sum()
  smoothed = (cs + eps) / (n + len(cs) * eps) * n
  return cs, es, es / smoothed[:, None]


def make_vq(**kw):
  args = dict(num_codes=8, code_dim=2, codebook_init="uniform", reset_window=10)
  args.update(kw)
  return VectorQuantizerEMA(**args)


def init_vars(vq, z, codebook=None):
  variables = vq.init({"params": jax.random.key(0)}, z, train=False)
  cb = dict(variables["codebook"])
  if codebook is not None:
    codebook = jnp.asarray(codebook, jnp.float32)
    cb.update(embedding=codebook, embed_sum=codebook,
              cluster_size=jnp.ones(codebook.shape[0]))
  return {"codebook": cb}


def train_call(vq, variables, z, seed=0):
  (z_q, aux), new = vq.apply(variables, z, train=True, mutable=["codebook"],
                             rngs={"codebook": jax.random.key(seed)})
  return z_q, aux, new


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


# -- dead-code reset ----------------------------------------------------------------


def reset_setup(window, rule="sample"):
  """Codes 0..6 on a line, code 7 far away and never used."""
  codebook = np.zeros((8, 2), np.float32)
  codebook[:7, 0] = np.arange(7)
  codebook[7] = (1000.0, 1000.0)
  vq = make_vq(reset_window=window, reset_threshold=2, reset_rule=rule,
               decay=0.99)
  return vq, codebook


def batch_near_codes(rng, codes, n=70):
  """n vectors close to codes (each code gets n / len(codes))."""
  z = np.zeros((n, 2), np.float32)
  z[:, 0] = np.repeat(codes, n // len(codes))
  z += rng.normal(scale=0.01, size=z.shape)
  return jnp.asarray(z, jnp.float32)


def test_unused_code_is_reset_exactly_when_the_window_fills():
  window = 4
  vq, codebook = reset_setup(window)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  rng = np.random.default_rng(5)
  for step in range(1, window + 1):
    z = batch_near_codes(rng, np.arange(7))
    _, aux, variables = train_call(vq, variables, z, step)
    emb = np.asarray(variables["codebook"]["embedding"])
    if step < window:
      assert int(aux["metrics"]["codes_reset"]) == 0
      np.testing.assert_allclose(emb[7], (1000.0, 1000.0), rtol=1e-3)
    else:
      assert int(aux["metrics"]["codes_reset"]) == 1
      # 'sample' rule: the new code is one of this batch's encoder outputs.
      assert np.abs(np.asarray(z) - emb[7]).max(-1).min() < 1e-6
  assert int(variables["codebook"]["num_resets"]) == 1


def test_code_used_threshold_times_in_window_is_not_reset():
  window = 4
  vq, codebook = reset_setup(window)
  codebook[6] = (500.0, 0.0)  # code 6 used only by the vectors we place there
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  rng = np.random.default_rng(6)
  history = []
  for step in range(1, window + 3):
    z = np.asarray(batch_near_codes(rng, np.arange(6), 60)).copy()
    if step <= 2:            # code 6 used once in each of the first 2 batches
      z[0] = (500.0, 0.0)
    _, aux, variables = train_call(vq, variables, jnp.asarray(z), step)
    history.append(np.asarray(variables["codebook"]["embedding"])[6].copy())
  # Steps 1..window: code 6 has 2 >= threshold uses in the window: never reset.
  for step in range(window):
    np.testing.assert_allclose(history[step], (500.0, 0.0), atol=1e-2)
  # Step window+2: its two uses left the window (steps 3..6): now it is reset.
  assert np.abs(history[window + 1] - np.array([500.0, 0.0])).max() > 100


@pytest.mark.parametrize("rule", ["average", "sample"])
def test_reset_code_statistics_match_and_ema_does_not_pull_it_back(rule):
  window = 3
  vq, codebook = reset_setup(window, rule)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  rng = np.random.default_rng(7)
  for step in range(1, window + 1):
    z = batch_near_codes(rng, np.arange(7))
    _, aux, variables = train_call(vq, variables, z, step)
  assert int(aux["metrics"]["codes_reset"]) == 1
  cb = {k: np.asarray(v) for k, v in variables["codebook"].items()}
  new = cb["embedding"][7]
  assert np.abs(new).max() < 10          # moved into the data
  if rule == "average":                   # a mean of batch outputs, inside their hull
    assert 0 - 0.1 <= new[0] <= 6 + 0.1
  np.testing.assert_allclose(cb["embed_sum"][7] / cb["cluster_size"][7], new, rtol=1e-5)
  assert (cb["usage"][:, 7] == 0).all()
  # Another step where nothing is assigned to code 7: it stays where it was put
  # (a stale embed_sum would drag it back towards (1000, 1000)).
  z = jnp.asarray(np.tile([[100.0, -100.0]], (70, 1)), jnp.float32)  # all go elsewhere
  codebook_before = cb["embedding"].copy()
  _, aux, variables = train_call(vq, variables, z, 99)
  idx = np.asarray(aux["indices"])
  assert not (idx == 7).any()
  after = np.asarray(variables["codebook"]["embedding"])[7]
  np.testing.assert_allclose(after, codebook_before[7], atol=1e-3)
  assert int(aux["metrics"]["codes_reset"]) == 0       # not reset again at once


def test_released_ema_criterion_resets_every_step_below_the_threshold():
  # The authors' released rule: after each step's EMA update, a code whose EMA
  # cluster size is below the threshold (2) is replaced by a batch vector and
  # restarts with cluster size 2. No window: it can happen at any step.
  _, codebook = reset_setup(window=10)
  vq = make_vq(reset_window=10, reset_threshold=2, reset_rule="sample",
               reset_criterion="ema", decay=0.99)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  cs0 = np.array([50, 50, 50, 50, 50, 50, 2.03, 2.01], np.float32)
  variables["codebook"].update(cluster_size=jnp.asarray(cs0),
                               embed_sum=jnp.asarray(codebook * cs0[:, None]))
  rng = np.random.default_rng(8)
  z = batch_near_codes(rng, np.arange(6), 60)          # codes 6 and 7 get nothing
  _, aux, variables = train_call(vq, variables, z, 1)
  cb = {k: np.asarray(v) for k, v in variables["codebook"].items()}
  # NumPy: 0.99 * 2.03 = 2.0097 >= 2 stays; 0.99 * 2.01 = 1.9899 < 2 is reset.
  assert int(aux["metrics"]["codes_reset"]) == 1
  np.testing.assert_allclose(cb["cluster_size"][6], 0.99 * 2.03, rtol=1e-6)
  np.testing.assert_allclose(cb["embedding"][6], (6.0, 0.0), atol=1e-3)
  assert np.abs(np.asarray(z) - cb["embedding"][7]).max(-1).min() < 1e-6
  assert cb["cluster_size"][7] == 2.0
  np.testing.assert_allclose(cb["embed_sum"][7], 2.0 * cb["embedding"][7], rtol=1e-6)
  # Next step: code 6 decays to 0.99 * 2.0097 = 1.9896 < 2 and is reset too.
  _, aux, variables = train_call(vq, variables, batch_near_codes(rng, np.arange(6), 60), 2)
  emb6 = np.asarray(variables["codebook"]["embedding"])[6]
  assert int(aux["metrics"]["codes_reset"]) >= 1
  assert emb6[0] < 5.5 and abs(emb6[1]) < 0.1           # moved into the data (codes 0..5)
  with pytest.raises(ValueError, match="reset_criterion"):
    make_vq(reset_criterion="bogus").init({"params": jax.random.key(0)}, z, train=False)


def test_sample_rule_gives_every_code_a_different_batch_vector():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(32, 3)), jnp.float32)
  new = np.asarray(ema_vq.replacement_candidates(jax.random.key(1), z, 16, "sample", 4, 0.01))
  rows = [int(np.argmin(np.abs(np.asarray(z) - v).max(-1))) for v in new]
  np.testing.assert_allclose(new, np.asarray(z)[rows], atol=0)  # exact batch rows
  assert len(set(rows)) == 16                                   # all different


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


# -- issue 11: tests that pin the exact behaviour ------------------------------------


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


def test_code_used_once_is_reset_exactly_when_the_window_fills():
  window = 5
  vq, codebook = reset_setup(window)
  codebook[6] = (500.0, 0.0)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  rng = np.random.default_rng(13)
  reset_at = []
  for step in range(1, 2 * window):
    z = np.asarray(batch_near_codes(rng, np.arange(6), 60)).copy()
    if step == 1:
      z[0] = (500.0, 0.0)   # code 6: exactly one use, in the first batch
    _, aux, variables = train_call(vq, variables, jnp.asarray(z), step)
    emb = np.asarray(variables["codebook"]["embedding"])
    if np.abs(emb[6] - (500.0, 0.0)).max() > 100:
      reset_at.append(step)
      break
  # Code 6 (1 < threshold 2 uses) is judged first when the window is full:
  # at step `window`, not before, not after. Code 7 (0 uses) goes then too.
  assert reset_at == [window]
  assert int(aux["metrics"]["codes_reset"]) == 2


def test_average_rule_is_the_mean_of_exactly_average_size_outputs():
  # Rows at x = 1, 10, 100, 1000, 10000: 4 * (a mean of 4 rows) has decimal
  # digits that count how often each row was drawn, and they sum to 4.
  codebook = np.zeros((8, 2), np.float32)
  codebook[:7, 0] = np.arange(7)
  codebook[7] = (-1000.0, -1000.0)
  vq = make_vq(reset_window=1, reset_threshold=2, reset_rule="average",
               reset_average_size=4, decay=0.99)
  z = jnp.asarray([[10.0**i, 0.0] for i in range(5)], jnp.float32)
  variables = init_vars(vq, jnp.zeros((4, 2)), codebook)
  _, aux, variables = train_call(vq, variables, z, 3)
  cb = {k: np.asarray(v) for k, v in variables["codebook"].items()}
  dead = [c for c in range(8) if cb["code_age"][c] == 0]
  assert 7 in dead and len(dead) == int(aux["metrics"]["codes_reset"])
  for c in dead:
    total = 4 * cb["embedding"][c, 0]
    assert cb["embedding"][c, 1] == 0.0
    assert total == np.round(total)
    digits = [int(d) for d in str(int(np.round(total)))]
    assert sum(digits) == 4, (c, total)


def test_replacement_candidates_average_matches_the_drawn_rows():
  z = jnp.asarray(np.random.default_rng(14).normal(size=(50, 3)), jnp.float32)
  key = jax.random.key(5)
  got = np.asarray(ema_vq.replacement_candidates(key, z, 8, "average", 4, 0.01))
  idx = np.asarray(jax.random.randint(key, (8, 4), 0, 50))  # the rule's draw
  np.testing.assert_allclose(got, np.asarray(z)[idx].mean(1), rtol=1e-6)
