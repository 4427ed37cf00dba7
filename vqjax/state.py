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

from vqjax import input_pipeline
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
