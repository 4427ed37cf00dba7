"""Copies the result files of finished runs (config.json, eval/metrics.json,
eval/code_histograms.npz; no checkpoints) from a runs directory into the repo.

  python scripts/collect_runs.py /work/runs/reproduction docs/reproduction/runs

With SRC and DST the same directory (the committed runs redrawn in place) it copies nothing.
"""

import os
import shutil
import sys

KEEP = ("config.json", os.path.join("eval", "metrics.json"),
        os.path.join("eval", "code_histograms.npz"))


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
  print(f"copied {copied} files of finished runs from {src} to {dst}")


if __name__ == "__main__":
  main(*sys.argv[1:3])
