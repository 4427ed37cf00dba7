"""Training: state, the jitted data-parallel train step, the loop, checkpoints.

State is explicit: `params` (trained by optax) and `codebook` (the quantizers'
EMA collection) side by side in one `TrainState`, threaded through one
`jax.jit` that donates the old state. Nothing about the codebook lives in
Python between steps.
"""

from __future__ import annotations

import functools
import math
import signal
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from vqjax import checkpointing, input_pipeline, metrics, parallel, writers
from vqjax.models import create_model, level_names
from vqjax.quantizers.ema_vq import COLLECTION


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training (all of it is checkpointed)."""

  step: jax.Array            # [] int32
  params: Any                # encoder, projections, decoder
  codebook: Any              # the `codebook` collection, one entry per level
  opt_state: Any
  rng: jax.Array             # [2] uint32 raw PRNG key (checkpoint-friendly)


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss becomes NaN or inf."""


# -- state ------------------------------------------------------------------------


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """config.train.steps_per_epoch, or examples per epoch / global batch size."""
  if config.train.steps_per_epoch:
    return int(config.train.steps_per_epoch)
  examples = input_pipeline.num_train_examples(config.data)
  return max(1, math.ceil(examples / config.data.batch_size))


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """learning_rate * lr_decay_rate ** epoch, the epoch counted in whole epochs."""
  return optax.exponential_decay(
      init_value=config.train.learning_rate,
      transition_steps=steps_per_epoch(config),
      decay_rate=config.train.lr_decay_rate, staircase=True)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with the learning rate decayed by `lr_decay_rate` once per epoch."""
  return optax.adam(learning_rate_schedule(config))


def create_train_state(model, tx, image_size: int, seed: int) -> TrainState:
  """Fresh state (built under jit); the codebooks are initialised from data on the first step."""

  def init() -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = model.init({"params": init_key}, x, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      codebook=variables[COLLECTION], opt_state=tx.init(params),
                      rng=train_key)

  return jax.jit(init)()


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


# -- steps -------------------------------------------------------------------------


def level_metrics(levels: dict) -> dict[str, jax.Array]:
  """Per-level scalar metrics of the quantizers' aux outputs."""
  return {f"{name}/{key}": jnp.asarray(value, jnp.float32)
          for name, aux in levels.items() for key, value in aux["metrics"].items()}


def train_step(state: TrainState, batch: dict, *, model, tx) -> tuple[TrainState, dict]:
  """One step: loss = MSE(x, x_hat) + commitment; Adam on params; EMA on codebooks.

  batch['image']: [B, H, W, 3] uint8, or floats in [-1, 1] (sharded over `data`).
  MSE is the mean over pixels and channels of the [-1, 1] images; `psnr` is on [0, 1].
  """
  x = input_pipeline.to_model_range(batch["image"])
  key = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    (x_hat, aux), updates = model.apply(
        {"params": params, COLLECTION: state.codebook}, x, train=True,
        mutable=[COLLECTION], rngs={COLLECTION: key}, step=state.step)
    mse = jnp.mean((x - x_hat) ** 2)
    return mse + sum(aux["losses"].values()), (x_hat, aux, updates[COLLECTION], mse)

  grads, (x_hat, aux, codebook, mse) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            codebook=codebook, opt_state=opt_state)
  step_metrics = dict(
      loss=mse + sum(aux["losses"].values()), mse=mse, **aux["losses"],
      psnr=jnp.mean(metrics.per_image_psnr(x, x_hat)),
      grad_norm=optax.tree.norm(grads), **level_metrics(aux["levels"]))
  return new_state, step_metrics


def eval_step(params, codebook, batch: dict, *, model, num_codes: int) -> dict:
  """Frozen-codebook forward pass.

  Returns per-image `psnr` and `mse` [B], per-level code `counts` [K] over the
  images with mask True, the reconstructions `x_hat` and per-level `indices`.
  batch['image'] as in `train_step`.
  """
  x = input_pipeline.to_model_range(batch["image"])
  x_hat, aux = model.apply({"params": params, COLLECTION: codebook}, x, train=False)
  mask = batch["mask"]
  counts = {}
  for name, level in aux["levels"].items():
    idx = level["indices"].reshape(x.shape[0], -1)
    weights = jnp.broadcast_to(mask[:, None], idx.shape).astype(jnp.float32)
    counts[name] = jax.ops.segment_sum(weights.reshape(-1), idx.reshape(-1),
                                       num_segments=num_codes)
  return dict(psnr=metrics.per_image_psnr(x, x_hat),
              mse=metrics.per_image_mse(x, x_hat), counts=counts, x_hat=x_hat,
              indices={name: level["indices"] for name, level in aux["levels"].items()})


def jit_train_step(model, tx, mesh):
  """train_step jitted over the mesh: batch sharded, state replicated, state donated."""
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(functools.partial(train_step, model=model, tx=tx),
                 in_shardings=(repl, data), out_shardings=(repl, repl),
                 donate_argnums=0)


def jit_eval_step(model, num_codes, mesh):
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model, num_codes=num_codes),
                 in_shardings=(repl, repl, data))


# -- the loop ----------------------------------------------------------------------


class _StopRequested:
  """SIGTERM (e.g. SLURM pre-emption) -> save a checkpoint and stop cleanly."""

  def __init__(self):
    self.requested = False
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def _check_finite(summary: dict[str, float], step: int, manager) -> None:
  if not math.isfinite(summary["loss"]):
    last = manager.latest_step() if manager is not None else None
    raise NonFiniteLossError(
        f"training loss became {summary['loss']} at step {step}. Nothing was "
        f"saved from the diverged state; the last good checkpoint is step {last} "
        "(resume re-runs from there). Lower config.train.learning_rate, check the "
        "input data for NaNs/constant images, or try config.model.dtype='float32'.")


def _save_unless_saved(manager, step: int, state: TrainState, train_iter) -> None:
  if step and manager.latest_step() != step:
    checkpointing.save(manager, step, state, train_iter, force=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in workdir), then evaluates.

  Returns the evaluation metrics (also written to workdir/eval/metrics.json).
  """
  from vqjax import evaluate  # evaluate imports train's steps

  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.data.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  is_main = jax.process_index() == 0
  writer = writers.create_writer(workdir, just_logging=not is_main)

  model = create_model(config.model)
  tx = create_optimizer(config)
  schedule = learning_rate_schedule(config)
  train_loader = input_pipeline.create_train_loader(
      config.data, seed=config.seed, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  train_iter = iter(train_loader)

  state = create_train_state(model, tx, config.data.image_size, config.seed)
  manager = checkpointing.create_manager(workdir, config)
  state, train_iter = checkpointing.restore_latest(
      manager, state, train_iter, sharding=parallel.replicated(mesh))
  initial_step = int(state.step)
  if initial_step:
    logging.info("Resumed from checkpoint at step %d.", initial_step)
  else:
    logging.info("%s model with %s trainable parameters (%s).", config.model.kind,
                 f"{count_params(state.params):,}",
                 ", ".join(f"{k}={v}" for k, v in sorted(config.model.items())))
    writer.write_hparams({k: v for k, v in config.model.items()
                          if isinstance(v, (int, float, str, bool))})
  state = parallel.replicate(state, mesh)

  step_fn = jit_train_step(model, tx, mesh)
  num_steps = config.train.num_steps
  reporter = writers.ProgressReporter(num_steps, writer) if is_main else None
  stop = _StopRequested()
  history = []
  step = initial_step
  try:
    while step < num_steps and not stop.requested:
      batch = parallel.global_batch(next(train_iter), mesh)
      state, step_metrics = step_fn(state, batch)
      history.append(step_metrics)
      step += 1
      if reporter is not None:
        reporter(step)
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        summary = _mean_metrics(history)
        history = []
        _check_finite(summary, step, manager)
        summary["learning_rate"] = float(schedule(step - 1))
        writer.write_scalars(step, summary)
      if config.train.eval_every and step % config.train.eval_every == 0 and not is_last:
        evaluate.evaluate_state(config, model, state, step, workdir, mesh,
                                writer=writer, write_files=False)
      if step % config.train.checkpoint_every == 0 or is_last:
        # Never save a diverged state (the loss is NaN from the step it diverged).
        _check_finite({"loss": float(step_metrics["loss"])}, step, manager)
        checkpointing.save(manager, step, state, train_iter)
  except KeyboardInterrupt:
    logging.warning("Interrupted at step %d: saving a checkpoint.", step)
    try:
      _save_unless_saved(manager, step, state, train_iter)
    except Exception as e:  # e.g. interrupted inside a step: its state was donated
      logging.warning("Could not save step %d (%s); the last checkpoint is step %s.",
                      step, e, manager.latest_step())
    raise
  finally:
    stop.restore()
    manager.wait_until_finished()  # never leave a half-written save behind
  if stop.requested:
    _save_unless_saved(manager, step, state, train_iter)
    manager.wait_until_finished()
    logging.info("Stopped at step %d on request; resume with the same command.", step)
    return {}
  manager.wait_until_finished()
  result = evaluate.evaluate_state(config, model, state, step, workdir, mesh,
                                   writer=writer, write_files=True)
  writer.flush()
  return result
