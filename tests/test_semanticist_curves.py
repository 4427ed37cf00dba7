"""scripts/semanticist_curves.py's arithmetic against independent derivations:
PCA's share of variance from the covariance's eigenvalues, the MGVQ first-k groups
at k / G of the bits, bits per image of FSQ tokens (T log2 prod L)."""

import json
import math
import os

import numpy as np
import pytest

from model_snapshot import load_config, load_script


def test_pca_share_of_variance_is_the_top_eigenvalues_of_the_covariance():
  rng = np.random.default_rng(0)
  # 40 images of 4x4x3 on a 5-dimensional subspace plus small noise.
  basis = rng.normal(size=(5, 48))
  flat = 0.5 + 0.05 * rng.normal(size=(40, 5)) @ basis + 0.002 * rng.normal(size=(40, 48))
  images = np.round(np.clip(flat, 0, 1) * 255).astype(np.uint8).reshape(40, 4, 4, 3)
  x = images.reshape(40, -1) / 255.0
  eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
  seen = []
  def lpips(a, b):   # a stand-in that records what it is given: per-image MSE
    seen.append(len(a))
    return np.mean((a / 255.0 - b / 255.0) ** 2, axis=(1, 2, 3))
  curve = load_script("semanticist_curves").pca_curve(images, [1, 3, 5, 40], lpips)   # 40 images: 40 components at most
  for m in (1, 3, 5, 40):
    np.testing.assert_allclose(curve[m][0], eig[:m].sum() / eig.sum(), rtol=1e-9)
  assert curve[40][0] == pytest.approx(1.0)
  # All components reconstruct exactly (up to uint8 rounding): PSNR far above 5 components.
  assert curve[40][1] > 80 and curve[5][1] > curve[1][1]
  assert seen == [40] * 4 and curve[40][3] < 1e-8 < curve[1][3]   # LPIPS of each reconstruction


def test_lpips_in_padded_batches_equals_one_unpadded_call():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from vqjax.perceptual import lpips  # pylint: disable=import-outside-toplevel
  script = load_script("semanticist_curves")
  rng = np.random.default_rng(0)
  n = script.LPIPS_BATCH + 3                   # two batches, the second padded
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = np.clip(x.astype(np.int64) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
  got = script.Lpips()(x, y)
  params = lpips.load_params("alex")
  want = np.asarray(lpips.lpips_distance(params, jnp.asarray(x / 127.5 - 1.0, jnp.float32),
                                         jnp.asarray(y / 127.5 - 1.0, jnp.float32)))
  assert got.shape == (n,) and np.all(want > 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_explained_by_hand():
  x = np.array([[[[0]]], [[[255]]]], np.uint8)          # two 1-pixel images: 0 and 1
  y = np.array([[[[51]]], [[[255]]]], np.uint8)         # errors 0.2 and 0
  # 1 - (0.2^2) / ((0.5)^2 + (0.5)^2) = 1 - 0.04 / 0.5
  assert load_script("semanticist_curves").explained(x, y) == pytest.approx(0.92)


def write_run(path, model, metrics):
  os.makedirs(os.path.join(path, "eval"))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"model": model, "data": {"image_size": 32}}, f)
  with open(os.path.join(path, "eval", "metrics.json"), "w") as f:
    json.dump(metrics, f)


def test_compare_points_mgvq_groups_at_their_share_of_the_bits(tmp_path):
  from vqjax import config_lib  # pylint: disable=import-outside-toplevel
  script = load_script("semanticist_curves")
  base = config_lib.single_model(4096, 8, 32).to_dict()
  grouped = dict(base, num_codes=16, quantizer=config_lib.quantizer_config(
      "grouped", num_groups=4).to_dict())
  write_run(tmp_path / "g4", grouped, {"psnr": {"mean": 24.0, "std": 1.0},
                                        "psnr_first_k_groups": {
                                            str(k): {"mean": 20.0 + k, "std": 1.0}
                                            for k in (1, 2, 3, 4)},
                                        "lpips": {"mean": 0.1, "std": 0.01},
                                        "lpips_first_k_groups": {
                                            str(k): {"mean": 0.5 / k, "std": 0.01}
                                            for k in (1, 2, 3, 4)}})
  # 8x8 positions x 4 groups x log2(16 / 4) bits = 512; the first k groups: 128 k.
  assert script.compare_curve(str(tmp_path / "g4")) == {
      "bits_per_image": 512.0,
      "psnr": {"128.0": 21.0, "256.0": 22.0, "384.0": 23.0, "512.0": 24.0},
      "lpips": {"128.0": 0.5, "256.0": 0.25, "384.0": 0.5 / 3, "512.0": 0.125}}
  vq = dict(base, num_codes=32, quantizer=config_lib.quantizer_config("ema").to_dict())
  write_run(tmp_path / "vq", vq, {"psnr": {"mean": 25.5, "std": 1.0},
                                  "lpips": {"mean": 0.2, "std": 0.01}})
  assert script.compare_curve(str(tmp_path / "vq")) == {
      "bits_per_image": 320.0, "psnr": {"320.0": 25.5}, "lpips": {"320.0": 0.2}}
  write_run(tmp_path / "vq_no_lpips", vq, {"psnr": {"mean": 25.5, "std": 1.0}})
  assert script.compare_curve(str(tmp_path / "vq_no_lpips"))["lpips"] == {}


def test_bits_per_image_of_fsq_tokens_and_none_for_continuous():
  script = load_script("semanticist_curves")
  fsq = load_config("configs/semanticist/cpu.py:quantizer=fsq")
  assert script.bits_per_image(fsq) == pytest.approx(32 * math.log2(8 * 5 * 5 * 5))
  assert script.bits_per_image(load_config("configs/semanticist/cpu.py")) is None


def test_replot_redraws_the_figures_from_curves_json(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  script = load_script("semanticist_curves")
  run = {"psnr": {"0": [11.0, 11.2], "2": [15.0, 15.1]}, "psnr_std": {"0": 1.0, "2": 1.0},
         "explained": {"0": [-0.5, -0.4], "2": [0.5, 0.5]},
         "lpips": {"0": [0.4, 0.41], "2": [0.3, 0.31]}, "lpips_std": {"0": 0.1, "2": 0.1}}
  curves = {"runs": {"runs/a/seed0": run}, "num_tokens": 2, "code_dim": 4, "bits_per_image": 20.0,
            "pca": {"4": {"explained": 0.8, "psnr": 24.0, "psnr_std": 2.0, "lpips": 0.2},
                    "8": {"explained": 0.9, "psnr": 26.0, "psnr_std": 2.0, "lpips": 0.1}},
            "compare": {}}
  (tmp_path / "curves.json").write_text(json.dumps(curves))
  script.main(["--replot", f"--out={tmp_path}"])
  assert Image.open(tmp_path / "first_k.png").size == (1500, 400)    # PSNR, EV, LPIPS
  assert Image.open(tmp_path / "bits.png").size == (1400, 450)       # PSNR, LPIPS
  with pytest.raises(SystemExit):
    script.main([f"--out={tmp_path}"])                               # no runs, no --replot
