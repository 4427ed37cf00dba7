"""Trains the smoke-size SEMANTICIST (FSQ tokens) on fixed synthetic batches; saves
params, the step metrics and the eval reconstructions.

Run as a script by tests/test_semanticist_train.py, in a fresh process so that
XLA_FLAGS can simulate devices:

  python tests/semanticist_worker.py OUT.npz NUM_DEVICES
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import model_snapshot  # noqa: E402
from parallel_worker import synthetic_batches  # noqa: E402

from vqjax import parallel, train  # noqa: E402
from vqjax import state as state_lib  # noqa: E402
from vqjax.models import create_model  # noqa: E402
from vqjax.quantizers import COLLECTION  # noqa: E402

NUM_STEPS = 4
IMAGE_SIZE = 16  # parallel_worker's synthetic images; global batch 16


def run(num_devices: int) -> dict:
  config = model_snapshot.load_config("configs/semanticist/cpu.py:quantizer=fsq,smoke")
  config.data.image_size = config.model.image_size = IMAGE_SIZE
  config.model.patch_size = config.model.decoder.patch_size = 4
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  state = parallel.replicate(state_lib.create_train_state(model, tx, IMAGE_SIZE, 0), mesh)
  step_fn = train.jit_train_step(mesh, reconstruction_loss="none")
  batches = synthetic_batches(NUM_STEPS)
  logged = []
  for images in batches:
    state, metrics = step_fn(state, parallel.global_batch({"image": images}, mesh))
    logged.append([float(metrics[k]) for k in ("loss", "diffusion", "psnr")])
  eval_fn = jax.jit(lambda params, codebook, x: model.apply(
      {"params": params, COLLECTION: codebook}, x, train=False))
  x_hat, aux = eval_fn(state.params, state.codebook,
                       parallel.global_batch({"image": batches[-1]}, mesh)["image"])
  result = {f"params/{jax.tree_util.keystr(k)}": np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  result["metrics"] = np.asarray(logged)
  result["x_hat"] = np.asarray(x_hat)
  result["indices/tokens"] = np.asarray(aux["levels"]["tokens"]["indices"])
  return result


if __name__ == "__main__":
  np.savez(sys.argv[1], **run(int(sys.argv[2])))
