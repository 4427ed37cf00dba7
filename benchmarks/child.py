"""The measured side of the benchmarks: one (implementation, configuration) per process.

    python benchmarks/child.py --child SPEC_JSON     # started by harness.py, not by hand

A child builds vqjax's jitted train step (`VqjaxRunner`, as `python -m vqjax.main`
runs it on CPU) or the PyTorch reference (`TorchRunner`, benchmarks/torch_reference.py)
on one fixed batch, and either times warm-up + timed steps and prints the result
(`RESULT_PREFIX` + JSON), or, served (spec['serve']), warms up, prints `READY_PREFIX`
and then times blocks of steps on request (one JSON command a line on stdin), so
that the parent can time several children in turns (harness.run_interleaved).
Peak RSS is this process's `ru_maxrss`: that run's alone.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULT_PREFIX = "BENCHMARK_RESULT "
READY_PREFIX = "BENCHMARK_READY "
BLOCK_PREFIX = "BENCHMARK_BLOCK "


def build_model_config(recipe, overrides: dict | None = None):
  """vqjax's config.model from a config_lib recipe (built in the process that uses it,
  so a child always gets every field its own vqjax expects)."""
  from vqjax import config_lib  # pylint: disable=import-outside-toplevel
  fn_name, fn_args = recipe
  model = getattr(config_lib, fn_name)(*fn_args)
  for key, value in (overrides or {}).items():
    # A quantizer field goes into model.quantizer (flat in vqjax before issue 22).
    node = model.quantizer if key not in model and "quantizer" in model else model
    setattr(node, key, value)
  return model


# -- measurements (child processes) --------------------------------------------------


def max_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def fixed_images(batch: int, size: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.random.default_rng(0).uniform(-1.0, 1.0, (batch, size, size, 3)).astype(np.float32)


def timed(fn, warmup: int, steps: int) -> list[float]:
  times = []
  for _ in range(warmup + steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def summary(times: list[float], warmup: int, batch: int) -> dict:
  timed = times[warmup:]
  med = statistics.median(timed)
  return dict(times_s=times, first_step_s=times[0], median_s=med,
              min_s=min(timed), max_s=max(timed), img_per_s=batch / med)


class VqjaxRunner:
  """vqjax's jitted train (and eval) step on one fixed batch, as `python -m vqjax.main`
  runs on CPU (one XLA device per core unless spec['cpu_devices'] == 1)."""

  def __init__(self, spec: dict):
    # XLA flags must be in the environment before JAX starts its backends.
    if spec.get("xla_flags"):
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {spec['xla_flags']}".strip()
    from vqjax import config_lib, parallel, train  # pylint: disable=import-outside-toplevel
    from vqjax import state as state_lib  # pylint: disable=import-outside-toplevel
    from vqjax.models import create_model  # pylint: disable=import-outside-toplevel

    self.spec = spec
    batch, size = spec["batch"], spec["image_size"]
    config = config_lib.base_config()
    config.model = build_model_config(spec["recipe"], spec.get("overrides"))
    config.data.image_size, config.data.batch_size = size, batch
    config.eval.batch_size = batch
    config.eval.lpips = config.eval.fid = ""  # the forward pass alone, as the reference's eval
    config.train.steps_per_epoch = 1000  # no data source needed for the schedule
    config_lib.validate(config)
    if spec.get("cpu_devices", 0) != 1:
      parallel.configure_cpu_devices(config, spec.get("cpu_devices", 0))
    if hasattr(parallel, "configure_cpu_backend"):  # (a checkout before it has none)
      parallel.configure_cpu_backend()
    if spec.get("compilation_cache_dir"):
      parallel.configure_compilation_cache(spec["compilation_cache_dir"])
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.parallel, self.config = jax, parallel, config
    self.out = dict(rss_after_import_mib=max_rss_mib(), devices=str(jax.devices()),
                    num_devices=jax.device_count(), xla_flags=os.environ.get("XLA_FLAGS", ""))
    self.mesh = parallel.create_mesh()
    self.model = create_model(config.model)
    tx = state_lib.create_optimizer(config)
    state = state_lib.create_train_state(self.model, tx, size, seed=0)
    self.out["params"] = int(sum(p.size for p in jax.tree.leaves(state.params)))
    self.state = parallel.replicate(state, self.mesh)
    self.images = fixed_images(batch, size)
    self.train_batch = parallel.global_batch({"image": self.images}, self.mesh)
    self.step_fn = train.jit_train_step(self.mesh)
    self.metrics = None
    self._eval = None

  def train(self):
    self.state, m = self.step_fn(self.state, self.train_batch)
    self.metrics = self.jax.block_until_ready(m)
    self.jax.block_until_ready(self.state)

  def eval(self):
    if self._eval is None:
      import numpy as np  # pylint: disable=import-outside-toplevel
      from vqjax import evaluate  # pylint: disable=import-outside-toplevel
      evaluator = evaluate.Evaluator(self.config, self.model, self.mesh)
      batch = self.parallel.global_batch(
          {"image": self.images, "mask": np.ones((len(self.images),), bool)}, self.mesh)
      holder = dict(counts=evaluator._zero_counts())  # pylint: disable=protected-access

      def run():  # the counts are donated: thread them through
        out = evaluator.step(self.state.params, self.state.codebook, holder["counts"], batch)
        holder["counts"] = out["counts"]
        self.jax.block_until_ready(out)

      self._eval = run
    self._eval()

  def finish(self, out: dict) -> None:
    out["loss"] = float(self.metrics["loss"]) if self.metrics is not None else None
    if self.spec.get("quantizer_share"):
      out["quantizer"] = self._quantizer_share()

  def _quantizer_share(self) -> dict:
    """The quantizer alone, as it runs inside the train step: train mode with the
    codebook collection mutable (search, EMA, window, reset), on z_e of the step's
    shape. The straight-through/commitment backward is elementwise."""
    import functools  # pylint: disable=import-outside-toplevel
    from vqjax import capacity  # pylint: disable=import-outside-toplevel
    from vqjax.models.factory import create_quantizer  # pylint: disable=import-outside-toplevel
    from vqjax.quantizers.ema_vq import COLLECTION  # pylint: disable=import-outside-toplevel
    jax, spec, config = self.jax, self.spec, self.config
    batch, size = spec["batch"], spec["image_size"]
    quantizer = create_quantizer(config.model)()
    (h, w), = capacity.latent_shapes(config.model.kind, size).values()
    z = jax.random.normal(jax.random.PRNGKey(1), (batch, h, w, config.model.code_dim))
    codebook = quantizer.init({"params": jax.random.PRNGKey(2)}, z, train=False)[COLLECTION]
    # Placed as in the train step: z sharded over the batch, codebook replicated.
    z = jax.device_put(z, self.parallel.data_sharding(self.mesh))
    codebook = self.parallel.replicate(codebook, self.mesh)

    @functools.partial(jax.jit, donate_argnums=0)
    def quantizer_step(codebook, z, step):
      key = jax.random.fold_in(jax.random.PRNGKey(3), step)
      (z_q, aux), updates = quantizer.apply({COLLECTION: codebook}, z, train=True,
                                            mutable=[COLLECTION], rngs={COLLECTION: key})
      return updates[COLLECTION], z_q, aux["losses"]["commitment"]

    qholder = dict(codebook=codebook, step=0)

    def one_quantizer_step():
      qholder["codebook"], z_q, c = quantizer_step(qholder["codebook"], z, qholder["step"])
      jax.block_until_ready((qholder["codebook"], z_q, c))
      qholder["step"] += 1

    # More steps than the train step: the dead-code window (10 batches) must
    # have filled so that the reset branch runs as it does in a long training.
    warmup, steps = spec["warmup"], spec["steps"]
    q_warmup = max(warmup, config.model.quantizer.reset_window + 1)
    # The whole train step again, in the same stretch of time as the quantizer.
    train_times = timed(self.train, 1, steps)
    result = summary(timed(one_quantizer_step, q_warmup, steps), q_warmup, batch)
    result["warmup"] = q_warmup
    result["train_median_s"] = statistics.median(train_times[1:])
    return result


class TorchRunner:
  """The PyTorch reference's eager train (and eval) step on the same fixed batch."""

  def __init__(self, spec: dict):
    import torch  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, str(BENCH_DIR))
    import torch_reference as ref  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(spec["threads"])
    self.out = dict(rss_after_import_mib=max_rss_mib(), threads=torch.get_num_threads(),
                    interop_threads=torch.get_num_interop_threads())
    try:  # the library logs a warning when a batch has fewer vectors than codes
      from loguru import logger  # pylint: disable=import-outside-toplevel
      logger.remove()
    except ImportError:
      pass
    torch.manual_seed(0)
    self.ref, self.torch = ref, torch
    self.model = ref.create_model(spec["model"])
    self.optimizer = ref.create_optimizer(self.model)
    self.out["params"] = ref.count_params(self.model)
    self.x = torch.from_numpy(
        fixed_images(spec["batch"], spec["image_size"]).transpose(0, 3, 1, 2).copy())
    self.loss = None

  def train(self):
    self.model.train()
    self.loss = self.ref.train_step(self.model, self.optimizer, self.x)

  def eval(self):
    self.model.eval()
    self.ref.eval_step(self.model, self.x)

  def finish(self, out: dict) -> None:
    out["loss"] = float(self.loss) if self.loss is not None else None


def make_runner(spec: dict):
  """spec['runner'] = 'module:Class' of benchmarks/ (e.g. new_steps.py's runners), else
  the tokenizer step of spec['impl'] (VqjaxRunner / TorchRunner)."""
  if spec.get("runner"):
    import importlib  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, str(BENCH_DIR))
    module, name = spec["runner"].split(":")
    return getattr(importlib.import_module(module), name)(spec)
  return VqjaxRunner(spec) if spec["impl"] == "vqjax" else TorchRunner(spec)


def child_main(spec_json: str) -> None:
  """One (implementation, configuration). Without spec['serve']: warm-up + timed
  train steps (+ eval), result printed. With it: warm-up, then timed blocks on
  request from the parent (one JSON command a line on stdin) so that several
  children can be timed in alternation; 'finish' prints the result."""
  spec = json.loads(spec_json)
  t0 = time.perf_counter()
  runner = make_runner(spec)
  setup_end = time.time()
  out = runner.out
  out["setup_s"] = time.perf_counter() - t0
  warmup, steps, batch = spec["warmup"], spec["steps"], spec["batch"]
  if not spec.get("serve"):
    out["train"] = summary(timed(runner.train, warmup, steps), warmup, batch)
    if spec.get("launched_at"):
      out["launch_to_first_step_s"] = setup_end - spec["launched_at"] + out["train"]["times_s"][0]
    if spec.get("eval"):
      out["eval"] = summary(timed(runner.eval, warmup, steps), warmup, batch)
  else:
    times = dict(train=timed(runner.train, warmup, 0))
    if spec.get("launched_at"):  # process start (Python, imports, setup) to the first step's end
      out["launch_to_first_step_s"] = setup_end - spec["launched_at"] + times["train"][0]
    if spec.get("eval"):
      times["eval"] = timed(runner.eval, warmup, 0)
    print(READY_PREFIX + json.dumps(dict(first_step_s=times["train"][0])), flush=True)
    for line in sys.stdin:
      cmd = json.loads(line)
      if cmd["op"] == "finish":
        break
      block = timed(getattr(runner, cmd["op"]), 0, cmd["n"])
      times[cmd["op"]] += block
      print(BLOCK_PREFIX + json.dumps(block), flush=True)
    for op, t in times.items():
      out[op] = summary(t, warmup, batch)
  runner.finish(out)
  out["peak_rss_mib"] = max_rss_mib()
  print(RESULT_PREFIX + json.dumps(out), flush=True)


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] != "--child":
    sys.exit("usage: python benchmarks/child.py --child SPEC_JSON (started by harness.py)")
  child_main(sys.argv[2])
