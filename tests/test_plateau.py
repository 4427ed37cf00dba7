"""The 'plateau' learning-rate rule (HQ-VAE): it watches the validation loss.

The rule (train.lr_schedule='plateau') multiplies Adam's updates by a scale
that is halved after plateau_patience validation rounds without a relative
improvement of plateau_rtol. Checked here against a plain-Python reference:
the scale follows the validation losses, not the training loss; the train
loop feeds it the validation MSE of every evaluation; its counters survive a
resume; the train step traces once although the scale changes between steps.
"""

import math

import chex
import jax
import numpy as np
import optax
import pytest

from vqjax import checkpointing, evaluate, parallel, train, writers
from vqjax import data as data_lib
from vqjax import state as state_lib
from vqjax.models import create_model

from conftest import tiny_config


def reference_plateau(values, factor=0.5, patience=3, rtol=1e-4):
  """[(scale, best, bad_rounds)] after each validation loss (plain Python).

  A loss improves when it is below (1 - rtol) * best; the scale is multiplied
  by `factor` at the `patience`-th round in a row without improvement, which
  restarts the count.
  """
  best, bad, scale, out = math.inf, 0, 1.0, []
  for v in values:
    if v < (1 - rtol) * best:
      best, bad = v, 0
    else:
      bad += 1
      if bad == patience:
        scale, bad = scale * factor, 0
    out.append((scale, best, bad))
  return out


def plateau_config(**train):
  config = tiny_config("single")
  t = config.train
  t.lr_schedule, t.plateau_factor, t.plateau_patience, t.plateau_rtol = "plateau", 0.5, 3, 1e-4
  t.eval_every = 1
  t.update(train)
  return config


def fresh_state(config, mesh):
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  return parallel.replicate(state_lib.create_train_state(model, tx, 32, 0), mesh)


def plateau_node(opt_state):
  """The optax ReduceLROnPlateauState inside opt_state."""
  is_node = lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState)
  (node,) = [x for x in jax.tree.leaves(opt_state, is_leaf=is_node) if is_node(x)]
  return jax.device_get(node)


def counters(state) -> tuple[float, float, int]:
  p = plateau_node(state.opt_state)
  return float(p.scale), float(p.best_value), int(p.plateau_count)


# Hand-computed with factor 0.5, patience 3, rtol 1e-4: 0.79995 is within
# rtol of 0.8 (no improvement); 0.69 improves on 0.7 and restarts the count.
LOSSES = [1.0, 0.8, 0.8, 0.79995, 0.81, 0.7, 0.7, 0.75, 0.69, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
SCALES = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_scale_follows_a_hand_computed_sequence_of_validation_losses():
  assert [s for s, _, _ in reference_plateau(LOSSES)] == SCALES
  rng = np.random.default_rng(0)
  walk = list(np.round(rng.uniform(0.5, 1.0, 40) * 16) / 16)  # exact in float32, many ties
  config = plateau_config()
  mesh = parallel.create_mesh()
  rule = state_lib.plateau_rule(config)
  advance = jax.jit(lambda s, v: state_lib.advance_plateau(s, v, rule=rule))
  for values in (LOSSES, walk):
    state = fresh_state(config, mesh)
    assert counters(state) == (1.0, math.inf, 0)
    got = []
    for v in values:
      state = advance(state, np.float32(v))
      got.append(counters(state))
    want = reference_plateau(values)
    np.testing.assert_allclose(np.array(got), np.array(want, np.float64), rtol=1e-6)


def test_training_loss_does_not_move_the_scale():
  # rtol 0.99: a training-loss rule would see "no improvement" at every step
  # after the first and halve the rate each step (patience 1, 1-step epochs).
  config = plateau_config(plateau_rtol=0.99, plateau_patience=1, steps_per_epoch=1)
  mesh = parallel.create_mesh()
  state = fresh_state(config, mesh)
  before = plateau_node(state.opt_state)
  step = train.jit_train_step(mesh)
  batch = parallel.global_batch(next(iter(data_lib.create_train_loader(config.data, seed=0))),
                                mesh)
  for _ in range(5):
    state, metrics = step(state, batch)
    assert float(metrics["lr_scale"]) == 1.0
  chex.assert_trees_all_equal(before, plateau_node(state.opt_state))


# Validation losses by step for the loop tests: the 3rd round without
# improvement halves at steps 4 and 7; at step 5 one bad round is pending, so
# a resume from step 5 that lost the counters would not halve at step 7.
LOOP_LOSSES = [1.0, 1.5, 1.5, 1.5, 1.2, 1.3, 1.3, 0.5]


def scripted_evaluation(monkeypatch, seen: list):
  """Replaces evaluate_state: validation MSE = LOOP_LOSSES[step - 1]; records
  (step, lr scale of the state it evaluates)."""

  def fake(config, evaluator, state, step, workdir, **kwargs):
    del config, evaluator, workdir, kwargs
    seen.append((step, float(state_lib.learning_rate_scale(state.opt_state))))
    v = LOOP_LOSSES[step - 1]
    return {"checkpoint_step": step, "mse": {"mean": v, "std": 0.0},
            "psnr": {"mean": -10 * math.log10(v), "std": 0.0}}

  monkeypatch.setattr(evaluate, "evaluate_state", fake)


def restore(config, workdir, step=None):
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(model, tx, 32, 0))
  manager = checkpointing.create_manager(str(workdir), config, read_only=True)
  return checkpointing.restore_state(manager, abstract, step)[0]


def test_loop_feeds_each_validation_round_and_the_train_step_traces_once(tmp_path,
                                                                        monkeypatch):
  seen = []
  scripted_evaluation(monkeypatch, seen)
  chex.clear_trace_counter()
  monkeypatch.setattr(train, "train_step", chex.assert_max_traces(train.train_step, n=1))
  config = plateau_config(num_steps=8, log_every=1)
  train.train_and_evaluate(config, str(tmp_path))
  want = reference_plateau(LOOP_LOSSES)
  # Each evaluation sees the scale set by the rounds before it; the final
  # evaluation after the loop repeats step 8's (the rule has moved on).
  scales = [1.0] + [w[0] for w in want]
  assert seen == [(k + 1, s) for k, s in enumerate(scales[:-1])] + [(8, scales[-1])]
  assert counters(restore(config, tmp_path)) == want[-1]
  # The logged learning rate is the one each step applied: the base rate
  # times the scale of the rounds before it (halved from step 5, again at 8).
  logged = writers.read_scalars(tmp_path)["learning_rate"]
  assert [s for s, _ in logged] == list(range(1, 9))
  np.testing.assert_allclose([v for _, v in logged],
                             [config.train.learning_rate * s for s in scales[:-1]], rtol=1e-6)
  assert scales[:-1] == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25]


def test_resume_restores_the_plateau_counters(tmp_path, monkeypatch):
  scripted_evaluation(monkeypatch, [])
  config = plateau_config(num_steps=8)
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_steps = 5           # "killed" after step 5 ...
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  want = reference_plateau(LOOP_LOSSES)
  assert counters(restore(config, tmp_path / "resumed", 5)) == want[4] == (0.5, 1.0, 1)
  config.train.num_steps = 8           # ... and started again with the same command
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  states = [restore(config, tmp_path / name) for name in ("straight", "resumed")]
  assert counters(states[1]) == want[-1] == (0.25, 0.5, 0)
  arrays = [jax.device_get((s.step, s.params, s.opt_state, s.codebook, s.rng)) for s in states]
  chex.assert_trees_all_close(*arrays, atol=1e-6, rtol=0)


def test_the_rule_watches_the_validation_mse_of_the_real_evaluation(tmp_path, monkeypatch):
  real, results = evaluate.evaluate_state, []
  monkeypatch.setattr(evaluate, "evaluate_state",
                      lambda *a, **k: results.append(real(*a, **k)) or results[-1])
  config = plateau_config(num_steps=4, eval_every=2)
  train.train_and_evaluate(config, str(tmp_path))
  assert [r["checkpoint_step"] for r in results] == [2, 4, 4]
  best = min(r["mse"]["mean"] for r in results)
  assert counters(restore(config, tmp_path))[1] == pytest.approx(best, rel=1e-6)


def test_plateau_needs_an_evaluation_cadence():
  from vqjax import config_lib
  config = plateau_config(eval_every=0)
  with pytest.raises(ValueError, match="eval_every"):
    config_lib.validate(config)
