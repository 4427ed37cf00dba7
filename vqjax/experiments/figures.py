"""The sweep reports' figures (vqjax/experiments/report.py): the paper's Figure 1
and Figure 2 panels, as PNG files (vqjax.plots' canvas).
"""

from __future__ import annotations

from collections.abc import Mapping
import os

import numpy as np

from vqjax import metrics
from vqjax.plots import make_parent_dir, new_figure



def save_grouped_bars(panels: list[tuple[str, str, dict]], groups: list[str],
                      xlabel: str, title: str, path: str | os.PathLike) -> None:
  """One panel per (panel title, y label, {series: [value per group]}), bars grouped.

  A value is (mean, std) (std None: no error bar) or None: the bar is missing
  and a "missing" mark is drawn instead. Error bars are the std over seeds.
  Series "A / b" share A's colour across panels, with a hatch per b.
  Legends sit above the panels, never over the bars.
  """
  fig, axes = new_figure(5.0 * len(panels) + 0.5, 4.8, ncols=len(panels))
  x = np.arange(len(groups))
  for ax, (panel_title, ylabel, series) in zip(axes, panels):
    width = 0.8 / max(len(series), 1)
    prefixes, shades = [], {}
    for i, (label, values) in enumerate(series.items()):
      # "arch / level": one colour per arch in every panel, hatches tell the levels.
      prefix = label.split(" / ")[0]
      if prefix not in prefixes:
        prefixes.append(prefix)
      shade = shades[prefix] = shades.get(prefix, -1) + 1
      pos = x - 0.4 + width * (i + 0.5)
      means = [np.nan if v is None else v[0] for v in values]
      errs = [0.0 if v is None or v[1] is None else v[1] for v in values]
      ax.bar(pos, means, width * 0.9, yerr=errs, capsize=3, label=label,
             color=f"C{prefixes.index(prefix)}", hatch=["", "//", ".."][shade % 3],
             edgecolor="white", error_kw=dict(elinewidth=1))
      for p, v in zip(pos, values):
        if v is None:
          ax.text(p, 0, "missing", rotation=90, ha="center", va="bottom",
                  fontsize="x-small", color="C3")
    ax.set_xticks(x, groups)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(panel_title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncols=min(len(series), 3),
              fontsize="small", frameon=False)
  fig.suptitle(title)
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")


def save_lorenz_panels(panels: Mapping[str, Mapping[str, np.ndarray]],
                       path: str | os.PathLike) -> None:
  """Lorenz curves, one panel per {panel title: {curve label: [K] histogram}}."""
  fig, axes = new_figure(5.2 * len(panels), 5.6, ncols=len(panels))
  for ax, (panel_title, histograms) in zip(axes, panels.items()):
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1,
            label="uniform usage")
    for name, counts in histograms.items():
      x, y = metrics.lorenz_curve(counts)
      ax.plot(x, y, linewidth=1.5, label=f"{name} (Gini {metrics.gini(counts):.2f})")
    if not histograms:
      ax.text(0.5, 0.25, "no histograms\n(missing or unfinished runs)", ha="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("cumulative fraction of codes (least used first)")
    ax.set_ylabel("cumulative share of assignments")
    ax.set_title(panel_title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small")  # above the diagonal: no data
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")


def save_heatmaps(panels: list[tuple[str, str, np.ndarray, list[list[str]]]],
                  xticks: list, yticks: list, xlabel: str, ylabel: str,
                  path: str | os.PathLike) -> None:
  """Heatmaps side by side: (title, colour bar label, values [y, x], cell text [y][x]).

  NaN cells are drawn light grey; the cell text says what they are.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  fig, axes = new_figure(0.9 * len(xticks) * len(panels) + 2.5 * len(panels),
                         max(3.5, 0.6 * len(yticks) + 1.8), ncols=len(panels))
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
  for ax, (title, cbar_label, values, text) in zip(axes, panels):
    values = np.asarray(values, np.float64)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto",
                      origin="lower")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
      dark = np.isfinite(v) and v < middle
      ax.text(j, i, text[i][j], ha="center", va="center", fontsize="x-small",
              color="white" if dark else "black")
    ax.set_xticks(range(len(xticks)), [str(t) for t in xticks])
    ax.set_yticks(range(len(yticks)), [str(t) for t in yticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label)
  fig.tight_layout()
  make_parent_dir(path)
  fig.savefig(os.fspath(path), format="png")
