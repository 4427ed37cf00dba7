"""The EMA quantizer's dead-code reset (window and released-EMA criteria, average and
sample rules), checked against hand-computed cases and NumPy."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from vqjax.quantizers import ema_vq

from ema_helpers import init_vars, make_vq, train_call


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


def test_replacement_candidates_average_are_means_of_independent_uniform_draws():
  # z = the 5 x 5 identity: 4 x a candidate (the mean of 4 rows) is the count
  # vector of the rows it averages. Each candidate must average exactly 4
  # rows, drawn independently and uniformly (with replacement): its count
  # vector is Multinomial(4, 1/5), whose 70 outcomes' probabilities are
  # enumerated here over all 5^4 draws.
  n, size, k = 5, 4, 20000
  got = np.asarray(ema_vq.replacement_candidates(jax.random.key(5), jnp.eye(n), k, "average",
                                                 size, 0.01))
  counts = np.round(got * size)
  np.testing.assert_allclose(got * size, counts, atol=1e-5)   # means of rows of z
  assert counts.min() >= 0 and (counts.sum(1) == size).all()  # of exactly 4 rows
  outcomes = collections.Counter(
      tuple(np.bincount(draw, minlength=n)) for draw in itertools.product(range(n), repeat=size))
  observed = collections.Counter(map(tuple, counts.astype(int)))
  assert set(observed) <= set(outcomes)
  cells = sorted(outcomes)
  expected = np.array([outcomes[c] / n**size * k for c in cells])
  seen = np.array([observed[c] for c in cells])
  assert expected.min() > 25                                  # chi-square applies
  chi2 = ((seen - expected) ** 2 / expected).sum()
  assert scipy.stats.chi2.sf(chi2, len(cells) - 1) > 1e-4, chi2
