"""Train img/s of the jitted data-parallel step on 1 vs N (simulated) devices.

On a CPU the N devices are simulated with
XLA_FLAGS=--xla_force_host_platform_device_count=N and share the same cores, so
this measures the overhead of sharding (collectives, partitioned programs), not
a speed-up. On a GPU machine it measures the real thing.

  python benchmarks/data_parallel.py [--devices 1,8] [--config a] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(num_devices: int, kind: str, image_size: int, batch: int, steps: int, warmup: int):
  import jax
  import numpy as np
  sys.path.insert(0, REPO)
  from vqjax import config_lib, parallel, train
  from vqjax import state as state_lib
  from vqjax.models import create_model

  config = config_lib.base_config()
  config.train.steps_per_epoch = 30
  config.model = (config_lib.single_model(4096, 8, image_size) if kind == "single"
                  else config_lib.hierarchical_model(4096, 8))
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh(jax.devices()[:num_devices])
  parallel.check_batch_size(batch, mesh)
  state = parallel.replicate(state_lib.create_train_state(model, tx, image_size, 0), mesh)
  step = train.jit_train_step(mesh)
  images = np.random.default_rng(0).uniform(-1, 1, (batch, image_size, image_size, 3))
  batch_arrays = parallel.global_batch({"image": images.astype(np.float32)}, mesh)
  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, m = step(state, batch_arrays)
    jax.block_until_ready((state, m))
    if i >= warmup:
      times.append(time.perf_counter() - t)
  print(json.dumps({"devices": num_devices, "img_per_s": batch / float(np.median(times)),
                    "backend": jax.default_backend()}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,8")
  parser.add_argument("--kind", default="single", choices=["single", "hierarchical"])
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--child", type=int, default=0)
  args = parser.parse_args()
  if args.child:
    child(args.child, args.kind, args.image_size, args.batch, args.steps, args.warmup)
    return
  counts = [int(n) for n in args.devices.split(",")]
  results = []
  for n in counts:
    env = dict(os.environ)
    if "JAX_PLATFORMS" not in env or env["JAX_PLATFORMS"] == "cpu":
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(counts)}"
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--kind", args.kind,
                          "--image-size", str(args.image_size), "--batch", str(args.batch),
                          "--steps", str(args.steps), "--warmup", str(args.warmup)],
                         env=env, capture_output=True, text=True, check=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
  base = results[0]["img_per_s"]
  print(f"{args.kind} D=8, {args.image_size}x{args.image_size}, global batch {args.batch}, "
        f"backend {results[0]['backend']}")
  for r in results:
    print(f"  {r['devices']} device(s): {r['img_per_s']:.1f} img/s ({r['img_per_s'] / base:.2f}x)")


if __name__ == "__main__":
  main()
