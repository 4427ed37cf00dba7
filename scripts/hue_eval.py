"""Does a model generalize to colours it never saw? PSNR on hue-rotated crops.

  python scripts/hue_eval.py runs/noaug runs/aug --corpus=data/photo_corpus/val \
      --grid=docs/green_subject.png --out=runs/hue_eval.json

For each run (vqjax.load, latest checkpoint) reports the mean per-image PSNR
(dB; uint8 reconstructions of vqjax.load, pixels on [0, 1]) on
  builtin      the builtin validation crops (data.image_size grid of chelsea, coffee)
  hue+<a>      the same crops with every pixel's HSV hue turned by a degrees
               (vqjax.data.augment.rotate_hue; saturation and value kept)
  corpus       the 64x64 crops in --corpus (real photos never used in training)
  corpus_green the corpus crops whose pixels are mostly green (HSV hue in
               [75, 165) degrees with saturation >= 0.25 for >= half the pixels)
and gap = builtin - mean over the hue-rotated sets. --grid draws the 8 greenest
corpus crops: originals, then one row of reconstructions per run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vqjax  # noqa: E402
from vqjax.data import augment, export  # noqa: E402

ANGLES = (90, 180, 270)


def psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of uint8 [N, H, W, 3] images on the [0, 1] range."""
  mse = np.mean((x / 255.0 - y / 255.0) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(1.0 / mse)


def green_fraction(images: np.ndarray) -> np.ndarray:
  """Fraction of each image's pixels that are saturated green ([N])."""
  hsv = augment.rgb_to_hsv(images / 255.0)
  hue = hsv[..., 0] * 360
  green = (hue >= 75) & (hue < 165) & (hsv[..., 1] >= 0.25)
  return green.mean(axis=(1, 2))


def save_grid(rows: list[np.ndarray], labels: list[str], path: str, scale: int = 2):
  """Rows of uint8 [n, h, w, 3] images, upscaled `scale`x (nearest), a label left of each."""
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  pad = lambda row: np.concatenate([np.pad(x, ((2, 2), (2, 2), (0, 0)), constant_values=255)
                                    for x in row], axis=1)
  grid = np.concatenate([pad(row) for row in rows], axis=0)
  grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  label_w = 110
  canvas = Image.new("RGB", (label_w + grid.shape[1], grid.shape[0]), "white")
  canvas.paste(Image.fromarray(grid), (label_w, 0))
  draw = ImageDraw.Draw(canvas)
  row_h = grid.shape[0] // len(rows)
  for k, label in enumerate(labels):
    draw.text((4, k * row_h + row_h // 2 - 6), label, fill="black")
  canvas.save(path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--corpus", default="")
  parser.add_argument("--grid", default="")
  parser.add_argument("--out", default="")
  parser.add_argument("--labels", default="", help="comma-separated row labels of the runs")
  args = parser.parse_args()
  results, grid_rows, sets = {}, [], {}
  for workdir in args.workdirs:
    model = vqjax.load(workdir, batch_size=32)
    if not sets:
      crops = np.stack([c for _, c in export.split_records(model.config.data, "validation")])
      sets["builtin"] = crops
      for a in ANGLES:
        sets[f"hue+{a}"] = augment.rotate_hue(crops, a)
      if args.corpus:
        files = sorted(glob.glob(os.path.join(args.corpus, "*.png")))
        corpus = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        sets["corpus"] = corpus
        frac = green_fraction(corpus)
        sets["corpus_green"] = corpus[frac >= 0.5]
        greenest = corpus[np.argsort(-frac)[:8]]
    r = {name: float(psnr(x, model.reconstruct(x)).mean()) for name, x in sets.items()}
    r["num_images"] = {name: int(len(x)) for name, x in sets.items()}
    r["hue_mean"] = float(np.mean([r[f"hue+{a}"] for a in ANGLES]))
    r["gap"] = r["builtin"] - r["hue_mean"]
    r["checkpoint_step"] = model.step
    results[workdir] = r
    print(workdir, json.dumps({k: v for k, v in r.items() if k != "num_images"}), flush=True)
    if args.corpus:
      grid_rows.append(model.reconstruct(greenest))
  if args.grid and grid_rows:
    save_grid([greenest] + grid_rows,
              ["original"] + (args.labels.split(",") if args.labels else args.workdirs),
              args.grid)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
