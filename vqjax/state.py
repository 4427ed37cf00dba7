"""The train state: params and the codebook collection side by side.

`TrainState` is flax's `TrainState` (step, params, optimizer state, `apply_fn`,
`tx`) plus the quantizers' `codebook` collection and the PRNG key. The train
step moves it on with `apply_gradients(grads=..., codebook=...)` (tx.update
and optax.apply_updates on params, step + 1, the step's new codebooks), as
flax's imagenet example carries `batch_stats`; the key never changes (each
step folds in its step number). Here also the optimizer (Adam) and its
learning-rate schedule: decayed once per epoch, or halved when the validation
loss stops improving (the plateau rule, whose state is part of opt_state).

With a GAN term (config.loss.gan_weight > 0) the state is a `GANTrainState`:
the same fields plus the discriminator's params and its own optax state
(`disc_tx`: Adam with VQGAN's betas). Without one it is a plain `TrainState`,
so runs with the adversarial loss off keep the state tree (and the
checkpoints) of before.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from vqjax import config_lib, data
from vqjax.models import discriminator as discriminator_lib
from vqjax.quantizers import COLLECTION


class TrainState(train_state.TrainState):
  """Everything that changes during training (all of it is checkpointed).

  step [] int32; params: encoder, projections, decoder (trained by `tx`);
  codebook: the `codebook` collection, one entry per quantizer (EMA state);
  rng: [2] uint32 raw PRNG key, folded with the step in each train step.
  """

  codebook: Any
  rng: jax.Array


class GANTrainState(TrainState):
  """TrainState plus the PatchGAN discriminator (config.loss.gan_weight > 0).

  disc_params: the discriminator's params (trained by `disc_tx`, never by `tx`);
  disc_opt_state: disc_tx's state; disc_apply_fn: the discriminator's apply.
  """

  disc_params: Any
  disc_opt_state: Any
  disc_apply_fn: Callable = struct.field(pytree_node=False)
  disc_tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_disc_gradients(self, *, grads) -> "GANTrainState":
    """The discriminator's update (disc_tx); the rest of the state as it is."""
    updates, opt_state = self.disc_tx.update(grads, self.disc_opt_state, self.disc_params)
    return self.replace(disc_params=optax.apply_updates(self.disc_params, updates),
                        disc_opt_state=opt_state)


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """config.train.steps_per_epoch, or examples per epoch / global batch size."""
  if config.train.steps_per_epoch:
    return int(config.train.steps_per_epoch)
  examples = data.num_train_examples(config.data)
  return max(1, math.ceil(examples / config.data.batch_size))


def resolve_durations(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy with train.num_epochs / eval_every_epochs turned into steps.

  The one place where epochs become steps: `steps_per_epoch(config)` steps
  per epoch (config.train.steps_per_epoch, else the train split's size over
  the global batch). Configs without epochs are returned unchanged.
  """
  t = config.train
  if not t.get("num_epochs", 0) and not t.get("eval_every_epochs", 0):
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  per_epoch = steps_per_epoch(config)
  if config.train.num_epochs:
    config.train.num_steps = config.train.num_epochs * per_epoch
  if config.train.eval_every_epochs:
    config.train.eval_every = config.train.eval_every_epochs * per_epoch
  config.train.num_epochs = config.train.eval_every_epochs = 0
  return config


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """learning_rate * lr_decay_rate ** epoch, the epoch counted in whole epochs."""
  return optax.exponential_decay(
      init_value=config.train.learning_rate,
      transition_steps=steps_per_epoch(config),
      decay_rate=config.train.lr_decay_rate, staircase=True)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(b1 0.9, b2 train.adam_b2) with the learning rate of train.lr_schedule.

  'exponential': decayed by `lr_decay_rate` once per epoch. 'plateau' (HQ-VAE):
  constant, times the scale of `scale_by_plateau`, which only the validation
  rounds change (`advance_plateau`, called by the train loop after each
  evaluation); the train step never moves it.
  """
  t = config.train
  b2 = t.get("adam_b2", 0.999)
  if t.get("lr_schedule", "exponential") == "exponential":
    return optax.adam(learning_rate_schedule(config), b2=b2)
  return optax.chain(optax.adam(t.learning_rate, b2=b2),
                     scale_by_plateau(plateau_rule(config)))


# -- the plateau rule: the scale and its counters live in the optimizer state ------


def plateau_rule(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  """optax.contrib.reduce_on_plateau fed one validation loss per call.

  The scale is multiplied by train.plateau_factor at the plateau_patience-th
  validation round in a row whose loss is not below (1 - plateau_rtol) * best
  (the count then restarts; no cooldown): "halve the learning rate after 3
  validation rounds without improvement" (HQ-VAE App. F). PyTorch's
  ReduceLROnPlateau(patience=3) of the released SQ-VAE code halves one round
  later (after the 4th); plateau_patience=4 reproduces it.
  """
  t = config.train
  return optax.contrib.reduce_on_plateau(
      factor=t.plateau_factor, patience=t.plateau_patience, rtol=t.plateau_rtol,
      accumulation_size=1)


def scale_by_plateau(rule: optax.GradientTransformationExtraArgs
                     ) -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates by the scale in `rule`'s state and leaves that state as it is.

  State: optax's ReduceLROnPlateauState (scale [] float32, best_value [],
  plateau_count [] int32, ...), checkpointed with the rest of opt_state.
  """

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: state.scale * u, updates), state

  return optax.GradientTransformationExtraArgs(rule.init, update_fn)


def _is_plateau(x) -> bool:
  return isinstance(x, optax.contrib.ReduceLROnPlateauState)


def _nodes(opt_state, cls) -> list:
  """The states of type `cls` (optax NamedTuples) inside opt_state."""
  is_node = lambda x: isinstance(x, cls)
  return [x for x in jax.tree.leaves(opt_state, is_leaf=is_node) if is_node(x)]


def plateau_state(opt_state) -> optax.contrib.ReduceLROnPlateauState | None:
  """The plateau rule's state inside opt_state (None for other schedules)."""
  found = _nodes(opt_state, optax.contrib.ReduceLROnPlateauState)
  return found[0] if found else None


def advance_plateau(state: TrainState, value: jax.Array, *,
                    rule: optax.GradientTransformationExtraArgs) -> TrainState:
  """`state` after one validation round with loss `value` [] (pure; jit it).

  Updates only the ReduceLROnPlateauState in state.opt_state (same shapes and
  dtypes, so the jitted train step does not retrace); a state without one is
  returned unchanged.
  """
  opt_state = jax.tree.map(
      lambda x: rule.update({}, x, value=value)[1] if _is_plateau(x) else x,
      state.opt_state, is_leaf=_is_plateau)
  return state.replace(opt_state=opt_state)


def learning_rate_scale(opt_state) -> jax.Array:
  """The plateau rule's scale in opt_state ([] float32), 1.0 without one."""
  node = plateau_state(opt_state)
  return jnp.asarray(1.0 if node is None else node.scale, jnp.float32)


def applied_learning_rate(config: ml_collections.ConfigDict
                          ) -> Callable[[Any], jax.Array]:
  """opt_state -> the learning rate [] float32 that the next update of
  `create_optimizer(config)` from this opt_state applies (jit-friendly).

  'exponential': the schedule at the optimizer's own update count (optax's
  ScaleByScheduleState in opt_state): state.step, except after steps that
  skip_nonfinite skipped, which leave opt_state, its count included, as it
  was. 'plateau': train.learning_rate times the plateau scale in opt_state.
  """
  if config.train.get("lr_schedule", "exponential") == "plateau":
    base = config.train.learning_rate
    return lambda opt_state: base * learning_rate_scale(opt_state)
  schedule = learning_rate_schedule(config)

  def exponential(opt_state) -> jax.Array:
    found = _nodes(opt_state, optax.ScaleByScheduleState)
    if len(found) != 1:
      raise ValueError("applied_learning_rate(config) with lr_schedule='exponential' "
                       "reads the opt_state of create_optimizer(config), which holds one "
                       f"optax ScaleByScheduleState; this one holds {len(found)}.")
    return jnp.asarray(schedule(found[0].count), jnp.float32)

  return exponential


def create_disc_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(loss.disc_b1, loss.disc_b2) at the constant loss.disc_learning_rate."""
  l = config_lib.loss_config(config)
  return optax.adam(l.disc_learning_rate, b1=l.disc_b1, b2=l.disc_b2)


# The discriminator's init key: fold_in(PRNGKey(seed), DISC_KEY), apart from the
# autoencoder's keys (split(PRNGKey(seed))), which stay those of runs without it.
DISC_KEY = 0x6761


def create_train_state(model, tx: optax.GradientTransformation, image_size: int,
                       seed: int, discriminator=None,
                       disc_tx: optax.GradientTransformation | None = None) -> TrainState:
  """Fresh state (built under jit); the codebooks are initialised from data on
  the first train step. With a `discriminator` (a Flax module on images) and
  its `disc_tx`: a GANTrainState."""

  def init() -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = model.init({"params": init_key}, x, train=False)
    fields = dict(step=jnp.zeros((), jnp.int32), apply_fn=model.apply,
                  params=variables["params"], tx=tx,
                  opt_state=tx.init(variables["params"]),
                  codebook=variables.get(COLLECTION, {}), rng=train_key)
    if discriminator is None:
      return TrainState(**fields)
    disc_params = discriminator.init(
        jax.random.fold_in(jax.random.PRNGKey(seed), DISC_KEY), x)["params"]
    return GANTrainState(**fields, disc_params=disc_params,
                         disc_opt_state=disc_tx.init(disc_params),
                         disc_apply_fn=discriminator.apply, disc_tx=disc_tx)

  return jax.jit(init)()


def create_state_for(config: ml_collections.ConfigDict, model, seed: int | None = None
                     ) -> TrainState:
  """The fresh train state of `config`: create_train_state with
  create_optimizer(config), and the discriminator when config.loss.gan_weight > 0."""
  l = config_lib.loss_config(config)
  disc = discriminator_lib.create_discriminator(l) if l.gan_weight > 0 else None
  return create_train_state(model, create_optimizer(config), config.data.image_size,
                            config.seed if seed is None else seed, discriminator=disc,
                            disc_tx=create_disc_optimizer(config) if disc else None)


def count_params(params) -> int:
  """Number of scalars in the pytree `params`."""
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def all_finite(*trees) -> jax.Array:
  """[] bool: every floating-point leaf of `trees` is free of NaN and inf."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
