"""The figures of a run, as PNG files drawn on the Agg canvas (no display needed).

Per run (vqjax/evaluate.py): `save_lorenz_plot` (codebook usage per level) and
`save_reconstruction_grid` (originals over reconstructions), `save_image_grid` (any
uint8 images, e.g. a prior's samples); `new_figure` for
every other figure (the sweep reports' are vqjax/experiments/figures.py).
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from typing import Any

import numpy as np

from vqjax import metrics


def make_parent_dir(path: str | os.PathLike) -> None:
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)


def new_figure(width: float, height: float, ncols: int = 1):
  """(Figure, [axes] of 1 x ncols) on the Agg canvas, size in inches at 100 dpi.

  Figure + Agg canvas directly: no pyplot global state, no display backend.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def save_lorenz_plot(histograms: Mapping[str, np.ndarray],
                     path: str | os.PathLike) -> None:
  """Writes a PNG with one Lorenz curve per level and the equality diagonal.

  Args:
    histograms: level name -> [K] code histogram (K may differ per level).
    path: output .png file; parent directories are created.
  """
  fig, (ax,) = new_figure(5, 5)
  ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1,
          label="uniform usage")
  for name, counts in histograms.items():
    x, y = metrics.lorenz_curve(counts)
    ax.plot(x, y, linewidth=1.5,
            label=f"{name} (K={len(x) - 1}, Gini={metrics.gini(counts):.3f})")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_aspect("equal")
  ax.set_xlabel("cumulative fraction of codes (least used first)")
  ax.set_ylabel("cumulative share of assignments")
  ax.set_title("Codebook usage (Lorenz curve)")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize="small")
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")


def to_uint8(images: Any) -> np.ndarray:
  """Images in [-1, 1] -> uint8 in [0, 255] (clipped, rounded)."""
  images = metrics.to_unit_range(np.asarray(images, np.float32))
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def reconstruction_grid(originals: Any, reconstructions: Any,
                        max_images: int = 8, pad: int = 2) -> np.ndarray:
  """Tiles originals (top row) over their reconstructions (bottom row).

  Args:
    originals: [B, H, W, C] in [-1, 1], C in {1, 3}.
    reconstructions: [B, H, W, C] in [-1, 1] (clipped).
    max_images: number of columns: the first min(B, max_images) images.
    pad: white pixels between and around tiles.

  Returns:
    [2 H + 3 pad, n W + (n + 1) pad, C] uint8, n = min(B, max_images).
  """
  originals = np.asarray(originals)
  reconstructions = np.asarray(reconstructions)
  if originals.shape != reconstructions.shape or originals.ndim != 4:
    raise ValueError("originals and reconstructions must both be [B, H, W, C] "
                     f"with equal shapes, got {originals.shape} and "
                     f"{reconstructions.shape}")
  n = min(originals.shape[0], max_images)
  if n < 1:
    raise ValueError("need at least one image")
  _, h, w, c = originals.shape
  grid = np.full((2 * h + 3 * pad, n * w + (n + 1) * pad, c), 255, np.uint8)
  for row, images in enumerate((originals, reconstructions)):
    tiles = to_uint8(images[:n])
    top = pad + row * (h + pad)
    for i in range(n):
      left = pad + i * (w + pad)
      grid[top:top + h, left:left + w] = tiles[i]
  return grid


def save_reconstruction_grid(originals: Any, reconstructions: Any,
                             path: str | os.PathLike,
                             max_images: int = 8) -> np.ndarray:
  """Writes `reconstruction_grid(...)` as a PNG and returns the grid (uint8)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  grid = reconstruction_grid(originals, reconstructions, max_images=max_images)
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  make_parent_dir(path)
  image.save(os.fspath(path), format="PNG")
  return grid


def image_grid(images: Any, ncols: int = 8, pad: int = 2) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] row by row, `ncols` per row, on white.

  Returns [r H + (r + 1) pad, c W + (c + 1) pad, C] uint8, c = min(N, ncols),
  r = ceil(N / c).
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.dtype != np.uint8 or not len(images):
    raise ValueError(f"images must be uint8 [N, H, W, C] with N >= 1; got "
                     f"{images.dtype} {images.shape}")
  n, h, w, c = images.shape
  cols = min(n, ncols)
  rows = -(-n // cols)
  grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c), 255, np.uint8)
  for i, image in enumerate(images):
    top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid


def save_image_grid(images: Any, path: str | os.PathLike, ncols: int = 8) -> np.ndarray:
  """Writes `image_grid(images, ncols)` as a PNG and returns it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  grid = image_grid(images, ncols)
  make_parent_dir(path)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(os.fspath(path),
                                                                       format="PNG")
  return grid
def save_first_k_plot(psnr: Mapping[str, Mapping], explained: Mapping[str, Mapping],
                      path: str | os.PathLike, xlabel: str = "first k tokens",
                      lpips: Mapping[str, Mapping] | None = None) -> None:
  """Panels against k: PSNR (dB), the share of variance explained and, when given, LPIPS.

  Args:
    psnr: curve label -> {k: PSNR mean, or {'mean', 'std'}} (std drawn as a band).
    explained: curve label -> {k: share of variance explained in [.., 1]}.
    path: output .png file; parent directories are created.
    lpips: curve label -> {k: LPIPS mean, or {'mean', 'std'}} (lower is closer).
  """
  panels = [(psnr, "PSNR (dB; band: per-image std)"), (explained, "share of variance explained")]
  if lpips:
    panels.append((lpips, "LPIPS, AlexNet (band: per-image std)"))
  fig, axes = new_figure(5 * len(panels), 4, ncols=len(panels))
  for ax, (curves, ylabel) in zip(axes, panels):
    for label, curve in curves.items():
      ks = sorted(curve, key=float)
      mean = np.array([curve[k]["mean"] if isinstance(curve[k], Mapping) else curve[k]
                       for k in ks], np.float64)
      x = np.array([float(k) for k in ks])
      ax.plot(x, mean, marker="o", markersize=3, label=label)
      if all(isinstance(curve[k], Mapping) for k in ks):
        std = np.array([curve[k]["std"] for k in ks], np.float64)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right" if curves is lpips else "lower right", fontsize="small")
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")


def save_bits_plot(psnr: Mapping[str, Mapping[float, float]], path: str | os.PathLike,
                   lpips: Mapping[str, Mapping[float, float]] | None = None) -> None:
  """PSNR (dB) against bits per image, one line (or point) per label: {bits: PSNR};
  with lpips ({label: {bits: LPIPS}}, labels a subset of psnr's) a second panel."""
  panels = [(psnr, "PSNR (dB), validation mean")]
  if lpips:
    panels.append((lpips, "LPIPS (AlexNet), validation mean; lower is closer"))
  fig, axes = new_figure(7 * len(panels), 4.5, ncols=len(panels))
  markers = {label: "os^vD<>p"[i % 8] for i, label in enumerate(psnr)}
  for ax, (curves, ylabel) in zip(axes, panels):
    for label, curve in curves.items():
      bits = sorted(curve)
      ax.plot(bits, [curve[b] for b in bits], marker=markers.get(label, "x"), markersize=4,
              ls="-" if len(bits) > 1 else "none", label=label)
    ax.set(xlabel="bits per image", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")
