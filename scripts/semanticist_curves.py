"""The coarse-to-fine curves of a trained SEMANTICIST run, beside PCA and 2D VQ-VAEs.

  python scripts/semanticist_curves.py runs/semanticist --out=docs/semanticist \
      [--compare=runs/mgvq_g4 --compare=runs/vqvae] [--seeds=0,1]

On the run's validation split (vqjax.export.split_records: the images evaluation
reads), with the run's model from vqjax.load (uint8 reconstructions, pixels on
[0, 1]):
  tokens  for k = 0 .. T: per-image PSNR of decode(codes, num_tokens=k) (k = 0:
          every token null, the unconditional sample) and the share of variance
          explained EV(k) = 1 - sum_i |x_i - x_hat_i(k)|^2 / sum_i |x_i - mean|^2,
          once per sampler seed (--seeds: the spread over the DDIM noise)
  pca     PCA fitted on the same images (in-sample: the best any linear code of m
          numbers does on them), m = k * D components, EV and PSNR of its
          reconstructions (clipped to [0, 1]): the same count of numbers as k
          continuous tokens of D channels
  compare every --compare run's metrics.json: psnr_first_k_groups (MGVQ, first k
          groups) or psnr (one point), at its bits per image, beside the tokens'
          bits per image when the tokens are quantized
Writes OUT/curves.json and OUT/first_k.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vqjax  # noqa: E402
from vqjax import export, inference, plots  # noqa: E402
from vqjax.models import level_quantizers  # noqa: E402


def psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-image PSNR (dB) of uint8 [N, H, W, 3] on [0, 1]."""
  mse = np.mean((x / 255.0 - y / 255.0) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def explained(x: np.ndarray, y: np.ndarray) -> float:
  """1 - sum |x - y|^2 / sum |x - mean x|^2 on [0, 1] pixels."""
  x, y = x.astype(np.float64) / 255, y.astype(np.float64) / 255
  return float(1 - np.sum((x - y) ** 2) / np.sum((x - x.mean(0)) ** 2))


def pca_curve(x: np.ndarray, numbers: list[int]) -> dict:
  """{m: (EV, PSNR mean, PSNR std)} of in-sample PCA with m components."""
  flat = x.reshape(len(x), -1).astype(np.float64) / 255
  mean = flat.mean(0)
  _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
  total = np.sum(sv ** 2)
  out = {}
  for m in numbers:
    m = min(m, len(sv))
    recon = (flat - mean) @ vt[:m].T @ vt[:m] + mean
    recon = np.round(np.clip(recon, 0, 1) * 255).astype(np.uint8).reshape(x.shape)
    p = psnr(x, recon)
    out[m] = (float(np.sum(sv[:m] ** 2) / total), float(p.mean()), float(p.std()))
  return out


def bits_per_image(config) -> float | None:
  """Bits of a run's codes per image (None for continuous tokens)."""
  quantizers = level_quantizers(config.model)
  if not quantizers:
    return None
  size = config.data.image_size
  if config.model.kind == "semanticist":
    return config.model.num_tokens * next(iter(quantizers.values())).bits_per_position
  down = inference.level_downsampling(config.model)
  return sum((size // down[n]) ** 2 * q.bits_per_position for n, q in quantizers.items())


def token_curves(run: str, images: np.ndarray, seeds: list[int]) -> dict:
  model = vqjax.load(run, batch_size=80)
  codes = model.encode(images)
  t = model.config.model.num_tokens
  out = {"psnr": {}, "psnr_std": {}, "explained": {}, "seeds": seeds}
  for k in range(t + 1):
    per_seed = [model.decode(codes, num_tokens=k, seed=s) for s in seeds]
    p = np.stack([psnr(images, r) for r in per_seed])            # [seeds, N]
    ev = [explained(images, r) for r in per_seed]
    out["psnr"][k] = [float(v) for v in p.mean(1)]               # per seed
    out["psnr_std"][k] = float(p.mean(0).std())                  # over images
    out["explained"][k] = [float(v) for v in ev]
    print(f"k={k}: PSNR {np.mean(p):.2f} dB, EV {np.mean(ev):.3f}", flush=True)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run")
  parser.add_argument("--out", required=True)
  parser.add_argument("--compare", action="append", default=[])
  parser.add_argument("--seeds", default="0")
  args = parser.parse_args(argv)
  config = inference.load_config(args.run)
  images = np.stack([im for _, im in export.split_records(config.data, "validation")])
  seeds = [int(s) for s in args.seeds.split(",")]
  tokens = token_curves(args.run, images, seeds)
  d = int(config.model.code_dim)
  t = int(config.model.num_tokens)
  pca = pca_curve(images, [k * d for k in range(1, t + 1)])
  result = {"run": args.run, "num_images": int(len(images)), "image_size": int(images.shape[1]),
            "num_tokens": t, "code_dim": d, "bits_per_image": bits_per_image(config),
            "tokens": tokens,
            "pca": {str(m): dict(explained=v[0], psnr=v[1], psnr_std=v[2]) for m, v in pca.items()},
            "compare": {}}
  for other in args.compare:
    with open(os.path.join(other, "eval", "metrics.json")) as f:
      metrics = json.load(f)
    other_config = inference.load_config(other)
    bits = bits_per_image(other_config)
    groups = metrics.get("psnr_first_k_groups")
    g = len(groups) if groups else 1
    result["compare"][other] = {
        "bits_per_image": bits,
        "psnr": ({str(bits * int(k) / g): v["mean"] for k, v in groups.items()} if groups
                 else {str(bits): metrics["psnr"]["mean"]})}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "curves.json"), "w") as f:
    json.dump(result, f, indent=2)
  mean = lambda v: float(np.mean(v))
  plots.save_first_k_plot(
      {"SEMANTICIST tokens": {k: {"mean": mean(v), "std": tokens["psnr_std"][k]}
                              for k, v in tokens["psnr"].items()},
       f"PCA, {d} components per token": {m // d: v[1] for m, v in pca.items()}},
      {"SEMANTICIST tokens": {k: mean(v) for k, v in tokens["explained"].items()},
       f"PCA, {d} components per token": {m // d: v[0] for m, v in pca.items()}},
      os.path.join(args.out, "first_k.png"))
  bits = result["bits_per_image"]
  print(f"wrote {args.out}/curves.json and first_k.png; bits per image: "
        f"{bits if bits else 'none (continuous tokens)'}")


if __name__ == "__main__":
  main()
