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
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from child import build_model_config
from harness import CASES, MEMORY_RECIPE, REPO, fmt, make_spec

BEGIN = "<!-- benchmarks/benchmark.py: begin -->"
END = "<!-- benchmarks/benchmark.py: end -->"


# -- report --------------------------------------------------------------------------



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
                 f"{fmt(jt)} | {fmt(rt)} | {_ratio(jt, rt)} | {fmt(j1)} | {_ratio(j1, rt)} | "
                 f"{fmt(je)} | {fmt(re_)} | "
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
    lines.append(f"| {r['name']} | {fmt(pj, 0)} | {fmt(pr, 0)} | {equal} | {fmt(mj, 0)} | "
                 f"{fmt(mr, 0)} | {_ratio(mj, mr)} | {fmt(ij, 0)} / {fmt(ir, 0)} | "
                 f"{fmt(fj, 2)} / {fmt(fr, 2)} |")

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
                   f"{fmt(_get(res, 'peak_rss_mib'), 0)} | "
                   f"{fmt(_get(res, 'train', 'img_per_s'))} | "
                   f"{fmt(_get(res, 'train', 'first_step_s'), 2)} |")
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
          f"| {r['name']} | {fmt(_get(cold, 'train', 'first_step_s'), 2)} | "
          f"{fmt(_get(warm, 'train', 'first_step_s'), 2)} | "
          f"{fmt(_get(cold, 'launch_to_first_step_s'), 1)} | {fmt(_get(warm, 'launch_to_first_step_s'), 1)} | "
          f"{fmt(_get(r['ref'], 'train', 'first_step_s', missing=ref_missing), 2)} | "
          f"{fmt(_get(r['ref'], 'launch_to_first_step_s', missing=ref_missing), 1)} |")

  bf = extras.get("bf16")
  if bf:
    lines += ["", "### bfloat16 convolutions (vqjax train img/s; distances and EMA stay float32)",
              "", "| config | float32 | bfloat16 | bf16 / f32 | peak RSS MiB f32 / bf16 |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, (f32, b16) in bf.items():
      a, b = _get(f32, "train", "img_per_s"), _get(b16, "train", "img_per_s")
      lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {_ratio(b, a)} | "
                   f"{fmt(_get(f32, 'peak_rss_mib'), 0)} / {fmt(_get(b16, 'peak_rss_mib'), 0)} |")
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="a,b,c,d",
                      help="comma-separated of a,b,c,d (or 'none': extras only)")
  harness.add_timing_args(parser, steps=10, steps_help="timed steps (>= 7 for reports)")
  parser.add_argument("--extras", default="quantizer,memory,bf16,compile",
                      help="comma-separated of quantizer,memory,bf16,compile, or 'none'")
  parser.add_argument("--memory-steps", type=int, default=3,
                      help="timed steps of the K=65536 memory case")
  parser.add_argument("--reference", choices=("auto", "off"), default="auto",
                      help="'off' skips the PyTorch reference")
  parser.add_argument("--one-device", action=argparse.BooleanOptionalAction, default=True,
                      help="also time vqjax on a single XLA CPU device")
  parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the vqjax runs")
  parser.add_argument("--vqjax-repo", default="",
                      help="time the vqjax of this checkout (e.g. a worktree of an older "
                           "commit) with this benchmark code")
  parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"),
                      help="markdown file whose benchmark section is replaced ('' = none)")
  parser.add_argument("--json", default="", help="also write the raw results here")
  args = parser.parse_args(argv)
  harness.apply_timing_args(args)

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
  use_ref = args.reference == "auto" and harness.reference_available()
  if args.reference == "auto" and not use_ref:
    print("[benchmark] torch / vector-quantize-pytorch not installed: reference columns "
          "will say so (pip install -r benchmarks/requirements.txt)", flush=True)

  rows, raw = [], {}
  torch_interop = None
  for name in names:
    for case in cases[name]:
      model = build_model_config(case.recipe)
      want_q = "quantizer" in extras_wanted and case.name == "a"
      specs = [make_spec("vqjax", case.name, case.recipe, case.image_size, case.batch, args,
                         eval=True, quantizer_share=want_q)]
      if args.one_device:
        specs.append(make_spec("vqjax", case.name + "-1dev", case.recipe, case.image_size,
                               case.batch, args, cpu_devices=1))
      if use_ref:
        specs.append(make_spec("torch", case.name, case.recipe, case.image_size, case.batch,
                               args, eval=True))
      results = harness.run_interleaved(specs, args)
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
    model = build_model_config(MEMORY_RECIPE)
    has_rows = "search_rows_per_block" in model.get("quantizer", model)
    variants = ([dict(search_chunk_size=4096), dict(search_chunk_size=0)] if not has_rows else
                [dict(search_chunk_size=4096), dict(search_chunk_size=0),
                 dict(search_chunk_size=4096, search_rows_per_block=0),
                 dict(search_chunk_size=0, search_rows_per_block=0)])
    for overrides in variants:
      label = ",".join(f"{k}={v}" for k, v in overrides.items())
      spec = make_spec("vqjax", f"memory-K65536[{label}]", MEMORY_RECIPE, 64, 32, args,
                       steps=args.memory_steps, overrides=overrides)
      res = harness.run_child(spec, args.timeout)
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
        spec = make_spec("vqjax", f"{case.name}-{label}-cache", case.recipe, case.image_size,
                         case.batch, args, steps=1, compilation_cache_dir=cache_dir)
        spec["warmup"] = 1
        one_step = argparse.Namespace(**dict(vars(args), steps=1, block=1))
        res = harness.run_interleaved([spec], one_step)[0]
        runs.append(res)
      extras["compile"][case.name] = runs
    raw["compile"] = extras["compile"]

  if "bf16" in extras_wanted:
    extras["bf16"] = {}
    for row in rows:
      if row["name"] not in ("a", "b"):
        continue
      case = next(c for c in cases[row["name"]] if c.name == row["name"])
      spec = make_spec("vqjax", f"{case.name}-bf16", case.recipe, case.image_size, case.batch,
                       args, overrides=dict(dtype="bfloat16"))
      res = harness.run_child(spec, args.timeout)
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
      cpu=harness.cpu_model(), cores=len(os.sched_getaffinity(0)),
      mem_gib=harness.mem_total_gib(),
      machine_cores=os.cpu_count(), cpus=args.cpus,
      load_before=load_before, load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
      date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
      wall_min=(time.perf_counter() - start) / 60,
      versions={"python": platform.python_version(),
                **{pkg: harness.package_version(pkg)
                   for pkg in ("jax", "jaxlib", "flax", "optax", "torch",
                               "vector-quantize-pytorch")}},
      torch_threads=args.torch_threads,
      torch_interop=torch_interop, warmup=args.warmup, steps=args.steps, block=args.block,
      vqjax_devices=next((r['vqjax'].get('num_devices') for r in rows
                          if r['vqjax'] and 'num_devices' in r['vqjax']), '?'),
      memory_steps=args.memory_steps,
      reference_state=("installed" if use_ref else
                       "not run" if args.reference == "off" else harness.NOT_INSTALLED))
  report = build_report(meta, rows, extras)
  print()
  print(report)
  if args.out:
    harness.write_section(Path(args.out), report, BEGIN, END)
    print(f"[benchmark] wrote the section to {args.out}")
  if args.json:
    Path(args.json).write_text(json.dumps(dict(meta=meta, results=raw), indent=1))
  failed = [r["name"] for r in rows if "error" in r["vqjax"]]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
