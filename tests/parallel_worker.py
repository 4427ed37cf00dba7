"""Trains a tiny hierarchical model on fixed synthetic batches; saves the result.

Run as a script by tests/test_parallel.py, in a fresh process so that
XLA_FLAGS (simulated devices) and jax.distributed can be set up:

  python tests/parallel_worker.py OUT.npz NUM_DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID]

NUM_DEVICES: how many of the (global) devices the mesh uses. The learning
rate follows the plateau rule (patience 1), advanced after each step by a
scripted validation loss as the train loop does after an evaluation.
"""

import json
import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_config  # noqa: E402

from vqjax import data, parallel, sweep_spec, train  # noqa: E402
from vqjax import state as state_lib  # noqa: E402
from vqjax.quantizers import COLLECTION  # noqa: E402
from vqjax.models import create_model  # noqa: E402

NUM_STEPS = 15
GLOBAL_BATCH = 16
IMAGE_SIZE = 16
# Falls by 10% a step except at steps 5 and 10: the scale halves twice.
VALIDATION = [0.9 ** i if i % 5 else 2.0 for i in range(1, NUM_STEPS + 1)]


def synthetic_batches(num_steps: int) -> np.ndarray:
  """[steps, B, S, S, 3] smooth random images in [-1, 1] (same in every process)."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / IMAGE_SIZE
  coef = rng.uniform(-1, 1, size=(num_steps, GLOBAL_BATCH, 1, 1, 3, 3))
  img = coef[..., 0] * xx[..., None] + coef[..., 1] * yy[..., None] + coef[..., 2] * 0.5
  img += 0.05 * rng.normal(size=img.shape)
  return np.clip(img, -1, 1).astype(np.float32)


def run(num_devices: int) -> dict:
  config = tiny_config("hierarchical", image_size=IMAGE_SIZE, batch_size=GLOBAL_BATCH)
  config.model.quantizer.reset_window = 3       # resets happen within 15 steps
  # Dotted config overrides as JSON, e.g. {"model.quantizer.reset_criterion": "ema"}
  # (tests/test_parallel.py).
  config = sweep_spec.apply_overrides(
      config, json.loads(os.environ.get("VQJAX_MODEL_OVERRIDES", "{}")))
  config.train.lr_schedule, config.train.plateau_patience, config.train.eval_every = (
      "plateau", 1, 1)
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  parallel.check_batch_size(GLOBAL_BATCH, mesh)
  state = parallel.replicate(state_lib.create_train_state(model, tx, IMAGE_SIZE, 0), mesh)
  step_fn = train.jit_train_step(mesh)
  plateau_step = train.jit_plateau_step(config, mesh)
  per_process = GLOBAL_BATCH // jax.process_count()
  rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  resets, lr_scale = [], []
  batches = synthetic_batches(NUM_STEPS)
  for images, value in zip(batches, VALIDATION):
    batch = parallel.global_batch({"image": images[rows]}, mesh)
    state, metrics = step_fn(state, batch)
    resets.append([float(metrics["top/codes_reset"]), float(metrics["bottom/codes_reset"])])
    lr_scale.append(float(metrics["lr_scale"]))
    state = plateau_step(state, value)
  eval_fn = jax.jit(lambda params, codebook, x: model.apply(
      {"params": params, COLLECTION: codebook}, x, train=False)[1]["levels"])
  batch = parallel.global_batch({"image": batches[-1][rows]}, mesh)
  eval_input = data.to_model_range(batch["image"])  # as the train step reads the batch
  levels = eval_fn(state.params, state.codebook, eval_input)
  gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
  result = {f"params/{jax.tree_util.keystr(k)}": np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  result.update({f"codebook/{jax.tree_util.keystr(k)}": np.asarray(v) for k, v in
                 jax.tree_util.tree_leaves_with_path(jax.device_get(state.codebook))})
  for level, aux in levels.items():
    result[f"indices/{level}"] = gather(aux["indices"])
  result["eval_input_std"] = np.asarray(np.std(gather(eval_input)))
  result["resets"] = np.asarray(resets)
  result["lr_scale"] = np.asarray(lr_scale)
  return result


def main(argv):
  out_path, num_devices = argv[1], int(argv[2])
  if len(argv) > 3:
    coordinator, num_processes, process_id = argv[3], int(argv[4]), int(argv[5])
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=num_processes, process_id=process_id)
  result = run(num_devices if num_devices > 0 else jax.device_count())
  if jax.process_index() == 0:
    np.savez(out_path, **result)


if __name__ == "__main__":
  main(sys.argv)
