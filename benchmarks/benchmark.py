"""vqjax vs. a PyTorch reference (the authors' stack), in one run.

    .venv/bin/python benchmarks/benchmark.py [--configs a,b,c,d] [--steps N]
        [--warmup N] [--extras quantizer,memory,bf16] [--out BENCHMARKS.md]

Configurations (64x64 unless said; the single-level models are derived from
the hierarchical ones by vqjax.capacity, C_s = 160, C_h = 128):
  a        single-level D=8,  K=8192,            batch 32
  b        hierarchical D=8,  K_h=4096,          batch 32
  c        single-level D=64, K=1024 (c-single) and hierarchical D=64, K_h=512
           (c-hier), batch 32
  d        single-level D=8,  K=8192, 256x256,   batch 4
Extras (vqjax only):
  quantizer  the jitted quantizer step alone (train mode, EMA + reset) vs. the
             whole train step of a), as a share of the step time;
  memory     K=65536, D=8, batch 32, 64x64 single-level: peak RSS with
             search_chunk_size=4096 vs. 0 (dense [N, K] distances);
  bf16       a) and b) with model.dtype='bfloat16' vs. float32 (train img/s).

Every (implementation, configuration) runs in its own subprocess, so the peak
RSS (`ru_maxrss` at the end of that process) is that run's alone. Throughput is
batch / median step time over `--steps` timed steps after `--warmup` warm-up
steps (the first includes compilation and the codebook's data init), each step
waited for (`jax.block_until_ready`; PyTorch on CPU is synchronous), on one
fixed random batch in [-1, 1]. Eval is the frozen-codebook forward pass (vqjax:
`jit_eval_step` after the timed training; PyTorch: `model.eval()` under
`torch.inference_mode()`). The reference needs benchmarks/requirements.txt;
without it the vqjax rows still run and the reference columns say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BEGIN = "<!-- benchmarks/benchmark.py: begin -->"
END = "<!-- benchmarks/benchmark.py: end -->"
RESULT_PREFIX = "BENCHMARK_RESULT "
READY_PREFIX = "BENCHMARK_READY "
BLOCK_PREFIX = "BENCHMARK_BLOCK "
NOT_INSTALLED = "not installed"


# -- configurations (parent process) -------------------------------------------------


@dataclasses.dataclass
class Case:
  name: str
  description: str
  recipe: tuple  # (config_lib function name, args): builds vqjax's config.model
  image_size: int
  batch: int


CASES = {
    "a": [Case("a", "single D=8 K=8192", ("single_model", (4096, 8, 64)), 64, 32)],
    "b": [Case("b", "hier D=8 Kh=4096", ("hierarchical_model", (4096, 8)), 64, 32)],
    "c": [Case("c-single", "single D=64 K=1024", ("single_model", (512, 64, 64)), 64, 32),
          Case("c-hier", "hier D=64 Kh=512", ("hierarchical_model", (512, 64)), 64, 32)],
    "d": [Case("d", "single D=8 K=8192 256px", ("single_model", (4096, 8, 256)), 256, 4)],
}
# K_s = 2 * 32768 * 8 / 8 = 65536 (Eq. 5), D = 8, C_s = 160.
MEMORY_RECIPE = ("single_model", (32768, 8, 64))


def build_model_config(recipe, overrides: dict | None = None):
  """vqjax's config.model from a config_lib recipe (built in the process that uses it,
  so a child always gets every field its own vqjax expects)."""
  from vqjax import config_lib  # pylint: disable=import-outside-toplevel
  fn_name, fn_args = recipe
  model = getattr(config_lib, fn_name)(*fn_args)
  for key, value in (overrides or {}).items():
    setattr(model, key, value)
  return model


# -- measurements (child processes) --------------------------------------------------


def _max_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _fixed_images(batch: int, size: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.random.default_rng(0).uniform(-1.0, 1.0, (batch, size, size, 3)).astype(np.float32)


def _timed(fn, warmup: int, steps: int) -> list[float]:
  times = []
  for _ in range(warmup + steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def _summary(times: list[float], warmup: int, batch: int) -> dict:
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
    self.out = dict(rss_after_import_mib=_max_rss_mib(), devices=str(jax.devices()),
                    num_devices=jax.device_count(), xla_flags=os.environ.get("XLA_FLAGS", ""))
    self.mesh = parallel.create_mesh()
    self.model = create_model(config.model)
    tx = state_lib.create_optimizer(config)
    state = state_lib.create_train_state(self.model, tx, size, seed=0)
    self.out["params"] = int(sum(p.size for p in jax.tree.leaves(state.params)))
    self.state = parallel.replicate(state, self.mesh)
    self.images = _fixed_images(batch, size)
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
    q_warmup = max(warmup, config.model.reset_window + 1)
    # The whole train step again, in the same stretch of time as the quantizer.
    train_times = _timed(self.train, 1, steps)
    result = _summary(_timed(one_quantizer_step, q_warmup, steps), q_warmup, batch)
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
    self.out = dict(rss_after_import_mib=_max_rss_mib(), threads=torch.get_num_threads(),
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
        _fixed_images(spec["batch"], spec["image_size"]).transpose(0, 3, 1, 2).copy())
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
    out["train"] = _summary(_timed(runner.train, warmup, steps), warmup, batch)
    if spec.get("launched_at"):
      out["launch_to_first_step_s"] = setup_end - spec["launched_at"] + out["train"]["times_s"][0]
    if spec.get("eval"):
      out["eval"] = _summary(_timed(runner.eval, warmup, steps), warmup, batch)
  else:
    times = dict(train=_timed(runner.train, warmup, 0))
    if spec.get("launched_at"):  # process start (Python, imports, setup) to the first step's end
      out["launch_to_first_step_s"] = setup_end - spec["launched_at"] + times["train"][0]
    if spec.get("eval"):
      times["eval"] = _timed(runner.eval, warmup, 0)
    print(READY_PREFIX + json.dumps(dict(first_step_s=times["train"][0])), flush=True)
    for line in sys.stdin:
      cmd = json.loads(line)
      if cmd["op"] == "finish":
        break
      block = _timed(getattr(runner, cmd["op"]), 0, cmd["n"])
      times[cmd["op"]] += block
      print(BLOCK_PREFIX + json.dumps(block), flush=True)
    for op, t in times.items():
      out[op] = _summary(t, warmup, batch)
  runner.finish(out)
  out["peak_rss_mib"] = _max_rss_mib()
  print(RESULT_PREFIX + json.dumps(out), flush=True)


# -- orchestration (parent process) --------------------------------------------------


def pin_cpus(spec: str) -> None:
  """--cpus: run this process and its children on these CPUs only ('1', '0,1', '0-3').

  One CPU with one thread per implementation compares per-core speed, which
  holds up on a machine shared with other jobs; several threads sharing busy
  cores do not (a thread that waits for a descheduled peer)."""
  if not spec:
    return
  cpus = set()
  for part in spec.split(","):
    lo, _, hi = part.partition("-")
    cpus.update(range(int(lo), int(hi or lo) + 1))
  os.sched_setaffinity(0, cpus)


def reference_available() -> bool:
  return all(importlib.util.find_spec(m) is not None
             for m in ("torch", "vector_quantize_pytorch"))


def spawn_child(script: Path, spec: dict, timeout: float, result_prefix: str,
                label: str) -> dict:
  """Runs `script --child SPEC_JSON` (repo on PYTHONPATH) and returns the JSON after
  `result_prefix` in its stdout, with `wall_s`; or {'error': ...} (tail printed)."""
  cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  print(f"[{script.stem}] {label} ...", flush=True)
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO), check=False)
  except subprocess.TimeoutExpired:
    return dict(error=f"timed out after {timeout:.0f} s")
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(result_prefix):
      result = json.loads(line[len(result_prefix):])
      result["wall_s"] = time.perf_counter() - t0
      return result
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
  print(f"[{script.stem}] {label} FAILED (rc={proc.returncode}):\n  " + "\n  ".join(tail),
        flush=True)
  return dict(error=f"rc={proc.returncode}: " + (tail[-1] if tail else "no output"))


def run_child(spec: dict, timeout: float) -> dict:
  label = f"{spec['impl']}:{spec['label']}"
  result = spawn_child(Path(__file__).resolve(), spec, timeout, RESULT_PREFIX, label)
  _announce(label, result)
  return result


def _child_env(repo: str | None = None) -> dict:
  """The environment of a child: `repo` (default: this checkout) first on PYTHONPATH,
  so a child can time another checkout's vqjax with this file's code."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(repo or REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return env


class ServedChild:
  """A child in serve mode: warmed up once, then timed in blocks on request."""

  def __init__(self, spec: dict, timeout: float):
    self.label = f"{spec['impl']}:{spec['label']}"
    self.timeout = timeout
    self.error = None
    self.t0 = time.perf_counter()
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child",
         json.dumps(dict(spec, serve=True, launched_at=time.time()))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        env=dict(_child_env(spec.get("repo")), **spec.get("env", {})), cwd=str(REPO))
    self.lines: queue.Queue = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()
    print(f"[benchmark] {self.label} (served) ...", flush=True)

  def _read(self):
    for line in self.proc.stdout:
      self.lines.put(line)
    self.lines.put(None)

  def _expect(self, prefix: str):
    deadline = time.monotonic() + self.timeout
    while True:
      try:
        line = self.lines.get(timeout=max(1.0, deadline - time.monotonic()))
      except queue.Empty:
        line = None
        self.proc.kill()
      if line is None:
        self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-15:]
        self.error = f"rc={self.proc.returncode}: " + (tail[-1] if tail else "no output")
        print(f"[benchmark] {self.label} FAILED:\n  " + "\n  ".join(tail), flush=True)
        return None
      if line.startswith(prefix):
        return json.loads(line[len(prefix):])

  def _send(self, cmd: dict) -> bool:
    if self.error:
      return False
    try:
      self.proc.stdin.write(json.dumps(cmd) + "\n")
      self.proc.stdin.flush()
      return True
    except (BrokenPipeError, OSError) as e:
      self.error = f"child gone: {e}"
      return False

  def ready(self):
    """Waits for the warm-up; records the time from the launch to its end."""
    out = self._expect(READY_PREFIX)
    self.ready_s = time.perf_counter() - self.t0
    return out

  def run(self, op: str, n: int):
    return self._expect(BLOCK_PREFIX) if self._send(dict(op=op, n=n)) else None

  def finish(self) -> dict:
    if not self._send(dict(op="finish")):
      return dict(error=self.error)
    result = self._expect(RESULT_PREFIX)
    self.proc.wait()
    if result is None:
      return dict(error=self.error)
    result["wall_s"] = time.perf_counter() - self.t0
    return result


def run_interleaved(specs: list[dict], args, pause: float = 0.05) -> list[dict]:
  """Each spec's child is started and warmed up in turn (compilations never overlap
  a timed block); then `args.steps` timed steps per child in blocks of
  `args.block`, the children taking turns (order reversed every round), so a
  changing background load hits every one alike. Eval blocks follow the same way."""
  children = []
  for spec in specs:
    child = ServedChild(spec, args.timeout)
    child.ready()
    children.append(child)
  ops = ["train"] + (["eval"] if any(s.get("eval") for s in specs) else [])
  for op in ops:
    done = 0
    r = 0
    while done < args.steps:
      n = min(args.block, args.steps - done)
      order = children if r % 2 == 0 else children[::-1]
      for child, spec in ((c, specs[children.index(c)]) for c in order):
        if op == "train" or spec.get("eval"):
          time.sleep(pause)  # the other children's worker threads go idle
          child.run(op, n)
      done += n
      r += 1
  results = []
  for child in children:
    result = child.finish()
    _announce(child.label, result)
    results.append(result)
  return results


def _announce(label: str, result: dict) -> None:
  if "error" in result:
    return
  result["load_1min_after"] = os.getloadavg()[0]
  tr = result["train"]
  ev = result.get("eval")
  print(f"[benchmark] {label}: train {tr['img_per_s']:.1f} img/s"
        + (f", eval {ev['img_per_s']:.1f} img/s" if ev else "")
        + f", peak RSS {result['peak_rss_mib']:.0f} MiB, {result['wall_s']:.0f} s", flush=True)


def _spec(impl: str, label: str, recipe, image_size: int, batch: int, args,
          steps: int | None = None, overrides: dict | None = None, **extra) -> dict:
  if impl == "vqjax" and args.xla_flags:
    extra.setdefault("xla_flags", args.xla_flags)
  if impl == "vqjax" and getattr(args, "vqjax_repo", ""):
    extra.setdefault("repo", args.vqjax_repo)
  return dict(impl=impl, label=label, recipe=recipe, overrides=overrides or {},
              model=build_model_config(recipe, overrides).to_dict(),
              image_size=image_size, batch=batch, warmup=args.warmup,
              steps=steps or args.steps, threads=args.torch_threads,
              cpu_devices=extra.pop("cpu_devices", args.vqjax_cpu_devices), **extra)


def _version(pkg: str) -> str:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return NOT_INSTALLED


def _cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _mem_total_gib() -> float:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return float("nan")


# -- report --------------------------------------------------------------------------


def _fmt(value, digits=1) -> str:
  return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _ratio(a, b) -> str:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
    return f"{a / b:.2f}"
  return "-"


def _get(result: dict | None, *keys, missing="-"):
  if result is None:
    return missing
  if "error" in result:
    return "failed"
  cur: Any = result
  for k in keys:
    if not isinstance(cur, dict) or k not in cur:
      return missing
    cur = cur[k]
  return cur


def build_report(meta: dict, rows: list[dict], extras: dict) -> str:
  ref_missing = meta["reference_state"] if meta["reference_state"] != "installed" else "-"
  lines = [
      BEGIN,
      "## vqjax vs. the PyTorch reference (CPU)",
      "",
      f"Command: `{meta['command']}`  ",
      f"Machine: {meta['cpu']}, {meta.get('machine_cores', meta['cores'])} cores"
      + (f" (this run pinned to CPU {meta['cpus']})" if meta.get("cpus") else "")
      + f", {meta['mem_gib']:.0f} GiB; "
      f"load average before the run {meta['load_before']}, after {meta['load_after']}  ",
      f"Date: {meta['date']} (the run took {meta['wall_min']:.1f} min)  ",
      "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ",
      f"Threads: vqjax = one XLA CPU device per core ({meta['vqjax_devices']} devices, "
      "data-parallel step, as `python -m vqjax.main` runs on CPU; the `1 device` "
      "column is a single XLA CPU device with its default thread pool); "
      + (f"PyTorch = `torch.set_num_threads({meta['torch_threads']})`"
         if meta["reference_state"] == "installed" else f"PyTorch {meta['reference_state']}")
      + (f", {meta['torch_interop']} inter-op threads" if meta.get("torch_interop") else "")
      + ", eager mode.  ",
      f"Method: {meta['warmup']} warm-up + {meta['steps']} timed steps, img/s = batch / "
      "median step time, one fixed random batch in [-1, 1], every step waited for; "
      "per configuration the runs (vqjax, its 1-device run, the reference) each live in "
      "their own process, are warmed up one after another and then timed taking turns "
      f"in blocks of {meta.get('block', '?')} steps (order reversed every round), so a "
      "changing background load hits all alike; "
      "train = loss (MSE + 0.25 commitment), backward, Adam 3e-4, EMA codebook "
      "update and dead-code reset; eval = frozen-codebook forward pass. Peak RSS = "
      "`ru_maxrss` of a fresh process per (implementation, configuration), "
      "compilation included. Reference: benchmarks/torch_reference.py, "
      "vector-quantize-pytorch `VectorQuantize(decay=0.99, commitment_weight=0.25, "
      "threshold_ema_dead_code=2, kmeans_init=True, kmeans_iters=1, "
      "rotation_trick=False, ema_update=True, learnable_codebook=False)`.",
      "",
      "### Throughput (images/s, higher is better; ratio = vqjax / reference)",
      "",
      "| config | model | image | batch | vqjax train | ref train | ratio | "
      "vqjax train, 1 device | ratio | vqjax eval | ref eval | ratio |",
      "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in rows:
    j1 = _get(r.get("vqjax_one_device"), "train", "img_per_s")
    jt = _get(r["vqjax"], "train", "img_per_s")
    je = _get(r["vqjax"], "eval", "img_per_s")
    rt = _get(r["ref"], "train", "img_per_s", missing=ref_missing)
    re_ = _get(r["ref"], "eval", "img_per_s", missing=ref_missing)
    lines.append(f"| {r['name']} | {r['description']} | {r['image_size']} | {r['batch']} | "
                 f"{_fmt(jt)} | {_fmt(rt)} | {_ratio(jt, rt)} | {_fmt(j1)} | {_ratio(j1, rt)} | "
                 f"{_fmt(je)} | {_fmt(re_)} | "
                 f"{_ratio(je, re_)} |")
  lines += [
      "",
      "### Parameters, memory and first step",
      "",
      "| config | params vqjax | params ref | equal | vqjax peak RSS MiB | ref peak RSS MiB | "
      "ratio | RSS after import vqjax / ref MiB | first step s vqjax / ref |",
      "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in rows:
    pj, pr = _get(r["vqjax"], "params"), _get(r["ref"], "params", missing=ref_missing)
    equal = ("yes" if pj == pr else "**NO**") if isinstance(pr, int) and isinstance(pj, int) else "-"
    mj, mr = _get(r["vqjax"], "peak_rss_mib"), _get(r["ref"], "peak_rss_mib", missing=ref_missing)
    ij, ir = _get(r["vqjax"], "rss_after_import_mib"), _get(r["ref"], "rss_after_import_mib",
                                                            missing=ref_missing)
    fj, fr = _get(r["vqjax"], "train", "first_step_s"), _get(r["ref"], "train", "first_step_s",
                                                             missing=ref_missing)
    lines.append(f"| {r['name']} | {_fmt(pj, 0)} | {_fmt(pr, 0)} | {equal} | {_fmt(mj, 0)} | "
                 f"{_fmt(mr, 0)} | {_ratio(mj, mr)} | {_fmt(ij, 0)} / {_fmt(ir, 0)} | "
                 f"{_fmt(fj, 2)} / {_fmt(fr, 2)} |")

  q = extras.get("quantizer")
  if q is not None:
    lines += ["", "### Quantizer share of the vqjax train step (config a)", ""]
    qt, tt = _get(q, "quantizer", "median_s"), _get(q, "quantizer", "train_median_s")
    if isinstance(qt, float) and isinstance(tt, float):
      lines.append(
          f"Jitted `VectorQuantizerEMA` step alone (train mode, mutable codebook: search, "
          f"EMA, window, reset; z_e [32, 16, 16, 8] random, K=8192, "
          f"{q['quantizer']['warmup']} warm-up steps so the dead-code window is full): "
          f"{qt * 1e3:.1f} ms vs. the whole train step {tt * 1e3:.1f} ms "
          f"(same process) = **{100 * qt / tt:.0f}%** of the step.")
    else:
      lines.append(f"failed: {q.get('error', 'no result')}")

  mem = extras.get("memory")
  if mem is not None:
    lines += ["", "### Codebook search memory: K=65536, D=8, single-level, 64x64, batch 32 "
              "(vqjax train)", "",
              "| search_chunk_size | search_rows_per_block | peak RSS MiB | train img/s | "
              "first step s |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for entry in mem.values():
      o, res = entry["overrides"], entry["result"]
      rows_shown = o.get("search_rows_per_block", "default")
      lines.append(f"| {o['search_chunk_size']} | {rows_shown} | "
                   f"{_fmt(_get(res, 'peak_rss_mib'), 0)} | "
                   f"{_fmt(_get(res, 'train', 'img_per_s'))} | "
                   f"{_fmt(_get(res, 'train', 'first_step_s'), 2)} |")
    lines.append("")
    lines.append("search_chunk_size 0 = all K codes at once; search_rows_per_block 0 = all "
                 "N = 8192 rows at once, so (0, 0) materialises the dense [8192, 65536] "
                 "float32 distances (2 GiB per matrix); 'default' = vqjax's default "
                 "(-1: 128 rows per block on CPU). "
                 f"{meta['memory_steps']} timed steps after {meta['warmup']} warm-up.")

  comp = extras.get("compile")
  if comp:
    lines += ["", "### First step: compilation, cold and warm persistent cache", "",
              "vqjax: a fresh `compilation_cache_dir` (cold), then a second launch on the same "
              "directory (warm), as `python -m vqjax.main` runs with "
              "`config.compilation_cache_dir`. *first step* = the first train step's call "
              "(compilation or cache load included); *launch to first step* = from starting "
              "the process (Python, imports, model init) to the end of that step. Reference: "
              "eager PyTorch's first step (its k-means codebook init included).", "",
              "| config | vqjax first step s, cold | warm | vqjax launch to first step s, "
              "cold | warm | ref first step s | ref launch to first step s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
      if r["name"] not in comp:
        continue
      cold, warm = comp[r["name"]]
      lines.append(
          f"| {r['name']} | {_fmt(_get(cold, 'train', 'first_step_s'), 2)} | "
          f"{_fmt(_get(warm, 'train', 'first_step_s'), 2)} | "
          f"{_fmt(_get(cold, 'launch_to_first_step_s'), 1)} | {_fmt(_get(warm, 'launch_to_first_step_s'), 1)} | "
          f"{_fmt(_get(r['ref'], 'train', 'first_step_s', missing=ref_missing), 2)} | "
          f"{_fmt(_get(r['ref'], 'launch_to_first_step_s', missing=ref_missing), 1)} |")

  bf = extras.get("bf16")
  if bf:
    lines += ["", "### bfloat16 convolutions (vqjax train img/s; distances and EMA stay float32)",
              "", "| config | float32 | bfloat16 | bf16 / f32 | peak RSS MiB f32 / bf16 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, (f32, b16) in bf.items():
      a, b = _get(f32, "train", "img_per_s"), _get(b16, "train", "img_per_s")
      lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {_ratio(b, a)} | "
                   f"{_fmt(_get(f32, 'peak_rss_mib'), 0)} / {_fmt(_get(b16, 'peak_rss_mib'), 0)} |")
  failures = [(r["name"], impl, r[impl]["error"]) for r in rows for impl in ("vqjax", "ref")
              if r[impl] is not None and "error" in r[impl]]
  failures += [(f"memory {k}", "vqjax", e["result"]["error"])
               for k, e in (mem or {}).items() if "error" in e["result"]]
  failures += [(f"{k}-bf16", "vqjax", v[1]["error"]) for k, v in (bf or {}).items()
               if "error" in v[1]]
  if failures:
    lines += ["", "Failed runs:", ""] + [f"- {n} ({impl}): `{err}`" for n, impl, err in failures]
  # A run uses all cores; a 1-minute load clearly above that means something else ran.
  busy = [(r["name"], impl, r[impl]["load_1min_after"]) for r in rows for impl in ("vqjax", "ref")
          if r[impl] is not None and r[impl].get("load_1min_after", 0) > meta["cores"] + 1]
  busy += [(f"memory {k}", "vqjax", e["result"]["load_1min_after"])
           for k, e in (mem or {}).items() if e["result"].get("load_1min_after", 0) > meta["cores"] + 1]
  busy += [(f"{k}-bf16", "vqjax", v[1]["load_1min_after"]) for k, v in (bf or {}).items()
           if v[1].get("load_1min_after", 0) > meta["cores"] + 1]
  if busy:
    lines += ["", f"Possibly disturbed by other processes (1-minute load average above "
              f"{meta['cores'] + 1} right after the run):", ""]
    lines += [f"- {n} ({impl}): {load:.2f}" for n, impl, load in busy]
  lines += ["", END, ""]
  return "\n".join(lines)


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
  """Replaces the text between `begin` and `end` in `path` (appends it if absent)."""
  text = path.read_text() if path.exists() else "# Benchmarks\n\n"
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1].lstrip("\n")
    text = head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
  else:
    text = text.rstrip("\n") + "\n\n" + section
  path.write_text(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="a,b,c,d",
                      help="comma-separated of a,b,c,d (or 'none': extras only)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps (>= 7 for reports)")
  parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (>= 2 for reports)")
  parser.add_argument("--extras", default="quantizer,memory,bf16,compile",
                      help="comma-separated of quantizer,memory,bf16,compile, or 'none'")
  parser.add_argument("--memory-steps", type=int, default=3,
                      help="timed steps of the K=65536 memory case")
  parser.add_argument("--reference", choices=("auto", "off"), default="auto",
                      help="'off' skips the PyTorch reference")
  parser.add_argument("--cpus", default="", help="pin the run to these CPUs (e.g. '1'); "
                      "the thread and device counts follow")
  parser.add_argument("--torch-threads", type=int, default=0, help="0: one per usable core")
  parser.add_argument("--vqjax-cpu-devices", type=int, default=0,
                      help="XLA CPU devices for vqjax (0: one per core, as vqjax.main runs)")
  parser.add_argument("--block", type=int, default=2,
                      help="timed steps per turn: vqjax, its 1-device run and the reference "
                           "take turns in blocks of this many steps")
  parser.add_argument("--one-device", action=argparse.BooleanOptionalAction, default=True,
                      help="also time vqjax on a single XLA CPU device")
  parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the vqjax runs")
  parser.add_argument("--vqjax-repo", default="",
                      help="time the vqjax of this checkout (e.g. a worktree of an older "
                           "commit) with this benchmark code")
  parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"),
                      help="markdown file whose benchmark section is replaced ('' = none)")
  parser.add_argument("--json", default="", help="also write the raw results here")
  parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    child_main(args.child)
    return 0
  pin_cpus(args.cpus)
  args.torch_threads = args.torch_threads or len(os.sched_getaffinity(0))

  sys.path.insert(0, str(REPO))
  start = time.perf_counter()
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  cases = CASES
  names = [c.strip() for c in args.configs.split(",") if c.strip() and c.strip() != "none"]
  unknown = [n for n in names if n not in cases]
  if unknown:
    parser.error(f"unknown configs {unknown}; choose from {sorted(cases)}")
  extras_wanted = set() if args.extras == "none" else {
      e.strip() for e in args.extras.split(",") if e.strip()}
  bad = extras_wanted - {"quantizer", "memory", "bf16", "compile"}
  if bad:
    parser.error(f"unknown extras {sorted(bad)}")
  use_ref = args.reference == "auto" and reference_available()
  if args.reference == "auto" and not use_ref:
    print("[benchmark] torch / vector-quantize-pytorch not installed: reference columns "
          "will say so (pip install -r benchmarks/requirements.txt)", flush=True)

  rows, raw = [], {}
  torch_interop = None
  for name in names:
    for case in cases[name]:
      model = build_model_config(case.recipe)
      want_q = "quantizer" in extras_wanted and case.name == "a"
      specs = [_spec("vqjax", case.name, case.recipe, case.image_size, case.batch, args,
                     eval=True, quantizer_share=want_q)]
      if args.one_device:
        specs.append(_spec("vqjax", case.name + "-1dev", case.recipe, case.image_size,
                           case.batch, args, cpu_devices=1))
      if use_ref:
        specs.append(_spec("torch", case.name, case.recipe, case.image_size, case.batch, args,
                           eval=True))
      results = run_interleaved(specs, args)
      vq = results[0]
      one = results[1] if args.one_device else None
      ref = results[-1] if use_ref else None
      if ref is not None:
        torch_interop = ref.get("interop_threads", torch_interop)
      rows.append(dict(name=case.name, description=case.description,
                       image_size=case.image_size, batch=case.batch, vqjax=vq, ref=ref,
                       vqjax_one_device=one))
      raw[case.name] = dict(vqjax=vq, vqjax_one_device=one, ref=ref, model=model.to_dict())

  extras: dict[str, Any] = {}
  a_row = next((r for r in rows if r["name"] == "a"), None)
  if "quantizer" in extras_wanted and a_row is not None:
    extras["quantizer"] = a_row["vqjax"]

  if "memory" in extras_wanted:
    extras["memory"] = {}
    has_rows = "search_rows_per_block" in build_model_config(MEMORY_RECIPE)
    variants = ([dict(search_chunk_size=4096), dict(search_chunk_size=0)] if not has_rows else
                [dict(search_chunk_size=4096), dict(search_chunk_size=0),
                 dict(search_chunk_size=4096, search_rows_per_block=0),
                 dict(search_chunk_size=0, search_rows_per_block=0)])
    for overrides in variants:
      label = ",".join(f"{k}={v}" for k, v in overrides.items())
      res = run_child(_spec("vqjax", f"memory-K65536[{label}]", MEMORY_RECIPE, 64, 32, args,
                            steps=args.memory_steps, overrides=overrides), args.timeout)
      extras["memory"][label] = dict(overrides=overrides, result=res)
    raw["memory"] = extras["memory"]

  if "compile" in extras_wanted:
    # Cold: a fresh persistent compilation cache; warm: a second launch on it.
    extras["compile"] = {}
    for row in rows:
      case = next(c for cs in cases.values() for c in cs if c.name == row["name"])
      cache_dir = tempfile.mkdtemp(prefix=f"vqjax_bench_cache_{case.name}_")
      runs = []
      for label in ("cold", "warm"):
        spec = _spec("vqjax", f"{case.name}-{label}-cache", case.recipe, case.image_size,
                     case.batch, args, steps=1, compilation_cache_dir=cache_dir)
        spec["warmup"] = 1
        res = run_interleaved([spec], argparse.Namespace(**dict(vars(args), steps=1, block=1)))[0]
        runs.append(res)
      extras["compile"][case.name] = runs
    raw["compile"] = extras["compile"]

  if "bf16" in extras_wanted:
    extras["bf16"] = {}
    for row in rows:
      if row["name"] not in ("a", "b"):
        continue
      case = next(c for c in cases[row["name"]] if c.name == row["name"])
      res = run_child(_spec("vqjax", f"{case.name}-bf16", case.recipe, case.image_size,
                            case.batch, args, overrides=dict(dtype="bfloat16")), args.timeout)
      extras["bf16"][case.name] = (row["vqjax"], res)
    raw["bf16"] = {k: v[1] for k, v in extras["bf16"].items()}

  py = Path(sys.executable)
  try:
    py_shown = str(py.relative_to(REPO)) if py.is_relative_to(REPO) else "python"
  except ValueError:
    py_shown = "python"
  meta = dict(
      command=" ".join([py_shown, "benchmarks/benchmark.py"] + [shlex.quote(a) for a in
                                                                (argv or sys.argv[1:])]),
      cpu=_cpu_model(), cores=len(os.sched_getaffinity(0)), mem_gib=_mem_total_gib(),
      machine_cores=os.cpu_count(), cpus=args.cpus,
      load_before=load_before, load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
      date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
      wall_min=(time.perf_counter() - start) / 60,
      versions={"python": platform.python_version(), "jax": _version("jax"),
                "jaxlib": _version("jaxlib"), "flax": _version("flax"),
                "optax": _version("optax"), "torch": _version("torch"),
                "vector-quantize-pytorch": _version("vector-quantize-pytorch")},
      torch_threads=args.torch_threads,
      torch_interop=torch_interop, warmup=args.warmup, steps=args.steps, block=args.block,
      vqjax_devices=next((r['vqjax'].get('num_devices') for r in rows
                          if r['vqjax'] and 'num_devices' in r['vqjax']), '?'),
      memory_steps=args.memory_steps,
      reference_state=("installed" if use_ref else
                       "not run" if args.reference == "off" else NOT_INSTALLED))
  report = build_report(meta, rows, extras)
  print()
  print(report)
  if args.out:
    write_section(Path(args.out), report)
    print(f"[benchmark] wrote the section to {args.out}")
  if args.json:
    Path(args.json).write_text(json.dumps(dict(meta=meta, results=raw), indent=1))
  failed = [r["name"] for r in rows if "error" in r["vqjax"]]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
