"""Copies the result files of finished runs (config.json, eval/metrics.json,
eval/code_histograms.npz; no checkpoints) from a runs directory into the repo,
and the evaluations' scalar curves of their TensorBoard events (tags eval/*) as
eval/scalars.json {tag: [[step, value], ...]} (the events themselves stay out:
image summaries make them ~1 MB a run; scripts/regime_curves.py reads either).

  python scripts/collect_runs.py /work/runs/reproduction docs/reproduction/runs

With SRC and DST the same directory (the committed runs redrawn in place) it copies nothing.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vqjax import writers  # noqa: E402  pylint: disable=g-import-not-at-top

KEEP = ("config.json", os.path.join("eval", "metrics.json"),
        os.path.join("eval", "code_histograms.npz"))

SCALARS = os.path.join("eval", "scalars.json")


def eval_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of the eval/* scalars in run_dir's own event files
  ({} without any)."""
  return {tag: points for tag, points in writers.read_scalars(run_dir).items()
          if tag.startswith("eval/")}


def main(src: str, dst: str) -> None:
  if os.path.exists(dst) and os.path.samefile(src, dst):
    print(f"{src} is {dst}: nothing to copy")
    return
  copied = 0
  for root, _, files in os.walk(src):
    if "config.json" not in files or not os.path.exists(os.path.join(root, KEEP[1])):
      continue  # not a finished run
    for rel in KEEP:
      if os.path.exists(os.path.join(root, rel)):
        target = os.path.join(dst, os.path.relpath(root, src), rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)
        copied += 1
    scalars = eval_scalars(root)
    if scalars:
      target = os.path.join(dst, os.path.relpath(root, src), SCALARS)
      with open(target, "w") as f:
        json.dump(scalars, f)
      copied += 1
  print(f"copied {copied} files of finished runs from {src} to {dst}")


if __name__ == "__main__":
  main(*sys.argv[1:3])
