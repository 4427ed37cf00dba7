"""Interleaved A/B of vqjax variants (XLA flags, model fields, devices, batch) and
the PyTorch reference, train img/s, in one run.

    python benchmarks/ab.py --config c-hier --steps 8 \
        --variant base --variant 'noynnconv:xla=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution' \
        --variant 'ref:torch'

A variant is NAME[:KEY=VALUE[;KEY=VALUE...]] with keys
  xla=FLAGS        extra XLA_FLAGS (vqjax)
  devices=N        XLA CPU devices (vqjax; 0 = one per core, the default)
  batch=N          global batch (default: the configuration's)
  model.FIELD=V    a config.model override (vqjax; V parsed as JSON, else a string)
  env.NAME=V       an environment variable of that child only
  repo=PATH        import vqjax from this checkout instead (e.g. a worktree of main)
  torch            the PyTorch reference (threads=N sets torch.set_num_threads)
Every variant runs in its own process; all are warmed up one after another and then
timed taking turns in blocks (harness.run_interleaved), so a changing background
load hits every variant alike. Reported: img/s (batch / median step) and each
variant's ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import harness  # noqa: E402  pylint: disable=wrong-import-position


def parse_variant(text: str) -> tuple[str, dict]:
  name, _, rest = text.partition(":")
  opts: dict = {}
  for item in filter(None, rest.split(";")):
    key, eq, value = item.partition("=")
    if not eq:
      opts[key] = True
      continue
    opts[key] = value
  return name, opts


def build_spec(name: str, opts: dict, case, args) -> dict:
  overrides = {}
  for key, value in opts.items():
    if key.startswith("model."):
      try:
        overrides[key[6:]] = json.loads(value)
      except json.JSONDecodeError:
        overrides[key[6:]] = value
  batch = int(opts.get("batch", case.batch))
  impl = "torch" if opts.get("torch") else "vqjax"
  spec = harness.make_spec(
      impl, f"{case.name}[{name}]", case.recipe, case.image_size, batch, args,
      overrides=overrides, cpu_devices=int(opts.get("devices", args.vqjax_cpu_devices)))
  if impl == "torch" and "threads" in opts:
    spec["threads"] = int(opts["threads"])
  if "xla" in opts:
    spec["xla_flags"] = opts["xla"]
  if "repo" in opts:
    spec["repo"] = opts["repo"]
  env = {k[4:]: v for k, v in opts.items() if k.startswith("env.")}
  if env:
    spec["env"] = env
  return spec


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="c-hier")
  p.add_argument("--variant", action="append", required=True)
  harness.add_timing_args(p, steps=8)
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  harness.apply_timing_args(args)
  case = next(c for cases in harness.CASES.values() for c in cases if c.name == args.config)
  variants = [parse_variant(v) for v in args.variant]
  specs = [build_spec(n, o, case, args) for n, o in variants]
  load_before = os.getloadavg()
  results = harness.run_interleaved(specs, args)
  load_after = os.getloadavg()
  print(f"\n{case.name} ({case.description}), {args.steps} timed steps each in blocks of "
        f"{args.block}, load {load_before[0]:.2f} -> {load_after[0]:.2f}, "
        f"{len(os.sched_getaffinity(0))} usable cores")
  base = None
  rows = []
  for (name, opts), spec, res in zip(variants, specs, results):
    if "error" in res:
      print(f"| {name} | failed: {res['error']} |")
      continue
    tr = res["train"]
    ips = tr["img_per_s"]
    base = base or ips
    rows.append(dict(name=name, opts=opts, img_per_s=ips, median_s=tr["median_s"],
                     first_step_s=tr["first_step_s"], peak_rss_mib=res["peak_rss_mib"],
                     times_s=tr["times_s"], loss=res.get("loss")))
    print(f"| {name} | {ips:6.1f} img/s | {ips / base:5.2f}x | median {1e3 * tr['median_s']:7.1f} ms "
          f"(min {1e3 * tr['min_s']:.1f}) | first step {tr['first_step_s']:.1f} s | "
          f"RSS {res['peak_rss_mib']:.0f} MiB | loss {res.get('loss')} |")
  if args.json:
    Path(args.json).write_text(json.dumps(dict(config=case.name, load=[load_before, load_after],
                                               rows=rows), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
