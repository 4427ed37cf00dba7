"""Orbax checkpoints of the train state and the data iterator position.

Layout: `workdir/checkpoints/<step>/{state,data}`; `state` holds params,
optimizer state, codebook collections, step and PRNG key; `data` the grain
iterator state of every process. Saves are atomic (orbax writes to a temporary
directory and renames), so a killed process leaves the previous checkpoint
intact and `train` resumes from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def check_writable(workdir: str) -> None:
  """PermissionError at start, not at the first save, when the checkpoint
  directory of `workdir` cannot be created or written."""
  directory = checkpoint_dir(workdir)
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test"):
      pass
  except OSError as e:
    raise PermissionError(
        f"cannot write checkpoints into {directory} ({type(e).__name__}: {e}). "
        "Pass a --workdir you can write to, or fix its permissions.") from e


def check_disk_space(workdir: str, state) -> None:
  """OSError at start when the disk lacks room for one checkpoint of `state`
  (its array bytes plus 10%)."""
  directory = checkpoint_dir(workdir)
  needed = int(1.1 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)
                         if hasattr(x, "dtype")))
  free = shutil.disk_usage(directory).free
  if free < needed:
    raise OSError(
        f"not enough disk space for a checkpoint in {directory}: one needs about "
        f"{needed / 2**20:.1f} MiB, the disk has {free / 2**20:.1f} MiB free. Free "
        "some space or pass a --workdir on a larger disk.")


def create_manager(workdir: str, config: ml_collections.ConfigDict,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Saves every `config.train.checkpoint_every` steps (`manager.should_save`)
  and keeps the last `config.train.keep_checkpoints`."""
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
          config.train.checkpoint_every),
      preservation_policy=ocp.checkpoint_managers.LatestN(config.train.keep_checkpoints),
      create=not read_only, read_only=read_only)
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
  check_same_shapes(os.path.join(str(manager.directory), str(step), "state"), state)
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
  check_same_shapes(os.path.join(str(manager.directory), str(step), "state"), abstract_state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"], step


def _path_name(path) -> str:
  """'params/encoder/Conv_0/kernel' for a tree path of dict keys or attributes."""
  parts = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
  return "/".join(parts)


def check_same_shapes(state_dir: str, abstract_state) -> None:
  """ValueError naming the first array whose shape differs between the saved
  state in `state_dir` and `abstract_state` (a checkpoint of another config)."""
  metadata = ocp.StandardCheckpointer().metadata(state_dir)
  saved = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(
      getattr(metadata, "item_metadata", metadata)) if hasattr(m, "shape")}
  wanted = {_path_name(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
  hint = ("Evaluate with the config the run was trained with (its workdir holds "
          "config.json), or point --workdir at a run of this config.")
  for name, shape in wanted.items():
    if name not in saved:
      raise ValueError(f"the checkpoint in {state_dir} was written by another "
                       f"configuration: it has no {name} (shape {shape} here). {hint}")
    if saved[name] != shape:
      raise ValueError(f"the checkpoint in {state_dir} was written by another "
                       f"configuration: {name} has shape {saved[name]} in the "
                       f"checkpoint and {shape} in this config. {hint}")
  extra = sorted(set(saved) - set(wanted))
  if extra:
    raise ValueError(f"the checkpoint in {state_dir} was written by another "
                     f"configuration: it holds {extra[0]} (shape {saved[extra[0]]}), "
                     f"which this config does not have. {hint}")
