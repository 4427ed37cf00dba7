"""The coarse-to-fine curves of trained SEMANTICIST runs, beside PCA and 2D VQ-VAEs.

  python scripts/semanticist_curves.py runs/sem/seed0 runs/sem/seed1 --out=docs/semanticist/x \
      [--compare=runs/mgvq_g4/seed0 --compare=runs/vq_k32/seed0 ...] [--seeds=0,1] \
      [--ks=0,1,2,4,8,16,32]
  python scripts/semanticist_curves.py --replot --out=docs/semanticist/x   # redraw from curves.json

RUNS: SEMANTICIST runs of one config (training seeds). On their validation split
(vqjax.export.split_records: the images evaluation reads), with each run's model
from vqjax.load (uint8 reconstructions, pixels on [0, 1]):
  tokens  for k = 0 .. T (or the ladder --ks): per-image PSNR and LPIPS (AlexNet) of
          decode(codes, num_tokens=k) (k = 0: every token null, the unconditional
          sample) and the share of variance explained
          EV(k) = 1 - sum_i |x_i - x_hat_i(k)|^2 / sum_i |x_i - mean|^2,
          once per sampler seed (--seeds: the spread over the DDIM noise)
  pca     PCA fitted on the same images (in-sample: the best any linear code of m
          numbers does on them), m = k * D components, EV, PSNR and LPIPS of its
          reconstructions (clipped to [0, 1]): the same count of numbers as k
          continuous tokens of D channels
  compare every --compare run's eval/metrics.json: psnr_first_k_groups and
          lpips_first_k_groups (MGVQ, first k groups, at k / G of its bits per
          image) or psnr and lpips (one point at its bits per image), beside the
          tokens at k x (bits per token) when quantized
Writes OUT/curves.json, OUT/first_k.png (PSNR, EV and LPIPS against k: each run,
the mean over sampler seeds; PCA) and, when anything has bits, OUT/bits.png (PSNR
and LPIPS against bits per image: the tokens of each run, every --compare run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vqjax  # noqa: E402
from vqjax import export, inference, perceptual, plots  # noqa: E402
from vqjax.models import level_quantizers  # noqa: E402

LPIPS_BATCH = 80


class Lpips:
  """Per-image LPIPS (AlexNet) of uint8 [N, H, W, 3] pairs, in padded batches of
  LPIPS_BATCH (one compilation)."""

  def __init__(self):
    self.metrics = perceptual.PerceptualMetrics("alex")
    self.fn = jax.jit(self.metrics.lpips_of)

  def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = []
    for (a, b), count in perceptual.padded_batches(x, y, batch_size=LPIPS_BATCH):
      out.append(np.asarray(self.fn(self.metrics.params, a, b), np.float64)[:count])
    return np.concatenate(out)


def psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-image PSNR (dB) of uint8 [N, H, W, 3] on [0, 1]."""
  mse = np.mean((x / 255.0 - y / 255.0) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def explained(x: np.ndarray, y: np.ndarray) -> float:
  """1 - sum |x - y|^2 / sum |x - mean x|^2 on [0, 1] pixels."""
  x, y = x.astype(np.float64) / 255, y.astype(np.float64) / 255
  return float(1 - np.sum((x - y) ** 2) / np.sum((x - x.mean(0)) ** 2))


def pca_curve(x: np.ndarray, numbers: list[int], lpips: Lpips) -> dict:
  """{m: (EV, PSNR mean, PSNR std, LPIPS mean)} of in-sample PCA with m components."""
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
    out[m] = (float(np.sum(sv[:m] ** 2) / total), float(p.mean()), float(p.std()),
              float(lpips(x, recon).mean()))
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


def token_curves(run: str, images: np.ndarray, seeds: list[int], lpips: Lpips,
                 ks: list[int] | None = None) -> dict:
  """{psnr: {k: [per sampler seed]}, psnr_std: {k: std over images of the seed mean},
  explained: {k: [per seed]}, lpips: {k: [per seed]}, lpips_std: {k: as psnr_std}}
  of decode(encode(images), num_tokens=k), k in `ks` (default 0 .. T)."""
  model = vqjax.load(run, batch_size=80)
  codes = model.encode(images)
  t = model.config.model.num_tokens
  out = {"psnr": {}, "psnr_std": {}, "explained": {}, "lpips": {}, "lpips_std": {},
         "seeds": seeds}
  for k in range(t + 1) if ks is None else ks:
    per_seed = [model.decode(codes, num_tokens=k, seed=s) for s in seeds]
    p = np.stack([psnr(images, r) for r in per_seed])            # [seeds, N]
    d = np.stack([lpips(images, r) for r in per_seed])           # [seeds, N]
    ev = [explained(images, r) for r in per_seed]
    out["psnr"][k] = [float(v) for v in p.mean(1)]               # per seed
    out["psnr_std"][k] = float(p.mean(0).std())                  # over images
    out["lpips"][k] = [float(v) for v in d.mean(1)]
    out["lpips_std"][k] = float(d.mean(0).std())
    out["explained"][k] = [float(v) for v in ev]
    print(f"k={k}: PSNR {np.mean(p):.2f} dB, LPIPS {np.mean(d):.4f}, EV {np.mean(ev):.3f}",
          flush=True)
  return out


def compare_curve(run: str) -> dict:
  """{'bits_per_image', 'psnr': {bits: PSNR mean}, 'lpips': {bits: LPIPS mean}} of a
  finished 2D run (lpips empty when its evaluation had LPIPS off)."""
  with open(os.path.join(run, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  bits = bits_per_image(inference.load_config(run))
  out = {"bits_per_image": bits}
  for name in ("psnr", "lpips"):
    groups = metrics.get(f"{name}_first_k_groups")
    if groups:   # MGVQ: the first k of G groups carry k / G of the bits
      points = {bits * int(k) / len(groups): v["mean"] for k, v in groups.items()}
    else:
      points = {bits: metrics[name]["mean"]} if name in metrics else {}
    out[name] = {str(b): v for b, v in sorted(points.items())}
  return out


def short(run: str) -> str:
  """A run's label: its last two path parts (e.g. mgvq_g4/seed0)."""
  return os.path.join(*os.path.normpath(run).split(os.sep)[-2:])


def seed_mean(curve: dict) -> dict:
  """{k: mean over sampler seeds} of {k: [per seed]}."""
  return {k: float(np.mean(v)) for k, v in curve.items()}


def write_plots(result: dict, out: str) -> str:
  """OUT/first_k.png and, when anything has bits, OUT/bits.png from a curves.json
  dictionary (k keys int or str); returns the names written."""
  d, t, bits = result["code_dim"], result["num_tokens"], result["bits_per_image"]
  runs = result["runs"]
  psnr_curves = {f"tokens, {short(run)}": {k: {"mean": float(np.mean(v)), "std": c["psnr_std"][k]}
                                    for k, v in c["psnr"].items()} for run, c in runs.items()}
  ev_curves = {f"tokens, {short(run)}": seed_mean(c["explained"]) for run, c in runs.items()}
  lpips_curves = {f"tokens, {short(run)}": {k: {"mean": float(np.mean(v)), "std": c["lpips_std"][k]}
                                      for k, v in c["lpips"].items()} for run, c in runs.items()}
  label = f"PCA, {d} components per token"
  pca = {int(m) // d: v for m, v in result["pca"].items()}
  psnr_curves[label] = {k: v["psnr"] for k, v in pca.items()}
  ev_curves[label] = {k: v["explained"] for k, v in pca.items()}
  lpips_curves[label] = {k: v["lpips"] for k, v in pca.items()}
  plots.save_first_k_plot(psnr_curves, ev_curves, os.path.join(out, "first_k.png"),
                          lpips=lpips_curves)
  written = "first_k.png"
  if bits or result["compare"]:
    by_bits = {name: {} for name in ("psnr", "lpips")}
    for name, curves in by_bits.items():
      for run, c in runs.items() if bits else ():
        curves[f"SEMANTICIST first k tokens, {short(run)}"] = {
            int(k) * bits / t: v for k, v in seed_mean(c[name]).items() if int(k) > 0}
      for other, c in result["compare"].items():
        kind = "first k groups" if len(c["psnr"]) > 1 else "all codes"
        if c[name]:
          curves[f"{kind}, {short(other)}"] = {float(b): v for b, v in c[name].items()}
    plots.save_bits_plot(by_bits["psnr"], os.path.join(out, "bits.png"), lpips=by_bits["lpips"])
    written += ", bits.png"
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="*", help="SEMANTICIST runs of one config (training seeds)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--compare", action="append", default=[])
  parser.add_argument("--seeds", default="0", help="sampler seeds, comma-separated")
  parser.add_argument("--ks", default="", help="token counts k, comma-separated "
                      "(default: every k = 0..T; each k is one decode per sampler seed)")
  parser.add_argument("--replot", action="store_true",
                      help="redraw OUT's figures from OUT/curves.json (no runs, no decoding)")
  args = parser.parse_args(argv)
  if args.replot:
    with open(os.path.join(args.out, "curves.json")) as f:
      print(f"wrote {args.out}/{{{write_plots(json.load(f), args.out)}}}")
    return
  if not args.runs:
    parser.error("name the SEMANTICIST runs (or --replot)")
  config = inference.load_config(args.runs[0])
  images = np.stack([im for _, im in export.split_records(config.data, "validation")])
  seeds = [int(s) for s in args.seeds.split(",")]
  d = int(config.model.code_dim)
  t = int(config.model.num_tokens)
  ks = sorted({int(k) for k in args.ks.split(",")}) if args.ks else None
  if ks is not None and not all(0 <= k <= t for k in ks):
    parser.error(f"--ks={args.ks}: every k must lie in 0..{t} (the run's num_tokens)")
  bits = bits_per_image(config)
  lpips = Lpips()
  pca = pca_curve(images, [k * d for k in range(1, t + 1)], lpips)
  result = {"runs": {}, "num_images": int(len(images)), "image_size": int(images.shape[1]),
            "num_tokens": t, "code_dim": d, "bits_per_image": bits, "sampler_seeds": seeds,
            "pca": {str(m): dict(explained=v[0], psnr=v[1], psnr_std=v[2], lpips=v[3])
                    for m, v in pca.items()},
            "compare": {other: compare_curve(other) for other in args.compare}}
  for run in args.runs:
    print(f"{run}:", flush=True)
    result["runs"][run] = token_curves(run, images, seeds, lpips, ks)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "curves.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}/{{curves.json, {write_plots(result, args.out)}}}; bits per image: "
        f"{bits if bits else 'none (continuous tokens)'}")


if __name__ == "__main__":
  main()
