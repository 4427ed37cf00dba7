"""Orbax checkpoints of the train state and the data iterator position.

Layout: `workdir/checkpoints/<step>/{state,data}`; `state` holds params,
optimizer state, codebook collections, step and PRNG key; `data` the grain
iterator state of every process. Saves are atomic (orbax writes to a temporary
directory and renames), so a killed process leaves the previous checkpoint
intact and `train` resumes from it.
"""

from __future__ import annotations

import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the last `config.train.keep_checkpoints` checkpoints."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints, create=not read_only,
      read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, data_iter,
         force: bool = False) -> None:
  """Saves state + iterator position at `step` (asynchronously)."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iter)), force=force)


def abstract_like(state, sharding=None):
  """ShapeDtypeStructs of `state` (optionally placed with `sharding`)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def restore_latest(manager: ocp.CheckpointManager, state, data_iter,
                   sharding=None):
  """(state, data_iter) from the latest checkpoint, or unchanged if there is none.

  `state` is a template (a fresh state or its abstract version); `data_iter` is
  moved in place to the saved position.
  """
  step = manager.latest_step()
  if step is None:
    return state, data_iter
  logging.info("Restoring checkpoint %d from %s", step, manager.directory)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_like(state, sharding)),
      data=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored["state"], data_iter


def restore_state(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """The train state at `step` (default: latest), without the data position."""
  available = manager.all_steps()
  if not available:
    raise FileNotFoundError(
        f"no checkpoint in {manager.directory}: train first "
        "(python -m vqjax.main --mode=train ...) or point --workdir at a run.")
  if step is None or step < 0:
    step = max(available)
  elif step not in available:
    raise ValueError(f"checkpoint step {step} not in {manager.directory}; "
                     f"available steps: {sorted(available)}.")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"], step
