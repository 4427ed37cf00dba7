"""How cost grows: train img/s and peak RSS against the codebook size K and the
batch, vqjax beside the PyTorch reference, in one run.

    python benchmarks/scaling.py [--ks 1024,4096,16384,65536] [--batches 8,32,128]
        [--steps 4] [--out BENCHMARKS.md] [--png docs/scaling.png]

Axes (single-level model of benchmark.py's configuration a, 64x64 images,
C_s = 160, D = 8):
  K      K in --ks at batch 32;
  batch  --batches at K = 8192.
Every point runs vqjax (one XLA CPU device per core, as `python -m vqjax.main`)
and the reference (torch.set_num_threads(cores)) in their own processes, timed
in turns (harness.run_interleaved); peak RSS is each process's `ru_maxrss`,
compilation included. Writes a table into --out (between this script's markers)
and a figure (--png): img/s and peak RSS per axis, both implementations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import harness  # noqa: E402  pylint: disable=wrong-import-position

BEGIN = "<!-- benchmarks/scaling.py: begin -->"
END = "<!-- benchmarks/scaling.py: end -->"
CODE_DIM = 8


def recipe(k: int):
  # single_model(K_h, D_h, S): K_s = 2 K_h at D = 8 (Eq. 5), C_s = 160 (Eq. 4).
  return ("single_model", (k // 2, CODE_DIM, 64))


def run_point(axis: str, value: int, k: int, batch: int, args, use_ref: bool) -> dict:
  label = f"{axis}={value}"
  specs = [harness.make_spec("vqjax", f"scaling[{label}]", recipe(k), 64, batch, args)]
  if use_ref:
    specs.append(harness.make_spec("torch", f"scaling[{label}]", recipe(k), 64, batch, args))
  results = harness.run_interleaved(specs, args)
  row = dict(axis=axis, value=value, k=k, batch=batch)
  for impl, res in zip(("vqjax", "ref"), results):
    if "error" in res:
      row[impl] = dict(error=res["error"])
    else:
      row[impl] = dict(img_per_s=res["train"]["img_per_s"], median_s=res["train"]["median_s"],
                       peak_rss_mib=res["peak_rss_mib"], first_step_s=res["train"]["first_step_s"],
                       load_1min_after=res.get("load_1min_after"))
  return row


def _cell(row, impl, key, digits=1):
  v = row.get(impl, {}).get(key)
  if v is None:
    return "failed" if "error" in row.get(impl, {}) else "-"
  return f"{v:,.{digits}f}"


def _ratio(row):
  a = row.get("vqjax", {}).get("img_per_s")
  b = row.get("ref", {}).get("img_per_s")
  return f"{a / b:.2f}" if a and b else "-"


def report(meta: dict, rows: list[dict], png: str) -> str:
  lines = [
      BEGIN,
      "## How cost grows with K and with the batch (CPU)",
      "",
      f"Command: `{meta['command']}`  ",
      f"Machine: {meta['cpu']}, {meta['machine_cores']} cores"
      + (f" (this run pinned to CPU {meta['cpus']})" if meta["cpus"] else "")
      + "; load average before "
      f"{meta['load_before']}, after {meta['load_after']}; {meta['date']} "
      f"({meta['wall_min']:.1f} min)  ",
      "Model: single-level, 64x64, C_s = 160, D = 8 (benchmark.py's configuration a with "
      "K and the batch varied); vqjax with its defaults (one XLA CPU device per core, "
      "nearest-code search in 128-row blocks, all K codes per block); reference "
      f"`torch.set_num_threads({meta['torch_threads']})`. {meta['warmup']} warm-up + "
      f"{meta['steps']} timed steps each, the two taking turns in blocks of "
      f"{meta['block']}; img/s = batch / median step; peak RSS = `ru_maxrss` of each "
      "process, compilation included.",
      "",
      "| axis | K | batch | vqjax img/s | ref img/s | ratio | vqjax peak RSS MiB | "
      "ref peak RSS MiB |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in rows:
    lines.append(f"| {r['axis']} | {r['k']:,} | {r['batch']} | {_cell(r, 'vqjax', 'img_per_s')} | "
                 f"{_cell(r, 'ref', 'img_per_s')} | {_ratio(r)} | "
                 f"{_cell(r, 'vqjax', 'peak_rss_mib', 0)} | {_cell(r, 'ref', 'peak_rss_mib', 0)} |")
  if png:
    lines += ["", f"![scaling]({png})"]
  lines += ["", END, ""]
  return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
  styles = {"vqjax": dict(color="tab:blue", marker="o", label="vqjax"),
            "ref": dict(color="tab:orange", marker="s",
                        label="PyTorch reference (vector-quantize-pytorch)")}
  for col, (axis, xlabel) in enumerate((("K", "codebook size K (batch 32)"),
                                        ("batch", "batch size (K = 8192)"))):
    pts = [r for r in rows if r["axis"] == axis]
    xs = [r["value"] for r in pts]
    for row_i, (key, ylabel) in enumerate((("img_per_s", "train images / s"),
                                           ("peak_rss_mib", "peak RSS (MiB)"))):
      ax = axes[row_i][col]
      for impl, style in styles.items():
        ys = [r.get(impl, {}).get(key) for r in pts]
        good = [(x, y) for x, y in zip(xs, ys) if y]
        if good:
          ax.plot(*zip(*good), **style)
          for x, y in good:  # the value at each point
            ax.annotate(f"{y:,.0f}" if y >= 10 else f"{y:.1f}", (x, y), textcoords="offset points",
                        xytext=(0, 6 if impl == "vqjax" else -12), ha="center", fontsize=7,
                        color=style["color"])
      ax.set_xscale("log", base=2)
      ax.margins(y=0.15)
      ax.set_yscale("log")
      ax.set_xticks(xs)
      ax.set_xticklabels([f"{x:,}" for x in xs])
      ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
          lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
      ax.grid(True, which="both", alpha=0.3)
      if row_i == 0 and col == 0:
        ax.legend(fontsize=8)
  fig.suptitle("Train step cost vs. K and batch (single-level, D = 8, 64x64, CPU)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--ks", default="1024,4096,16384,65536")
  p.add_argument("--batches", default="8,32,128")
  harness.add_timing_args(p, steps=4)
  p.add_argument("--reference", choices=("auto", "off"), default="auto")
  p.add_argument("--out", default=str(harness.REPO / "BENCHMARKS.md"))
  p.add_argument("--png", default="docs/scaling.png", help="relative to the repository")
  p.add_argument("--json", default="")
  p.add_argument("--replot", default="", help="only redraw --png from a --json of a run")
  args = p.parse_args(argv)
  if args.replot:
    plot(json.loads(Path(args.replot).read_text())["rows"], str(harness.REPO / args.png))
    return 0
  harness.apply_timing_args(args)
  use_ref = args.reference == "auto" and harness.reference_available()
  start = time.perf_counter()
  load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
  rows = []
  for k in (int(v) for v in args.ks.split(",") if v):
    rows.append(run_point("K", k, k, 32, args, use_ref))
  for b in (int(v) for v in args.batches.split(",") if v):
    rows.append(run_point("batch", b, 8192, b, args, use_ref))
  meta = dict(
      command="python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
      cpu=harness.cpu_model(), cores=len(os.sched_getaffinity(0)),
      machine_cores=os.cpu_count(), cpus=args.cpus,
      load_before=load_before, load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
      date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
      wall_min=(time.perf_counter() - start) / 60, torch_threads=args.torch_threads,
      warmup=args.warmup, steps=args.steps, block=args.block,
      python=platform.python_version())
  if args.png:
    png_path = harness.REPO / args.png
    png_path.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, str(png_path))
  text = report(meta, rows, args.png)
  print(text)
  if args.out:
    harness.write_section(Path(args.out), text, BEGIN, END)
  if args.json:
    Path(args.json).write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
