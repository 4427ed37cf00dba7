"""Tests for vqjax.plots: PNGs written, grid layout against hand-made pixels."""

import numpy as np
from PIL import Image
import pytest

from vqjax import plots


def _images(seed, shape=(3, 8, 8, 3), low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)



def test_save_lorenz_plot_writes_png(tmp_path):
  path = tmp_path / "plots" / "lorenz.png"
  histograms = {"top": np.array([5, 0, 1, 9]),
                "bottom": np.random.default_rng(0).poisson(2.0, 512)}
  plots.save_lorenz_plot(histograms, path)
  assert path.stat().st_size > 0
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size[0] > 100 and image.size[1] > 100


def test_reconstruction_grid_layout_and_png(tmp_path):
  b, h, w = 10, 4, 5
  originals = np.full((b, h, w, 3), -1.0, np.float32)  # black
  reconstructions = np.full((b, h, w, 3), 2.0, np.float32)  # clipped to white
  reconstructions[:, 0, 0, :] = 0.0  # one mid-grey pixel per image: 127.5 -> 128
  path = tmp_path / "recon.png"
  grid = plots.save_reconstruction_grid(originals, reconstructions, path,
                                          max_images=3)
  pad = 2
  assert grid.shape == (2 * h + 3 * pad, 3 * w + 4 * pad, 3)
  assert grid.dtype == np.uint8
  for i in range(3):
    left = pad + i * (w + pad)
    top_tile = grid[pad:pad + h, left:left + w]
    bottom_tile = grid[2 * pad + h:2 * pad + 2 * h, left:left + w]
    assert np.all(top_tile == 0)
    assert np.all(bottom_tile[0, 0] == 128)
    assert np.all(bottom_tile.reshape(-1, 3)[1:] == 255)
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size == (grid.shape[1], grid.shape[0])
    np.testing.assert_array_equal(np.asarray(image), grid)


def test_reconstruction_grid_grayscale_and_shape_check(tmp_path):
  x = _images(3, shape=(2, 6, 6, 1))
  path = tmp_path / "gray.png"
  grid = plots.save_reconstruction_grid(x, x, path)
  assert grid.shape == (2 * 6 + 6, 2 * 6 + 6, 1)
  with Image.open(path) as image:
    assert image.mode == "L"
  with pytest.raises(ValueError):
    plots.reconstruction_grid(x, x[:1])


def test_first_k_and_bits_plots_add_an_lpips_panel(tmp_path):
  psnr = {"a": {1: {"mean": 20.0, "std": 1.0}, 2: {"mean": 22.0, "std": 1.0}}}
  ev = {"a": {1: 0.5, 2: 0.7}}
  lpips = {"a": {1: {"mean": 0.3, "std": 0.05}, 2: {"mean": 0.2, "std": 0.05}}}
  plots.save_first_k_plot(psnr, ev, tmp_path / "two.png")
  plots.save_first_k_plot(psnr, ev, tmp_path / "three.png", lpips=lpips)
  # 5 inches per panel at 100 dpi.
  assert Image.open(tmp_path / "two.png").size == (1000, 400)
  assert Image.open(tmp_path / "three.png").size == (1500, 400)
  plots.save_bits_plot({"a": {10.0: 20.0, 20.0: 22.0}}, tmp_path / "bits1.png")
  plots.save_bits_plot({"a": {10.0: 20.0, 20.0: 22.0}}, tmp_path / "bits2.png",
                       lpips={"a": {10.0: 0.3, 20.0: 0.2}})
  assert Image.open(tmp_path / "bits1.png").size == (700, 450)
  assert Image.open(tmp_path / "bits2.png").size == (1400, 450)
