"""The train state: params and the codebook collection side by side.

`TrainState` is flax's `TrainState` (step, params, optimizer state, `apply_fn`,
`tx`) plus the quantizers' `codebook` collection and the PRNG key, carried
forward by `apply_gradients(grads=..., codebook=...)` as flax's imagenet
example carries `batch_stats`. Here also the optimizer (Adam) and its
learning-rate schedule (decayed once per epoch).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from vqjax import data
from vqjax.quantizers import COLLECTION


class TrainState(train_state.TrainState):
  """Everything that changes during training (all of it is checkpointed).

  step [] int32; params: encoder, projections, decoder (trained by `tx`);
  codebook: the `codebook` collection, one entry per quantizer (EMA state);
  rng: [2] uint32 raw PRNG key, folded with the step in each train step.
  """

  codebook: Any
  rng: jax.Array


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
  constant, times optax.contrib.reduce_on_plateau's scale, which multiplies by
  plateau_factor once the epoch-mean *training* loss (the `value` the train
  step passes) has not improved by plateau_rtol for plateau_patience epochs.
  The train step passes `value=loss` to every optimizer; Adam ignores it.
  """
  t = config.train
  b2 = t.get("adam_b2", 0.999)
  if t.get("lr_schedule", "exponential") == "exponential":
    return optax.adam(learning_rate_schedule(config), b2=b2)
  return optax.chain(
      optax.adam(t.learning_rate, b2=b2),
      optax.contrib.reduce_on_plateau(
          factor=t.plateau_factor, patience=t.plateau_patience, rtol=t.plateau_rtol,
          accumulation_size=steps_per_epoch(config)))


def learning_rate_scale(opt_state) -> jax.Array:
  """The reduce_on_plateau scale in opt_state ([] float32), 1.0 without one."""
  scales = [s.scale for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState))
            if isinstance(s, optax.contrib.ReduceLROnPlateauState)]
  return jnp.asarray(scales[0] if scales else 1.0, jnp.float32)


def create_train_state(model, tx: optax.GradientTransformation, image_size: int,
                       seed: int) -> TrainState:
  """Fresh state (built under jit); the codebooks are initialised from data on
  the first train step."""

  def init() -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = model.init({"params": init_key}, x, train=False)
    return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply,
                      params=variables["params"], tx=tx,
                      opt_state=tx.init(variables["params"]),
                      codebook=variables.get(COLLECTION, {}), rng=train_key)

  return jax.jit(init)()


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def all_finite(*trees) -> jax.Array:
  """[] bool: every floating-point leaf of `trees` is free of NaN and inf."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
