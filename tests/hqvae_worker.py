"""Three SQ-VAE-2 train steps through train.jit_train_step on a 1- and an 8-device mesh.

Run by tests/test_hqvae_train.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=8:

  python tests/hqvae_worker.py OUT.npz

The config is configs/hqvae/cpu_sqvae2.py's model at smoke size (ARELBO,
Adam (0.9, 0.9), the plateau rule with patience 1, advanced after each step
by a scripted validation loss as the train loop does after an evaluation).
Saves '<devices>:<name>' for the params, the optimizer state and every logged
metric of each step.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from vqjax import config_lib, parallel, train
from vqjax.experiments import hqvae_configs
from vqjax import state as state_lib
from vqjax.models import create_model

BATCH, IMAGE, STEPS = 16, 16, 3
VALIDATION = (1.0, 1.5, 1.5)  # patience 1: the scale halves after rounds 2 and 3


def flat(prefix, tree):
  return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def run(num_devices: int, images: np.ndarray) -> dict:
  config = hqvae_configs.hqvae_config("injected_topdown", num_codes=16, num_pools=2,
                                      num_steps=STEPS)
  config = hqvae_configs.apply_hqvae_options(config, "smoke")
  config.data.image_size = IMAGE
  config.model.quantizer.tau_rate = 0.1
  config.train.plateau_patience = 1
  config_lib.validate(config)
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  state = parallel.replicate(state_lib.create_train_state(model, tx, IMAGE, 0), mesh)
  step_fn = train.jit_train_step(mesh, reconstruction_loss="arelbo")
  plateau_step = train.jit_plateau_step(config, mesh)
  result = {}
  for i, batch in enumerate(images):
    state, metrics = step_fn(state, parallel.global_batch({"image": batch}, mesh))
    result.update(flat(f"{num_devices}:metrics{i}/", metrics))
    state = plateau_step(state, VALIDATION[i])
    assert state.opt_state[1].scale.sharding.is_fully_replicated
  result.update(flat(f"{num_devices}:params/", state.params))
  result.update(flat(f"{num_devices}:opt_state/", state.opt_state))
  return result


def main(out_path):
  assert jax.device_count() == 8, jax.devices()
  images = np.random.default_rng(0).integers(0, 256, (STEPS, BATCH, IMAGE, IMAGE, 3),
                                             dtype=np.uint8)
  result = {}
  for n in (1, 8):
    result.update(run(n, images))
  np.savez(out_path, **result)


if __name__ == "__main__":
  main(sys.argv[1])
