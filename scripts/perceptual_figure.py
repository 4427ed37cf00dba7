"""Reconstructions of several runs side by side, with per-image PSNR and LPIPS.

  python scripts/perceptual_figure.py [--corpus] OUT.png LABEL=WORKDIR [LABEL=WORKDIR ...]

Reconstructs the same 64x64 crops of scikit-image's chelsea and coffee (the
built-in validation photos; positions in CROPS) or, with --corpus, six
validation crops of the photo corpus (data/photo_corpus/val: of six photos,
each photo's crop of the largest pixel variance) with each run's latest
checkpoint (`vqjax.load`) and draws the originals over each run's
reconstructions, every one titled with its PSNR (dB) and LPIPS (AlexNet); below
them a 2x zoom of each image's centre. Also writes OUT.json (those numbers and
their means per run) and curves.png beside OUT.png: the runs' logged train
metrics (LPIPS, PSNR, the discriminator's loss and logits, the adaptive weight).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vqjax  # noqa: E402  pylint: disable=wrong-import-position
from vqjax import plots  # noqa: E402  pylint: disable=wrong-import-position
from vqjax.perceptual import lpips  # noqa: E402  pylint: disable=wrong-import-position

S = 64
# (photo, top, left): fur, whiskers, eye, the cup's rim, beans, the saucer.
CROPS = (("chelsea", 64, 128), ("chelsea", 128, 192), ("chelsea", 64, 256),
         ("coffee", 64, 128), ("coffee", 256, 320), ("coffee", 320, 192))


def crops() -> np.ndarray:
  import skimage.data  # pylint: disable=import-outside-toplevel
  return np.stack([getattr(skimage.data, name)()[t:t + S, l:l + S] for name, t, l in CROPS])


def corpus_crops(folder: str = "data/photo_corpus/val", n: int = 6) -> np.ndarray:
  """Of the first n photos (sorted names, '<photo>_rNN_cNN.png'), the crop of most variance."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  best: dict[str, tuple[float, np.ndarray]] = {}
  for name in sorted(os.listdir(folder)):
    photo = name.rsplit("_r", 1)[0]
    if photo not in best and len(best) == n:
      continue
    img = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
    var = float(img.astype(np.float64).var())
    if photo not in best or var > best[photo][0]:
      best[photo] = (var, img)
  return np.stack([img for _, img in best.values()])


def scores(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-image PSNR (dB, pixels on [0, 1]) and LPIPS (AlexNet) of uint8 images."""
  mse = np.mean((x / 255.0 - y / 255.0) ** 2, axis=(1, 2, 3))
  to_range = lambda u: (u.astype(np.float32) / 127.5 - 1.0)
  d = lpips.lpips_distance(lpips.load_params("alex"), to_range(x), to_range(y), "alex")
  return 10 * np.log10(1 / mse), np.asarray(d)


CURVES = (("lpips", "train LPIPS (batch mean)"), ("psnr", "train PSNR dB"),
          ("d_loss", "discriminator loss"), ("logits_real", "mean logit: real (solid), "
                                                            "reconstructed (dashed)"),
          ("adaptive_weight", "adaptive weight λ (log)"), ("gan_factor", "applied weight λ w"))


def save_curves(runs: list[tuple[str, str]], path: str) -> None:
  """The runs' logged train metrics (means over each log_every window) against the step."""
  from vqjax import writers  # pylint: disable=import-outside-toplevel
  fig, _ = plots.new_figure(12, 6.5, 1)
  fig.clear()
  scalars = {label: writers.read_scalars(workdir) for label, workdir in runs}
  for i, (key, title) in enumerate(CURVES):
    ax = fig.add_subplot(2, 3, i + 1)
    for j, (label, _) in enumerate(runs):
      colour = f"C{j}"
      for name, style in ((key, "-"), ("logits_fake", "--")):
        if name != key and key != "logits_real":
          continue
        points = scalars[label].get(name, [])
        if points:
          steps, values = zip(*points)
          ax.plot(steps, values, style, color=colour, label=label if style == "-" else None)
    if key == "adaptive_weight":
      ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if key == "psnr":      # the panel every run has
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def main(argv: list[str]) -> int:
  corpus = "--corpus" in argv
  argv = [a for a in argv if a != "--corpus"]
  out, runs = argv[1], [a.split("=", 1) for a in argv[2:]]
  x = corpus_crops() if corpus else crops()
  rows = [("original", x, None, None)]
  summary = {}
  for label, workdir in runs:
    model = vqjax.load(workdir, batch_size=len(x))
    y = model.reconstruct(x)
    psnr, d = scores(x, y)
    rows.append((label, y, psnr, d))
    summary[label] = {"workdir": workdir, "step": int(model.step),
                      "psnr": [round(float(v), 3) for v in psnr],
                      "lpips": [round(float(v), 4) for v in d],
                      "psnr_mean": round(float(psnr.mean()), 3),
                      "lpips_mean": round(float(d.mean()), 4)}
  n, m = len(x), len(rows)
  fig, _ = plots.new_figure(1.6 * n, 1.75 * 2 * m, 1)
  fig.clear()
  z = S // 4   # the zoom: the central S/2 x S/2, shown at 2x
  for r, (label, images, psnr, d) in enumerate(rows):
    for i in range(n):
      for half, img in ((0, images[i]), (1, images[i][z:S - z, z:S - z])):
        ax = fig.add_subplot(2 * m, n, (2 * r + half) * n + i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if half == 0:
          ax.set_title(label if psnr is None else f"{psnr[i]:.1f} dB, {d[i]:.3f}",
                       fontsize=8)
        if i == 0 and half == 0:
          ax.set_ylabel(label, fontsize=9)
  fig.suptitle("reconstructions (title: PSNR, LPIPS-alex); below each, its centre at 2x",
               fontsize=9)
  fig.tight_layout()
  plots.make_parent_dir(out)
  fig.savefig(out)
  save_curves(runs, os.path.join(os.path.dirname(out) or ".", "curves.png"))
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: (v["psnr_mean"], v["lpips_mean"]) for k, v in summary.items()}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
