"""What LPIPS and the FID stand-in add to an evaluation (BENCHMARKS.md, "Perceptual metrics").

  nice python benchmarks/perceptual_cost.py --repeats 7 [--config configs/default.py] [--vgg]

Builds the config's model (random weights: an evaluation's cost does not depend on
them) with one XLA CPU device per core as `python -m vqjax.main` runs, and one
`evaluate.Evaluator` per setting of config.eval.lpips / .fid. Each evaluator's
first call (compilation + one evaluation of the validation split) is timed, then
all are timed taking turns for --repeats rounds (order reversed every round), so
a changing background load hits all alike. No compilation cache: compile times
are cold. Prints the median wall time of a whole evaluation (loading the crops,
the jitted steps, SSIM and the host-side statistics) per setting and its cost
relative to the evaluation without perceptual metrics, and the same for the
process's CPU time (all its threads), which a shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SETTINGS = {  # name: (eval.lpips, eval.fid)
    "off": ("", ""),
    "lpips_alex": ("alex", ""),
    "lpips_alex+fid_lpips_alex": ("alex", "lpips_alex"),
}
VGG = {"lpips_vgg+fid_lpips_vgg": ("vgg", "lpips_vgg")}


def _load_config(path: str):
  spec = importlib.util.spec_from_file_location("bench_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/default.py")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--vgg", action="store_true", help="also time LPIPS/FID on VGG16")
  parser.add_argument("--json", default="", help="write the timings here")
  args = parser.parse_args()

  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()  # grain wants parsed flags
  from vqjax import parallel  # pylint: disable=import-outside-toplevel
  config = _load_config(args.config)
  parallel.configure_cpu_backend()
  parallel.configure_cpu_devices(config)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vqjax import evaluate, state as state_lib  # pylint: disable=import-outside-toplevel
  from vqjax.models import create_model  # pylint: disable=import-outside-toplevel

  mesh = parallel.create_mesh()
  model = create_model(config.model)
  state = parallel.replicate(state_lib.create_train_state(
      model, state_lib.create_optimizer(config), config.data.image_size, config.seed), mesh)
  settings = dict(SETTINGS, **(VGG if args.vgg else {}))
  evaluators, first, results = {}, {}, {}
  times, cpu = {name: [] for name in settings}, {name: [] for name in settings}
  for name, (lp, fid) in settings.items():
    c = config.copy_and_resolve_references()
    c.eval.lpips, c.eval.fid = lp, fid
    evaluators[name] = evaluate.Evaluator(c, model, mesh)
    t = time.perf_counter()
    psnr, *_, extra = evaluators[name](state.params, state.codebook)
    first[name] = time.perf_counter() - t
    results[name] = extra["perceptual"]
  order = list(settings)
  for r in range(args.repeats):
    for name in (order if r % 2 == 0 else order[::-1]):
      t, c = time.perf_counter(), time.process_time()
      evaluators[name](state.params, state.codebook)
      times[name].append(time.perf_counter() - t)
      cpu[name].append(time.process_time() - c)
  base, base_cpu = float(np.median(times["off"])), float(np.median(cpu["off"]))
  print(f"{args.config}: {psnr.size} validation images of {config.data.image_size}x"
        f"{config.data.image_size}, eval.batch_size {config.eval.batch_size}, "
        f"{jax.device_count()} {jax.default_backend()} devices, {args.repeats} rounds; "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()}")
  print(f"{'setting':28s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'vs off':>8s} "
        f"{'CPU s':>7s} {'vs off':>8s} {'first call s':>13s}")
  for name in settings:
    med, med_cpu = float(np.median(times[name])), float(np.median(cpu[name]))
    print(f"{name:28s} {med:9.3f} {min(times[name]):7.3f} {max(times[name]):7.3f} "
          f"{100 * (med / base - 1):+7.1f}% {med_cpu:7.2f} {100 * (med_cpu / base_cpu - 1):+7.1f}% "
          f"{first[name]:13.2f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(times=times, cpu=cpu, first_call=first, metrics=results,
                     loadavg=os.getloadavg()), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
