"""Training: state, the jitted data-parallel train step, the loop, checkpoints.

State is explicit: `params` (trained by optax) and `codebook` (the quantizers'
EMA collection) side by side in one `TrainState`, threaded through one
`jax.jit` that donates the old state. Nothing about the codebook lives in
Python between steps. With config.loss's perceptual and adversarial terms the
same one step also adds LPIPS, and updates a PatchGAN discriminator whose
params and optimizer state sit in the state beside the autoencoder's
(`TrainingLosses`, docs/PERCEPTUAL.md).
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from vqjax import checkpointing, config_lib, data, evaluate, losses, metrics, parallel, writers
from vqjax.models import create_model, vqvae
from vqjax.perceptual import lpips
from vqjax.quantizers import COLLECTION
from vqjax.state import (GANTrainState, TrainState, advance_plateau, all_finite,
                         applied_learning_rate, count_params, create_state_for,
                         learning_rate_scale, plateau_rule, plateau_state,
                         resolve_durations)


class NonFiniteLossError(FloatingPointError):
  """Raised when a train step produces NaN or inf (loss, gradients or state)."""


# -- the train step -----------------------------------------------------------------


def level_metrics(levels: dict) -> dict[str, jax.Array]:
  """Per-level scalar metrics of the quantizers' aux outputs, as '<level>/<key>'."""
  return {f"{name}/{key}": jnp.asarray(value, jnp.float32)
          for name, aux in levels.items() for key, value in aux["metrics"].items()}


@dataclasses.dataclass(frozen=True)
class TrainingLosses:
  """The perceptual and adversarial terms of config.loss (static: compiled into the step).

  lpips_weight > 0: + lpips_weight * mean LPIPS(x, x_hat) (`lpips_network`; the
  reconstruction is not clipped, so the gradient flows). gan_weight > 0: +
  [step >= gan_start_step] * lambda * gan_weight * L_G(D(x_hat)), with lambda
  VQGAN's adaptive weight (`losses.adaptive_weight` on the gradients of L_rec =
  reconstruction + LPIPS term and of L_G at the decoder's last layer) or 1, and
  the discriminator trained on real x against sg(x_hat) from the same step.
  """

  lpips_weight: float = 0.0
  lpips_network: str = "alex"
  gan_weight: float = 0.0
  gan_loss: str = "hinge"
  gan_start_step: int = 0
  adaptive_weight: bool = True

  @property
  def gan(self) -> bool:
    return self.gan_weight > 0


def training_losses(config: ml_collections.ConfigDict) -> TrainingLosses | None:
  """config.loss as a TrainingLosses; None when both terms are off (the plain step)."""
  l = config_lib.loss_config(config)
  if not (l.lpips_weight > 0 or l.gan_weight > 0):
    return None
  return TrainingLosses(lpips_weight=float(l.lpips_weight), lpips_network=l.lpips_network,
                        gan_weight=float(l.gan_weight), gan_loss=l.gan_loss,
                        gan_start_step=int(l.gan_start_step),
                        adaptive_weight=bool(l.adaptive_weight))


def _perceptual_gradients(state: TrainState, forward, recon_of, x, lpips_params,
                          objective: TrainingLosses):
  """(loss, grads, x_hat, aux, codebook, recon, metrics) of the generator with
  config.loss's terms.

  One forward pass (jax.vjp over params to x_hat and the quantizer losses); the
  loss terms are differentiated with respect to x_hat, and the pullback maps
  their sum to the params. The adaptive weight pulls back the reconstruction
  and the adversarial cotangent alone and reads only the decoder's last kernel
  of each (XLA drops the rest of those two pullbacks).
  """

  def outputs(params):
    x_hat, (aux, codebook) = forward(params)
    return (x_hat, sum(aux["losses"].values())), (aux, codebook)

  (x_hat, quant), pull, (aux, codebook) = jax.vjp(outputs, state.params, has_aux=True)

  def rec_fn(x_hat):
    recon = recon_of(x_hat)
    if not objective.lpips_weight:
      return recon, (recon, None)
    perceptual = jnp.mean(lpips.lpips_distance(lpips_params, x, x_hat,
                                               objective.lpips_network))
    return recon + objective.lpips_weight * perceptual, (recon, perceptual)

  (rec, (recon, perceptual)), d_rec = jax.value_and_grad(rec_fn, has_aux=True)(x_hat)
  step_metrics = {} if perceptual is None else {"lpips": perceptual}
  loss, d_x_hat = rec + quant, d_rec
  if objective.gan:
    def g_fn(x_hat):
      logits = state.disc_apply_fn({"params": state.disc_params}, x_hat)
      return losses.generator_loss(objective.gan_loss, logits), logits

    (g_loss, logits_fake), d_g = jax.value_and_grad(g_fn, has_aux=True)(x_hat)
    no_quant = jnp.zeros_like(quant)
    if objective.adaptive_weight:
      weight = losses.adaptive_weight(
          vqvae.last_layer_kernel(pull((d_rec, no_quant))[0]),
          vqvae.last_layer_kernel(pull((d_g, no_quant))[0]))
    else:
      weight = jnp.ones((), jnp.float32)
    on = state.step >= objective.gan_start_step
    factor = jnp.where(on, objective.gan_weight * weight, 0.0)
    # Before the start step the cotangent is d_rec itself (bit for bit the step
    # without the term), whatever the discriminator's gradient holds.
    d_x_hat = jnp.where(on, d_rec + factor * d_g, d_rec)
    loss = loss + jnp.where(on, factor * g_loss, 0.0)
    step_metrics.update(g_loss=g_loss, adaptive_weight=weight, gan_factor=factor,
                        logits_fake=jnp.mean(logits_fake))
  (grads,) = pull((d_x_hat, jnp.ones_like(quant)))
  return loss, grads, x_hat, aux, codebook, recon, step_metrics


def _discriminator_update(state: GANTrainState, new_state: GANTrainState, x, x_hat,
                          objective: TrainingLosses):
  """new_state with the discriminator's step on real x vs sg(x_hat) (from `state`'s
  params), unchanged before gan_start_step; and its metrics."""

  def d_loss_fn(disc_params):
    logits = state.disc_apply_fn({"params": disc_params},
                                 jnp.concatenate([x, jax.lax.stop_gradient(x_hat)]))
    real, fake = logits[:x.shape[0]], logits[x.shape[0]:]
    return losses.discriminator_loss(objective.gan_loss, real, fake), real

  (d_loss, logits_real), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
      state.disc_params)
  stepped = new_state.apply_disc_gradients(grads=d_grads)
  on = state.step >= objective.gan_start_step
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(on, a, b), new, old)
  new_state = new_state.replace(
      disc_params=keep(stepped.disc_params, state.disc_params),
      disc_opt_state=keep(stepped.disc_opt_state, state.disc_opt_state))
  return new_state, dict(d_loss=d_loss, logits_real=jnp.mean(logits_real),
                         disc_grad_norm=optax.tree.norm(d_grads))


def train_step(state: TrainState, batch: dict, lpips_params=None, *,
               skip_nonfinite: bool = False, reconstruction_loss: str = "mse",
               learning_rate_fn=None,
               objective: TrainingLosses | None = None) -> tuple[TrainState, dict]:
  """One step: loss = reconstruction + quantizer losses; Adam on params; EMA on codebooks.

  batch['image']: [B, H, W, 3] uint8, or floats in [-1, 1] (sharded over `data`).
  The reconstruction term is `losses.reconstruction_loss(reconstruction_loss,
  ...)` on the [-1, 1] images: 'mse' (the mean over pixels and channels),
  'arelbo' or 'gaussian_nll' (nats per image; params['decoder_log_var']), or
  'none' (0: the model's losses are the objective, SEMANTICIST's diffusion loss;
  its x_hat is then the one-step x0 estimate, logged as mse and psnr).
  Logged: loss, reconstruction (the term above), every quantizer loss term;
  mse and psnr as evaluation reports them (the mean over images of
  `metrics.per_image_mse` and of its PSNR: pixels on [0, 1], x_hat clipped to
  [0, 1]; for x_hat within [-1, 1] this mse is the [-1, 1] objective's / 4);
  grad_norm, lr_scale (the plateau rule's scale, read and never changed here;
  1 for other schedules), learning_rate (when given learning_rate_fn =
  `state.applied_learning_rate(config)` of state.tx's config: the rate this
  step's update applied, read from state.opt_state), nonfinite and the
  quantizers' metrics per level.
  PRNG streams: 'codebook' = fold_in(rng, step) (EMA init / reset), 'sample' =
  fold_in of that key with 1 (Gumbel noise; SEMANTICIST's cutoffs, timesteps
  and noise).
  `nonfinite` is 1.0 when the loss, a gradient, or the new params or
  codebooks hold a NaN or inf; with skip_nonfinite such a step keeps the old
  state (only the step counter moves on, so the next batch is drawn).

  objective (config.loss's terms, `training_losses`): loss adds
  lpips_weight * LPIPS (lpips_params: the network's weights, an argument so
  they are not constants of the program) and the adversarial term; a
  GANTrainState's discriminator takes its step in the same call. Logged too:
  lpips (the mean LPIPS of the batch), g_loss, d_loss, adaptive_weight (lambda),
  gan_factor (the term's applied weight: 0 before gan_start_step), logits_real
  and logits_fake (means), disc_grad_norm.
  """
  x = data.to_model_range(batch["image"])
  key = jax.random.fold_in(state.rng, state.step)
  rngs = {COLLECTION: key, "sample": jax.random.fold_in(key, 1)}

  def forward(params):
    (x_hat, aux), updates = state.apply_fn(
        {"params": params, COLLECTION: state.codebook}, x, train=True,
        mutable=[COLLECTION], rngs=rngs, step=state.step)
    return x_hat, (aux, updates.get(COLLECTION, {}))

  def recon_of(x_hat, params=None):
    return jnp.mean((x - x_hat) ** 2) if reconstruction_loss == "mse" else (
        losses.reconstruction_loss(reconstruction_loss, x, x_hat,
                                   None if params is None else
                                   params.get(losses.DECODER_LOG_VAR)))

  extra = {}
  if objective is None:
    def loss_fn(params):
      x_hat, (aux, codebook) = forward(params)
      recon = recon_of(x_hat, params)
      return recon + sum(aux["losses"].values()), (x_hat, aux, codebook, recon)

    (loss, (x_hat, aux, codebook, recon)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
  else:
    loss, grads, x_hat, aux, codebook, recon, extra = _perceptual_gradients(
        state, forward, recon_of, x, lpips_params, objective)
  new_state = state.apply_gradients(grads=grads, codebook=codebook)
  checked = [loss, optax.tree.norm(grads), new_state.params, new_state.codebook]
  if objective is not None and objective.gan:
    new_state, d_metrics = _discriminator_update(state, new_state, x, x_hat, objective)
    extra.update(d_metrics)
    checked += [d_metrics["d_loss"], new_state.disc_params]
  grad_norm = checked[1]
  finite = all_finite(*checked)
  if skip_nonfinite:
    kept = state.replace(step=new_state.step)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
  per_image_mse = metrics.per_image_mse(x, x_hat)
  step_metrics = dict(
      loss=loss, reconstruction=recon, **aux["losses"], mse=jnp.mean(per_image_mse),
      psnr=jnp.mean(metrics.psnr_from_mse(per_image_mse)),
      grad_norm=grad_norm, lr_scale=learning_rate_scale(state.opt_state),
      nonfinite=1.0 - finite.astype(jnp.float32),
      **level_metrics(aux["levels"]), **extra)
  if learning_rate_fn is not None:
    step_metrics["learning_rate"] = learning_rate_fn(state.opt_state)
  return new_state, step_metrics


def jit_train_step(mesh, *, skip_nonfinite: bool = False, reconstruction_loss: str = "mse",
                   learning_rate_fn=None, objective: TrainingLosses | None = None):
  """train_step jitted over the mesh: batch sharded, state replicated, state donated.

  Returns step(state, batch) -> (state, metrics); with an LPIPS term the
  network's weights (replicated once here) are passed to every call.
  """
  repl, batch_sharding = parallel.replicated(mesh), parallel.data_sharding(mesh)
  step = functools.partial(train_step, skip_nonfinite=skip_nonfinite,
                           reconstruction_loss=reconstruction_loss,
                           learning_rate_fn=learning_rate_fn, objective=objective)
  if objective is None or not objective.lpips_weight:
    return jax.jit(step, in_shardings=(repl, batch_sharding), out_shardings=(repl, repl),
                   donate_argnums=0)
  jitted = jax.jit(step, in_shardings=(repl, batch_sharding, repl),
                   out_shardings=(repl, repl), donate_argnums=0)
  weights = parallel.replicate(lpips.load_params(objective.lpips_network), mesh)
  return lambda state, batch: jitted(state, batch, weights)


# -- the plateau rule's validation rounds -------------------------------------------


def plateau_value(result: dict) -> float:
  """The validation loss the plateau rule watches: the mean per-image MSE.

  result: evaluate.summarize's dictionary (pixels on [0, 1], reconstructions
  clipped, padding masked out; deterministic codes for SQ levels, the
  default sq_eval_mode). Not the training objective: the EMA baselines (MSE
  + commitment) and the SQ models (ARELBO + entropy + dequantization) have
  objectives in different units, so one rule on the MSE treats every member
  of a comparison alike; the MSE is always positive (a relative threshold on
  ARELBO's log-SSE, which can be negative, would accept slightly worse
  values as improvements); it does not depend on the eval batch size (ARELBO
  takes the log of a batch mean); and it is the reported metric (RMSE, PSNR).
  """
  return float(result["mse"]["mean"])


def jit_plateau_step(config: ml_collections.ConfigDict, mesh):
  """(state, value) -> state after one validation round, jitted (replicated,
  state donated); None when train.lr_schedule is not 'plateau'."""
  if config.train.get("lr_schedule", "exponential") != "plateau":
    return None
  repl = parallel.replicated(mesh)
  advance = jax.jit(functools.partial(advance_plateau, rule=plateau_rule(config)),
                    in_shardings=(repl, repl), out_shardings=repl, donate_argnums=0)
  return lambda state, value: advance(
      state, parallel.replicate(np.asarray(value, np.float32), mesh))


def plateau_scalars(state: TrainState, value: float) -> dict[str, float]:
  """The rule's counters after a validation round, for the log."""
  p = jax.device_get(plateau_state(state.opt_state))
  return {"plateau/value": value, "plateau/best": float(p.best_value),
          "plateau/bad_rounds": float(p.plateau_count), "plateau/lr_scale": float(p.scale)}


# -- the loop ----------------------------------------------------------------------


class _StopRequested:
  """SIGTERM (e.g. SLURM pre-emption) -> save a checkpoint and stop cleanly.

  One process: a Python SIGTERM handler sets `requested`. Several processes:
  JAX's preemption service (started by `jax.distributed.initialize`) owns
  SIGTERM and tells every process; the loop asks orbax's
  `reached_preemption(step)` each step, so all of them stop at the same step.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() > 1:
      return  # a Python handler would replace the preemption service's
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      pass

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _NonFiniteGuard:
  """Reads each step's `nonfinite` flag; stops before a diverged state is saved.

  skip_nonfinite == 0: the first non-finite step stops the run (the step kept
  its update, so the state is diverged and is never saved). n > 0: the train
  step kept the old state for such a batch; the run stops after n in a row.
  """

  def __init__(self, skip_nonfinite: int, manager):
    self.limit = int(skip_nonfinite)
    self.manager = manager
    self.in_a_row = 0
    self.skipped = 0

  def check(self, flags: list[float], last_step: int) -> None:
    """flags: the `nonfinite` metric of the steps ending at `last_step`."""
    first = last_step - len(flags) + 1
    for offset, bad in enumerate(flags):
      if not bad:
        self.in_a_row = 0
        continue
      self.skipped += 1
      self.in_a_row += 1
      if not self.limit or self.in_a_row >= self.limit:
        self._stop(first + offset)

  def _stop(self, step: int) -> None:
    last = self.manager.latest_step() if self.manager is not None else None
    what = ("the loss, a gradient or the new parameters/codebooks became NaN or inf"
            if not self.limit else
            f"{self.in_a_row} steps in a row were non-finite and skipped "
            f"(train.skip_nonfinite={self.limit})")
    raise NonFiniteLossError(
        f"training diverged at step {step}: {what}. Nothing was saved from a "
        f"diverged state; the last good checkpoint is step {last} (resume re-runs "
        "from there). Lower config.train.learning_rate, check the input data, "
        "try config.model.dtype='float32', or set config.train.skip_nonfinite=N "
        "to skip such batches (stopping after N in a row).")


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def _save_unless_saved(manager, step: int, state: TrainState, train_iter) -> None:
  if step and manager.latest_step() != step:
    checkpointing.save(manager, step, state, train_iter, force=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from the latest checkpoint in workdir), then evaluates.

  Logs every train.log_every steps the means of the step metrics over those
  steps (learning_rate: of the rates the steps applied) and skipped_steps.
  Evaluates every train.eval_every steps; with lr_schedule 'plateau' each of
  these validation rounds, the last step's included, advances the plateau
  rule (`plateau_value`) before the step's checkpoint is saved, so a longer
  run resumed from the last checkpoint equals an uninterrupted one. The final
  evaluation writes workdir/eval/ only once the last checkpoint is saved
  (eval/metrics.json marks a finished run); with 'plateau' it repeats the
  last step's round, which is deterministic. Returns the evaluation metrics.
  """
  started = time.monotonic()
  config = resolve_durations(config)
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.data.batch_size, mesh)
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  is_main = jax.process_index() == 0
  checkpointing.check_writable(workdir)
  writer = writers.create_writer(workdir, just_logging=not is_main)

  model = create_model(config.model)
  train_loader = data.create_train_loader(
      config.data, seed=config.seed, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  # The next batches are prepared in a background thread while a step runs
  # (data.prefetch; checkpoints keep the position of the batches consumed).
  train_iter = data.prefetch(iter(train_loader), int(config.data.get("prefetch", 0)))

  state = create_state_for(config, model)
  checkpointing.check_disk_space(workdir, state)
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

  step_fn = jit_train_step(
      mesh, skip_nonfinite=config.train.skip_nonfinite > 0,
      reconstruction_loss=config.train.get("reconstruction_loss", "mse"),
      learning_rate_fn=applied_learning_rate(config), objective=training_losses(config))
  evaluator = evaluate.Evaluator(config, model, mesh)
  plateau_step = jit_plateau_step(config, mesh)
  guard = _NonFiniteGuard(config.train.skip_nonfinite, manager)
  num_steps = config.train.num_steps
  periodic_actions = writers.periodic_actions()
  # Steps/s, ETA and the share of time in each timed(...) section (data,
  # train_step, eval, checkpoint) in every progress line: input- or compute-bound.
  report = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.train.log_every,
      every_secs=None)
  hooks = [report]
  if config.train.profile and is_main:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5,
                                          first_profile=initial_step + 10))
  stop = _StopRequested()
  history, flags = [], []
  step = initial_step
  logged_last = False  # the last step's evaluation is in the log already
  try:
    while step < num_steps and not stop.requested:
      with report.timed("data", wait_jax_async_dispatch=False):
        batch = parallel.global_batch(next(train_iter), mesh)
      with report.timed("train_step"):
        state, step_metrics = step_fn(state, batch)
      history.append(step_metrics)
      flags.append(step_metrics["nonfinite"])
      step += 1
      if step == initial_step + 1:
        jax.block_until_ready(step_metrics)
        logging.info("First train step done %.1f s after start (compilation or the "
                     "compilation cache included).", time.monotonic() - started)
      for hook in hooks:
        hook(step)
      is_last = step == num_steps
      is_save = manager.should_save(step) or is_last
      if step % config.train.log_every == 0 or is_last or is_save:
        # Never log or save past a diverged step (the flag covers the new state).
        guard.check([float(f) for f in jax.device_get(flags)], step)
        flags = []
      if history and (step % config.train.log_every == 0 or is_last):
        summary = _mean_metrics(history)
        history = []
        summary["skipped_steps"] = float(guard.skipped)
        writer.write_scalars(step, summary)
      # The last step's round matters only to the plateau rule (the final
      # evaluation below covers it otherwise).
      if (config.train.eval_every and step % config.train.eval_every == 0
          and (not is_last or plateau_step is not None)):
        with report.timed("eval"):
          evaluated = evaluate.evaluate_state(config, evaluator, state, step, workdir,
                                              writer=writer, write_files=False)
        logged_last = is_last
        if plateau_step is not None:
          value = plateau_value(evaluated)
          state = plateau_step(state, value)
          writer.write_scalars(step, plateau_scalars(state, value))
      if is_save:
        with report.timed("checkpoint"):
          checkpointing.save(manager, step, state, train_iter, force=is_last)
      if jax.process_count() > 1 and manager.reached_preemption(step):
        logging.warning("Preemption notice: every process stops at step %d.", step)
        stop.requested = True  # every process stops at this same step
  except KeyboardInterrupt:
    logging.warning("Interrupted at step %d: saving a checkpoint.", step)
    try:
      guard.check([float(f) for f in jax.device_get(flags)], step)
      _save_unless_saved(manager, step, state, train_iter)
    except Exception as e:  # e.g. interrupted inside a step: its state was donated
      logging.warning("Could not save step %d (%s); the last checkpoint is step %s.",
                      step, e, manager.latest_step())
    raise
  finally:
    stop.restore()
    manager.wait_until_finished()  # never leave a half-written save behind
    if hasattr(train_iter, "close"):
      train_iter.close()
  if stop.requested:
    guard.check([float(f) for f in jax.device_get(flags)], step)
    _save_unless_saved(manager, step, state, train_iter)
    manager.wait_until_finished()
    logging.warning("Stopped at step %d on request (checkpoint saved); resume with the "
                    "same command.", step)
    return {"stopped_at_step": int(step)}
  result = evaluate.evaluate_state(config, evaluator, state, step, workdir,
                                   writer=None if logged_last else writer, write_files=True)
  writer.flush()
  return result
