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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BEGIN = "<!-- benchmarks/benchmark.py: begin -->"
END = "<!-- benchmarks/benchmark.py: end -->"
RESULT_PREFIX = "BENCHMARK_RESULT "
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


def child_vqjax(spec: dict) -> dict:
  import functools  # pylint: disable=import-outside-toplevel

  import jax
  import numpy as np

  from vqjax import capacity, config_lib, evaluate, parallel, train
  from vqjax import state as state_lib
  from vqjax.models import create_model, level_names
  from vqjax.models.factory import create_quantizer
  from vqjax.quantizers.ema_vq import COLLECTION

  warmup, steps, batch, size = spec["warmup"], spec["steps"], spec["batch"], spec["image_size"]
  config = config_lib.base_config()
  config.model = build_model_config(spec["recipe"], spec.get("overrides"))
  config.data.image_size, config.data.batch_size = size, batch
  config.eval.batch_size = batch
  config.train.steps_per_epoch = 1000  # no data source needed for the schedule
  config_lib.validate(config)
  # As `python -m vqjax.main` runs on CPU: one XLA device per core (0), or 1.
  if spec.get("cpu_devices", 0) != 1:
    parallel.configure_cpu_devices(config, spec.get("cpu_devices", 0))
  out = dict(rss_after_import_mib=_max_rss_mib(), devices=str(jax.devices()),
             num_devices=jax.device_count())

  mesh = parallel.create_mesh()
  model = create_model(config.model)
  tx = state_lib.create_optimizer(config)
  state = state_lib.create_train_state(model, tx, size, seed=0)
  out["params"] = int(sum(p.size for p in jax.tree.leaves(state.params)))
  state = parallel.replicate(state, mesh)
  images = _fixed_images(batch, size)
  train_batch = parallel.global_batch({"image": images}, mesh)
  step_fn = train.jit_train_step(mesh)

  holder = dict(state=state)

  def one_train_step():
    holder["state"], m = step_fn(holder["state"], train_batch)
    holder["metrics"] = jax.block_until_ready(m)
    jax.block_until_ready(holder["state"])

  out["train"] = _summary(_timed(one_train_step, warmup, steps), warmup, batch)
  out["loss"] = float(holder["metrics"]["loss"])

  if spec.get("eval"):
    evaluator = evaluate.Evaluator(config, model, mesh)
    zero_counts = {k: jnp.zeros((config.model.num_codes,), jnp.float32)
                   for k in level_names(config.model)}
    eval_fn = lambda params, codebook, batch: evaluator.step(
        params, codebook, parallel.replicate(zero_counts, mesh), batch)
    eval_batch = parallel.global_batch(
        {"image": images, "mask": np.ones((batch,), bool)}, mesh)
    st = holder["state"]
    out["eval"] = _summary(
        _timed(lambda: jax.block_until_ready(eval_fn(st.params, st.codebook, eval_batch)),
               warmup, steps), warmup, batch)

  if spec.get("quantizer_share"):
    # The quantizer alone, as it runs inside the train step: train mode with the
    # codebook collection mutable (search, EMA, window, reset), on z_e of the
    # step's shape. The straight-through/commitment backward is elementwise.
    quantizer = create_quantizer(config.model)()
    (h, w), = capacity.latent_shapes(config.model.kind, size).values()
    z = jax.random.normal(jax.random.PRNGKey(1), (batch, h, w, config.model.code_dim))
    codebook = quantizer.init({"params": jax.random.PRNGKey(2)}, z, train=False)[COLLECTION]

    # Placed as in the train step: z sharded over the batch, codebook replicated.
    z = jax.device_put(z, parallel.data_sharding(mesh))
    codebook = parallel.replicate(codebook, mesh)

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
    q_warmup = max(warmup, config.model.reset_window + 1)
    out["quantizer"] = _summary(_timed(one_quantizer_step, q_warmup, steps), q_warmup, batch)
    out["quantizer"]["warmup"] = q_warmup

  out["peak_rss_mib"] = _max_rss_mib()
  return out


def child_torch(spec: dict) -> dict:
  import torch  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, str(BENCH_DIR))
  import torch_reference as ref  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(spec["threads"])
  out = dict(rss_after_import_mib=_max_rss_mib(), threads=torch.get_num_threads(),
             interop_threads=torch.get_num_interop_threads())
  try:  # the library logs a warning when a batch has fewer vectors than codes
    from loguru import logger  # pylint: disable=import-outside-toplevel
    logger.remove()
  except ImportError:
    pass
  warmup, steps, batch, size = spec["warmup"], spec["steps"], spec["batch"], spec["image_size"]
  torch.manual_seed(0)
  model = ref.create_model(spec["model"])
  optimizer = ref.create_optimizer(model)
  out["params"] = ref.count_params(model)
  x = torch.from_numpy(_fixed_images(batch, size).transpose(0, 3, 1, 2).copy())

  model.train()
  holder = {}

  def one_train_step():
    holder["loss"] = ref.train_step(model, optimizer, x)

  out["train"] = _summary(_timed(one_train_step, warmup, steps), warmup, batch)
  out["loss"] = float(holder["loss"])
  if spec.get("eval"):
    model.eval()
    out["eval"] = _summary(_timed(lambda: ref.eval_step(model, x), warmup, steps),
                           warmup, batch)
  out["peak_rss_mib"] = _max_rss_mib()
  return out


def child_main(spec_json: str) -> None:
  spec = json.loads(spec_json)
  fn = child_vqjax if spec["impl"] == "vqjax" else child_torch
  result = fn(spec)
  print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- orchestration (parent process) --------------------------------------------------


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
  if "error" not in result:
    result["load_1min_after"] = os.getloadavg()[0]
    tr = result["train"]
    ev = result.get("eval")
    print(f"[benchmark] {label}: train {tr['img_per_s']:.1f} img/s"
          + (f", eval {ev['img_per_s']:.1f} img/s" if ev else "")
          + f", peak RSS {result['peak_rss_mib']:.0f} MiB, {result['wall_s']:.0f} s", flush=True)
  return result


def _spec(impl: str, label: str, recipe, image_size: int, batch: int, args,
          steps: int | None = None, overrides: dict | None = None, **extra) -> dict:
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
      f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem_gib']:.0f} GiB; "
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
    qt, tt = _get(q, "quantizer", "median_s"), _get(q, "train", "median_s")
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
    text = head + section + tail
  else:
    text = text.rstrip("\n") + "\n\n" + section
  path.write_text(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="a,b,c,d",
                      help="comma-separated of a,b,c,d (or 'none': extras only)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps (>= 7 for reports)")
  parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (>= 2 for reports)")
  parser.add_argument("--extras", default="quantizer,memory,bf16",
                      help="comma-separated of quantizer,memory,bf16, or 'none'")
  parser.add_argument("--memory-steps", type=int, default=3,
                      help="timed steps of the K=65536 memory case")
  parser.add_argument("--reference", choices=("auto", "off"), default="auto",
                      help="'off' skips the PyTorch reference")
  parser.add_argument("--torch-threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--vqjax-cpu-devices", type=int, default=0,
                      help="XLA CPU devices for vqjax (0: one per core, as vqjax.main runs)")
  parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"),
                      help="markdown file whose benchmark section is replaced ('' = none)")
  parser.add_argument("--json", default="", help="also write the raw results here")
  parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    child_main(args.child)
    return 0

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
  bad = extras_wanted - {"quantizer", "memory", "bf16"}
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
      vq = run_child(_spec("vqjax", case.name, case.recipe, case.image_size, case.batch, args,
                           eval=True, quantizer_share=want_q), args.timeout)
      one = run_child(_spec("vqjax", case.name + "-1dev", case.recipe, case.image_size,
                            case.batch, args, cpu_devices=1), args.timeout)
      ref = None
      if use_ref:
        ref = run_child(_spec("torch", case.name, case.recipe, case.image_size, case.batch, args,
                              eval=True), args.timeout)
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
      load_before=load_before, load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
      date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
      wall_min=(time.perf_counter() - start) / 60,
      versions={"python": platform.python_version(), "jax": _version("jax"),
                "jaxlib": _version("jaxlib"), "flax": _version("flax"),
                "optax": _version("optax"), "torch": _version("torch"),
                "vector-quantize-pytorch": _version("vector-quantize-pytorch")},
      torch_threads=args.torch_threads,
      torch_interop=torch_interop, warmup=args.warmup, steps=args.steps,
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
