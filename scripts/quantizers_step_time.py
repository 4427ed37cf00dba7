"""Train-step time of every member of configs/sweeps/quantizers.py, interleaved.

  python scripts/quantizers_step_time.py docs/quantizers/step_time.json

On a shared, loaded machine a member's wall time depends on what else ran
then; here every member's jitted `train.jit_train_step` is compiled first, then
the members take turns (ROUNDS rounds of STEPS steps each, on one fixed batch of
the config's shape), so load changes hit all of them alike. Writes the median
and min seconds per step over the rounds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

from vqjax import parallel, train
from vqjax.experiments import sweep_spec
from vqjax.models import create_model
from vqjax.state import create_optimizer, create_train_state

ROUNDS, STEPS = 5, 10
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(out_path: str) -> None:
  spec = importlib.util.spec_from_file_location("qcfg", os.path.join(REPO, "configs",
                                                                     "quantizers.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  mesh = parallel.create_mesh()
  size, batch_size = base.data.image_size, base.data.batch_size
  images = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), np.uint8)
  batch = parallel.global_batch({"image": images}, mesh)
  members = {}
  for member in sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/quantizers.py"), base):
    config = sweep_spec.apply_overrides(base, member)
    model = create_model(config.model)
    state = parallel.replicate(create_train_state(model, create_optimizer(config), size, 0),
                               mesh)
    step = train.jit_train_step(mesh, reconstruction_loss=config.train.reconstruction_loss)
    state, metrics = step(state, batch)           # compile
    jax.block_until_ready(metrics)
    members[member["name"]] = [step, state, []]
  for _ in range(ROUNDS):
    for name, entry in members.items():
      step, state, times = entry
      start = time.perf_counter()
      for _ in range(STEPS):
        state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      times.append((time.perf_counter() - start) / STEPS)
      entry[1] = state
  result = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)),
                   "rounds": ROUNDS, "steps_per_round": STEPS}
            for name, (_, _, t) in members.items()}
  with open(out_path, "w") as f:
    json.dump(result, f, indent=2)
  for name, r in result.items():
    print(f"{name:18s} median {1000 * r['median_s']:7.1f} ms/step  min {1000 * r['min_s']:7.1f}")


if __name__ == "__main__":
  main(sys.argv[1])
