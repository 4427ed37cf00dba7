"""The paper's configuration at scale: train step and input pipeline.

    .venv/bin/python benchmarks/paper_scale.py [--parts model,input]
        [--models single,hier] [--dtypes float32,bfloat16]
        [--batch-per-device 128] [--steps 7] [--warmup 2]
        [--jpegs 512] [--workers 0,1,2] [--out BENCHMARKS.md]

model  configs/paper_single.py and configs/paper_hierarchical.py at 256x256,
       `--batch-per-device` images per device on every local device (the paper:
       128 per GPU). For each (model, dtype), in its own subprocess:
       - XLA's cost analysis of the jitted train step (FLOPs per image), taken
         from the program with the dense search (search_rows_per_block=0),
         because XLA counts a loop body once, not once per trip;
       - the compiled train step's memory analysis (temporaries per device) for
         the dense search and for the search blocked as vqjax does on
         accelerators (code_search.default_rows_per_block; on a CPU host this is
         XLA:CPU's buffer assignment, an estimate of the GPU's);
       - unless --steps 0: train img/s (median of the timed steps after warm-up,
         each waited for) and peak memory (accelerator: the device's
         peak_bytes_in_use; CPU: peak RSS of the process).
       From the FLOPs it prints the FLOP/s that 4,500 img/s needs (the paper's
       300 ImageNet epochs in a day) and the traffic of the [N, K] distance
       matrices, which XLA materialises in memory.
input  the grain training loader of vqjax (folder source: PIL JPEG decode,
       bicubic resize of the shorter side to 256, random 256x256 crop and flip,
       batches of 128) over `--jpegs` generated ImageNet-sized JPEGs
       (500x375, quality 90, cut from the built-in photos), for each worker
       count in `--workers`: img/s over the timed batches after warm-up; also
       the decode alone and decode + transform alone, per core.

A GPU machine runs it unchanged (`--batch-per-device 128`); on a CPU host use
a small batch for the timed part (the compile-time analysis at 128 still works).
Results go to a marked section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import child  # pylint: disable=wrong-import-position
import harness  # pylint: disable=wrong-import-position

BEGIN = "<!-- benchmarks/paper_scale.py: begin -->"
END = "<!-- benchmarks/paper_scale.py: end -->"
RESULT_PREFIX = "PAPER_SCALE_RESULT "
MODELS = {"single": "paper_single", "hier": "paper_hierarchical"}
TARGET_IMG_PER_S = 4500  # 300 epochs x 1,281,167 images / 86,400 s = 4,448
# NVIDIA H100 SXM5 datasheet, dense (no sparsity): BF16 989 TFLOP/s,
# TF32 495 TFLOP/s (what XLA uses for float32 convolutions by default), HBM3 3.35 TB/s.
H100 = dict(bf16_tflops=989.0, tf32_tflops=495.0, hbm_tb_s=3.35)
# (W, H): the most common ImageNet train size, and the same photos stored with the
# shorter side already at 256 (the fitting resize becomes a no-op).
JPEG_SETS = {"500x375": (500, 375), "341x256": (341, 256)}


# -- model part (child process) ------------------------------------------------------


def _paper_config(model_name: str, dtype: str, batch_per_device: int, num_devices: int):
  from vqjax import config_lib  # pylint: disable=import-outside-toplevel
  config = importlib.import_module(f"configs.{MODELS[model_name]}").get_config()
  config.model.dtype = dtype
  config.data.batch_size = batch_per_device * num_devices
  # No ImageNet here: the schedule's epoch length from the known split size.
  config.train.steps_per_epoch = 1_281_167 // config.data.batch_size
  config_lib.validate(config)
  return config


def _compile(config, search_rows_per_block: int):
  """The jitted train step for `config`, compiled for abstract inputs."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp

  from vqjax import parallel, train
  from vqjax import state as state_lib
  from vqjax.models import create_model

  model_config = config.model.copy_and_resolve_references()
  model_config.search_rows_per_block = search_rows_per_block
  model = create_model(model_config)
  tx = state_lib.create_optimizer(config)
  size, batch = config.data.image_size, config.data.batch_size
  mesh = parallel.create_mesh()
  state = jax.eval_shape(lambda: state_lib.create_train_state(model, tx, size, seed=0))
  state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)),
      state)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8,  # as the loaders give
                                sharding=parallel.data_sharding(mesh))
  t0 = time.perf_counter()
  compiled = train.jit_train_step(mesh).lower(state, {"image": images}).compile()
  return compiled, time.perf_counter() - t0


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {k: float(cost.get(k, 0.0)) for k in ("flops", "bytes accessed")}


def _memory(compiled) -> dict:
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  return dict(temp_gib=mem.temp_size_in_bytes / 2**30,
              argument_gib=mem.argument_size_in_bytes / 2**30,
              output_gib=mem.output_size_in_bytes / 2**30)


def _search_rows(config, num_devices: int) -> dict:
  """Rows and codes per level of the nearest-code search in one step (global)."""
  from vqjax import capacity  # pylint: disable=import-outside-toplevel
  m, batch = config.model, config.data.batch_size
  out = {}
  for name, (h, w) in capacity.latent_shapes(m.kind, config.data.image_size).items():
    rows = batch * h * w
    out[name] = dict(rows=rows, codes=int(m.num_codes),
                     rows_per_device=rows // num_devices)
  return out


def child_model(spec: dict) -> dict:
  from vqjax import parallel  # pylint: disable=import-outside-toplevel
  # As `python -m vqjax.main` runs on a CPU host: one XLA device per core.
  cores = len(os.sched_getaffinity(0))
  parallel.configure_cpu_devices(
      _paper_config(spec["model"], spec["dtype"], spec["batch_per_device"], cores), cores)
  parallel.configure_cpu_backend()

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np

  from vqjax import train
  from vqjax import state as state_lib
  from vqjax.models import create_model

  num_devices = jax.local_device_count()
  config = _paper_config(spec["model"], spec["dtype"], spec["batch_per_device"], num_devices)
  out = dict(backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
             num_devices=num_devices, batch=config.data.batch_size,
             # XLA's cost and memory analyses of an SPMD program are per device.
             batch_per_device=spec["batch_per_device"],
             search=_search_rows(config, num_devices))

  dense, out["compile_dense_s"] = _compile(config, search_rows_per_block=0)
  out["cost_dense"] = _cost(dense)
  out["memory_dense"] = _memory(dense)
  del dense
  # The search as vqjax blocks it on accelerators (on a GPU: its default, -1).
  from vqjax.quantizers import code_search  # pylint: disable=import-outside-toplevel
  m = config.model
  rows = code_search.default_rows_per_block(min(m.num_codes, m.search_chunk_size or m.num_codes),
                                            backend="gpu", num_devices=num_devices)
  blocked, out["compile_blocked_s"] = _compile(config, search_rows_per_block=rows)
  out["memory_blocked"] = _memory(blocked)
  out["search_rows_per_block"] = rows
  del blocked

  steps, warmup = spec["steps"], spec["warmup"]
  if steps > 0:
    mesh = parallel.create_mesh()
    model = create_model(config.model)
    tx = state_lib.create_optimizer(config)
    size, batch = config.data.image_size, config.data.batch_size
    state = parallel.replicate(state_lib.create_train_state(model, tx, size, seed=0), mesh)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
    train_batch = parallel.global_batch({"image": images}, mesh)
    step_fn = train.jit_train_step(mesh)
    holder = dict(state=state)

    def one_step():
      holder["state"], metrics = step_fn(holder["state"], train_batch)
      holder["loss"] = float(jax.block_until_ready(metrics)["loss"])
      jax.block_until_ready(holder["state"])

    out["train"] = child.summary(child.timed(one_step, warmup, steps), warmup, batch)
    out["loss"] = holder["loss"]
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
  out["peak_rss_mib"] = child.max_rss_mib()
  return out


# -- input part (in process) ---------------------------------------------------------


def write_jpegs(root: Path, count: int, size: tuple[int, int], quality: int = 90) -> float:
  """`count` JPEGs of `size` (W, H) cut from the built-in photos; returns mean KiB per file."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image

  from vqjax import data
  photos = [data.builtin_photo(n) for n in data.BUILTIN_PHOTOS]
  rng = np.random.default_rng(0)
  w, h = size
  total = 0
  for i in range(count):
    photo = photos[i % len(photos)]
    ph, pw = photo.shape[:2]
    # A random crop of the target's aspect at a random scale, resized to (w, h).
    ch_max = min(ph, pw * h // w)
    ch = int(rng.integers(ch_max // 2, ch_max + 1))
    cw = min(pw, ch * w // h)
    top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((w, h), Image.BICUBIC)
    path = root / f"{i // 100:03d}" / f"img_{i:05d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    crop.save(path, quality=quality)
    total += path.stat().st_size
  return total / count / 1024


def _rate(n_items: int, fn) -> float:
  t0 = time.perf_counter()
  fn()
  return n_items / (time.perf_counter() - t0)


def _measure_folder(root: Path, args) -> dict:
  """Per-process decode / transform rates and the grain loader's rate per worker count."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from vqjax import data
  paths = data.list_image_files(str(root))[:200]
  rng = np.random.default_rng(0)
  out = dict(decode_img_s=_rate(len(paths), lambda: [data.load_image_file(p)
                                                     for p in paths]),
             transform_img_s=_rate(len(paths), lambda: [
                 data.random_fitted_crop_flip(
                     data.load_image_file(p), 256, 256, rng) for p in paths]),
             loader={})
  for workers in args.workers:
    config = data.default_data_config()
    config.name, config.train_dir, config.val_fraction = "folder", str(root), 0.0
    config.image_size, config.resize_size = 256, 256
    config.batch_size, config.num_workers = args.input_batch, workers
    it = iter(data.create_train_loader(config, seed=0))
    for _ in range(args.input_warmup):
      next(it)
    t0 = time.perf_counter()
    for _ in range(args.input_batches):
      batch = next(it)
    elapsed = time.perf_counter() - t0
    assert batch["image"].shape == (args.input_batch, 256, 256, 3), batch["image"].shape
    out["loader"][workers] = args.input_batch * args.input_batches / elapsed
    print(f"[paper_scale] input {root.name}: {workers} workers: "
          f"{out['loader'][workers]:.0f} img/s", flush=True)
    del it
  return out


def measure_input(args) -> dict:
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
    flags.FLAGS.mark_as_parsed()
  out = dict(cores=len(os.sched_getaffinity(0)), jpegs=args.jpegs, batch=args.input_batch,
             batches=args.input_batches, sets={})
  with tempfile.TemporaryDirectory(prefix="vqjax_jpegs_") as tmp:
    for label, size in JPEG_SETS.items():
      root = Path(tmp) / label
      kib = write_jpegs(root, args.jpegs, size)
      out["sets"][label] = dict(size=size, mean_kib=kib, **_measure_folder(root, args))
  return out


# -- orchestration and report --------------------------------------------------------


def run_child(spec: dict, timeout: float) -> dict:
  label = f"{spec['model']}/{spec['dtype']}"
  result = harness.spawn_child(Path(__file__).resolve(), spec, timeout, RESULT_PREFIX, label)
  if "error" not in result:
    tr = result.get("train")
    print(f"[paper_scale] {label}: "
          f"{result['cost_dense']['flops'] / result['batch_per_device'] / 1e9:.1f}"
          " GFLOP/img" + (f", {tr['img_per_s']:.1f} img/s" if tr else "")
          + f", {result['wall_s']:.0f} s", flush=True)
  return result


def _f(x, digits=1) -> str:
  return harness.fmt(x, digits)


def model_report(rows: list[dict], meta: dict) -> list[str]:
  lines = [
      f"Per-device batch {meta['batch_per_device']} at 256x256 on {meta['num_devices']} "
      f"{meta['backend']} device(s) ({meta['device_kind']}); {meta['steps']} timed steps "
      f"after {meta['warmup']} warm-up" if meta["steps"] else
      f"Per-device batch {meta['batch_per_device']} at 256x256, compile-time analysis only "
      f"({meta['backend']}, {meta['num_devices']} device(s)).",
      "",
      "| model | dtype | GFLOP / img (train step) | TFLOP/s for 4,500 img/s | "
      "% of H100 peak (bf16 / TF32) | temp GiB, dense search | temp GiB, blocked search | "
      "train img/s | peak memory |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in rows:
    res = r["result"]
    if "error" in res:
      lines.append(f"| {r['model']} | {r['dtype']} | error: {res['error']} | | | | | | |")
      continue
    gflop = res["cost_dense"]["flops"] / res["batch_per_device"] / 1e9
    need = gflop * TARGET_IMG_PER_S / 1e3
    peak = (f"{100 * need / H100['bf16_tflops']:.0f}% / "
            f"{100 * need / H100['tf32_tflops']:.0f}%")
    tr = res.get("train")
    mem = (f"{res['device_peak_gib']:.1f} GiB (device)" if "device_peak_gib" in res else
           f"{res['peak_rss_mib'] / 1024:.1f} GiB (RSS)" if tr else "-")
    lines.append(
        f"| {r['model']} | {r['dtype']} | {gflop:.1f} | {need:.0f} | {peak} | "
        f"{_f(res['memory_dense'].get('temp_gib'))} | "
        f"{_f(res['memory_blocked'].get('temp_gib'))} | "
        f"{_f(tr['img_per_s']) if tr else '-'} | {mem} |")
  first = next((r["result"] for r in rows if "error" not in r["result"]), None)
  if first:
    lines += ["", "Nearest-code search per step at this batch: XLA materialises each "
              "[rows, K] float32 distance block in memory; on accelerators vqjax reduces "
              "it with one argmin, so it is written once and read once:", ""]
    for r in rows:
      if "error" in r["result"] or r["dtype"] != rows[0]["dtype"]:
        continue
      for level, s in r["result"]["search"].items():
        gib = s["rows_per_device"] * s["codes"] * 4 / 2**30
        ms = 2 * gib * 2**30 / (H100["hbm_tb_s"] * 1e12) * 1e3
        budget = meta["batch_per_device"] / TARGET_IMG_PER_S * 1e3
        lines.append(f"- {r['model']} {level}: {s['rows_per_device']:,} rows x K = "
                     f"{s['codes']:,} per device = {gib:.1f} GiB of distances, "
                     f">= {ms:.1f} ms of H100 HBM traffic of a {budget:.1f} ms step budget.")
  return lines


def input_report(res: dict) -> list[str]:
  workers = list(next(iter(res["sets"].values()))["loader"])
  lines = [
      f"{res['jpegs']} generated JPEGs per set (quality 90, cut from the built-in photos), "
      f"vqjax's folder training loader (grain, resize_size 256, random 256x256 crop and flip, "
      f"uint8 batches of {res['batch']}, {res['batches']} batches timed after warm-up), "
      f"{res['cores']} cores:", "",
      "| JPEGs | mean KiB | decode, 1 process | decode + crop/resize/flip, 1 process | "
      + " | ".join(f"loader, {w} workers" for w in workers) + " |",
      "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in workers) + " |"]
  for label, r in res["sets"].items():
    lines.append(f"| {label} | {r['mean_kib']:.0f} | {r['decode_img_s']:.0f} | "
                 f"{r['transform_img_s']:.0f} | "
                 + " | ".join(f"{r['loader'][w]:.0f}" for w in workers) + " |")
  lines += ["", "img/s. At the single-process decode + transform rate, 4,500 img/s needs "
            "about " + ", ".join(
                f"{TARGET_IMG_PER_S / r['transform_img_s']:.0f} cores ({label})"
                for label, r in res["sets"].items()) + " of this kind."]
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--parts", default="model,input")
  parser.add_argument("--models", default="single,hier")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--batch-per-device", type=int, default=128)
  parser.add_argument("--steps", type=int, default=7, help="timed steps; 0: analysis only")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--jpegs", type=int, default=512)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--input-batch", type=int, default=128)
  parser.add_argument("--input-warmup", type=int, default=1)
  parser.add_argument("--input-batches", type=int, default=6)
  parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
  parser.add_argument("--timeout", type=float, default=3600)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    result = child_model(json.loads(args.child))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0
  sys.path.insert(0, str(REPO))
  args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
  parts = {p.strip() for p in args.parts.split(",") if p.strip()}
  if parts - {"model", "input"}:
    parser.error(f"unknown parts {sorted(parts - {'model', 'input'})}")
  start = time.perf_counter()
  sections = []
  rows = []
  if "model" in parts:
    for model in args.models.split(","):
      if model not in MODELS:
        parser.error(f"unknown model {model!r}; choose from {sorted(MODELS)}")
      for dtype in args.dtypes.split(","):
        spec = dict(model=model, dtype=dtype, batch_per_device=args.batch_per_device,
                    steps=args.steps, warmup=args.warmup)
        rows.append(dict(model=model, dtype=dtype, result=run_child(spec, args.timeout)))
    ok = next((r["result"] for r in rows if "error" not in r["result"]), {})
    meta = dict(batch_per_device=args.batch_per_device, steps=args.steps, warmup=args.warmup,
                backend=ok.get("backend", "?"), device_kind=ok.get("device_kind", "?"),
                num_devices=ok.get("num_devices", "?"))
    sections += ["### Train step (paper configuration)", ""] + model_report(rows, meta) + [""]
  if "input" in parts:
    sections += ["### Input pipeline", ""] + input_report(measure_input(args)) + [""]

  py = Path(sys.executable)
  py_shown = str(py.relative_to(REPO)) if py.is_relative_to(REPO) else "python"
  command = " ".join([py_shown, "benchmarks/paper_scale.py"]
                     + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
  date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
  header = [BEGIN, "## Paper scale: 256x256 train step and input pipeline", "",
            f"`{command}` — {date}, {harness.cpu_model()} "
            f"({len(os.sched_getaffinity(0))} cores, {harness.mem_total_gib():.0f} GiB), "
            f"jax {harness.package_version('jax')}, Python {platform.python_version()}, "
            f"{(time.perf_counter() - start) / 60:.1f} min.", ""]
  report = "\n".join(header + sections + [END, ""])
  print()
  print(report)
  if args.out:
    harness.write_section(Path(args.out), report, BEGIN, END)
    print(f"[paper_scale] wrote the section to {args.out}")
  return 1 if any("error" in r["result"] for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
