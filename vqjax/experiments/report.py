"""The paper's tables and figures from finished runs, read from files only.

  python -m vqjax.experiments.report runs/table1_single runs/table1_hier --out=runs/report
  python -m vqjax.experiments.report runs/figure1 --out=runs/figure1 \\
      --sweep=configs/sweeps/figure1.py --config=configs/paper_hierarchical.py

The runs are read by `vqjax.experiments.run_results` (a run dir holds config.json, and
eval/metrics.json once finished; dirs named seed<s> are seeds of the member
dir above them). Writes OUT/REPORT.md (Figure 1, Table 1, Figure 2
and every run) and OUT/figure1_*.png, OUT/figure2_heatmaps.png. Given a sweep,
its members that are not on disk are listed as missing. Re-run it any time.
"""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax.experiments import figures, sweep_spec
from vqjax.experiments.run_results import Member, code_histograms, expected_members, find_members

STAGES = ("none", "init", "reset", "lowdim")  # configs/sweeps/figure1.py, in order
ARCHS = {"hier": "hierarchical", "single": "single-level"}
TABLE1_ROWS = {(8, 1024), (8, 2048), (8, 4096), (8, 8192),  # configs/sweeps/table1.py
               (16, 8192), (32, 8192), (64, 8192), (128, 8192)}
_FIGURE1 = re.compile(r"^(hier|single)_(none|init|reset|lowdim)$")
NOISE_RULE = ("A difference is *within noise* when |difference of the seed means| <= the "
              "larger of the two seed stds; *—* when a side has fewer than 2 finished seeds.")


# ---------------------------------------------------------------------------
# Numbers.
# ---------------------------------------------------------------------------


def mean_perplexity(m: dict) -> float:
  return float(np.mean([v["normalized_perplexity"] for v in m["levels"].values()]))


def level_perplexity(level: str):
  return lambda m: m["levels"][level]["normalized_perplexity"]


_PARAMS: dict[str, int] = {}


def num_params(config: dict) -> int:
  """Trainable parameters of config's model (abstract init: nothing is computed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vqjax.models import create_model  # pylint: disable=g-import-not-at-top

  size = int(config["data"]["image_size"])
  key = json.dumps([config["model"], size], sort_keys=True)
  if key not in _PARAMS:
    model = create_model(ml_collections.ConfigDict(config["model"]))
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0)}, x,
                                                    train=False), x)
    _PARAMS[key] = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  return _PARAMS[key]


def fmt(stat, digits: int) -> str:
  """'mean ± seed std (n=N)', 'mean (n=1)' or '—'."""
  if stat is None:
    return "—"
  mean, std, n = stat
  if std is None:
    return f"{mean:.{digits}f} (n=1)"
  return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def fmt_values(values, digits: int = 2) -> str:
  """'mean ± std' (ddof 1) of the values that are not None, one value alone, '—'
  for none (the tables of scripts/hqvae_report.py and scripts/quantizers_report.py)."""
  values = [v for v in values if v is not None]
  if not values:
    return "—"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def fmt_images(member: Member, metric: str, digits: int) -> str:
  """Table 1's cell: mean ± std over images (each averaged over seeds), + seed std."""
  means = member.stat(lambda m: m[metric]["mean"])
  image_std = member.stat(lambda m: m[metric]["std"])[0]
  mean, std, n = means
  text = f"{mean:.{digits}f} ± {image_std:.{digits}f}"
  return text + (f" [seeds ± {std:.{digits}f}, n={n}]" if std is not None else " [n=1]")


def compare(a, b, digits: int, names=("a", "b"), higher_is_better: bool = True) -> str:
  """b - a with the noise rule (NOISE_RULE): 'within noise', the better side, or '—'."""
  if a is None or b is None:
    return "—"
  diff = b[0] - a[0]
  if a[1] is None or b[1] is None:
    return f"{diff:+.{digits}f} (—)"
  if abs(diff) <= max(a[1], b[1]):
    return f"{diff:+.{digits}f} (within noise)"
  better = names[1] if (diff > 0) == higher_is_better else names[0]
  return f"{diff:+.{digits}f} ({better} better)"


def _kind(m: Member) -> str | None:
  return m.config["model"]["kind"] if m.config else None


# ---------------------------------------------------------------------------
# Sections of REPORT.md (each returns markdown lines and writes its PNGs).
# ---------------------------------------------------------------------------


def figure1_section(members: list[Member], out_dir: str) -> list[str]:
  by_name: dict[str, Member] = {}
  for m in members:
    if _FIGURE1.match(m.name):
      by_name.setdefault(m.name, m)
  if not by_name:
    return []
  lines = ["## Figure 1: codebook-collapse interventions", "",
           "Stages are cumulative: `none` (uniform init, no reset, D = 64), `init` (codes "
           "from encoder outputs), `reset` (+ dead-code reset), `lowdim` (+ D = 16 at the "
           "same budget). MSE on pixels in [0, 1]; normalized perplexity = perplexity / K, "
           "mean over levels. Each is the mean ± std over seeds (n seeds); *vs previous "
           "stage* is this stage minus the one before.", "",
           "| architecture | stage | MSE | vs previous stage | normalized perplexity "
           "| vs previous stage | per level | status |",
           "|---|---|---|---|---|---|---|---|"]
  levels = {}
  for arch, arch_name in ARCHS.items():
    prev = None
    for stage in STAGES:
      m = by_name.get(f"{arch}_{stage}")
      if m is None:
        lines.append(f"| {arch_name} | {stage} | — | — | — | — | — | missing |")
        prev = None
        continue
      mse, ppl = m.stat(lambda r: r["mse"]["mean"]), m.stat(mean_perplexity)
      for run in m.finished:
        levels.setdefault(arch, list(run.metrics["levels"]))
      per_level = ", ".join(f"{lv} {fmt(m.stat(level_perplexity(lv)), 3)}"
                            for lv in (m.finished[0].metrics["levels"] if m.finished else []))
      vs_mse = compare(prev[0], mse, 5, (prev[2], stage), False) if prev else "—"
      vs_ppl = compare(prev[1], ppl, 3, (prev[2], stage)) if prev else "—"
      lines.append(f"| {arch_name} | {stage} | {fmt(mse, 5)} | {vs_mse} | {fmt(ppl, 3)} "
                   f"| {vs_ppl} | {per_level or '—'} | {m.status()} |")
      prev = (mse, ppl, stage)
  lines += ["", NOISE_RULE, ""]

  def value(arch, stage, key):
    m = by_name.get(f"{arch}_{stage}")
    s = m.stat(key) if m else None
    return None if s is None else (s[0], s[1])

  mse_series = {ARCHS[a]: [value(a, s, lambda r: r["mse"]["mean"]) for s in STAGES]
                for a in ARCHS}
  ppl_series = {}
  for arch in ARCHS:
    names = levels.get(arch, ["codes"])
    for lv in names:
      label = ARCHS[arch] if len(names) == 1 else f"{ARCHS[arch]} / {lv}"
      ppl_series[label] = [value(arch, s, level_perplexity(lv)) if arch in levels else None
                           for s in STAGES]
  figures.save_grouped_bars(
      [("Validation MSE (lower is better)", "MSE (pixels in [0, 1])", mse_series),
       ("Codebook usage (higher is better)", "normalized perplexity (perplexity / K)",
        ppl_series)],
      list(STAGES), "intervention stage (cumulative)",
      "Figure 1: codebook-collapse interventions (error bars: std over seeds)",
      os.path.join(out_dir, "figure1_mse_perplexity.png"))
  panels = {}
  for arch, arch_name in ARCHS.items():
    curves = {}
    for stage in STAGES:
      m = by_name.get(f"{arch}_{stage}")
      for lv, counts in (code_histograms(m) if m else {}).items():
        curves[stage if arch == "single" else f"{stage} / {lv}"] = counts
    panels[f"{arch_name} (first finished seed)"] = curves
  figures.save_lorenz_panels(panels, os.path.join(out_dir, "figure1_lorenz.png"))
  lines += ["![Figure 1: MSE and perplexity](figure1_mse_perplexity.png)", "",
            "![Figure 1: Lorenz curves](figure1_lorenz.png)", ""]
  return lines


def _others(members: list[Member], kind: str) -> list[Member]:
  return [m for m in members if not _FIGURE1.match(m.name) and _kind(m) == kind]


def _params(m: Member) -> str:
  return f"{num_params(m.config) / 1e6:.2f}" if m.config else "—"


def table1_section(members: list[Member]) -> list[str]:
  singles, hiers = _others(members, "single"), _others(members, "hierarchical")
  if not hiers:
    return (["## Table 1", "", "No hierarchical runs outside Figure 1: nothing to pair "
             "(Table 1 needs both architectures).", ""] if singles else [])
  rows: dict[tuple[int, int], tuple[list, list]] = {}
  for m in hiers:
    rows.setdefault((m.config["model"]["code_dim"], 2 * m.config["model"]["num_codes"]),
                    ([], []))[1].append(m)
  for m in singles:  # the paper's rows, or a budget some hierarchical run has
    key = (m.config["model"]["code_dim"], m.config["model"]["num_codes"])
    if key in rows or key in TABLE1_ROWS:
      rows.setdefault(key, ([], []))[0].append(m)
  lines = ["## Table 1: single-level vs hierarchical at matched budgets", "",
           "Pairs: same D and K_s D_s = 2 K_h D_h (Eq. 5). PSNR and MSE: mean ± std over "
           "validation images (averaged over seeds); [seeds ± s, n] is the std over seeds "
           "of the per-run means. MSE on pixels in [0, 1]. Params: trainable parameters "
           "from config.json. Rows: the paper's (D, K_s) and every budget with a "
           "hierarchical run; several runs at one budget get a row each.", "",
           "| D_s = D_h | K_s | 2 × K_h | single PSNR (dB) | single MSE | single params (M) "
           "| hier PSNR (dB) | hier MSE | hier params (M) | PSNR hier − single (dB) | runs |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for (d, k) in sorted(rows):
    # Several runs at one budget: most finished seeds first, one row each.
    ss, hs = (sorted(x, key=lambda m: (-len(m.finished), m.label)) for x in rows[(d, k)])
    for i in range(max(len(ss), len(hs))):
      s = ss[i] if i < len(ss) else None
      h = hs[i] if i < len(hs) else None
      cells = [f"{d}", f"{k}", f"2 × {k // 2}"]
      for m, others in ((s, ss), (h, hs)):
        missing = "(paired above)" if others else "missing (no run at this budget)"
        if m is None:
          cells += [missing, "—", "—"]
        elif not m.finished:
          cells += [m.status(), "—", _params(m)]
        else:
          cells += [fmt_images(m, "psnr", 2), fmt_images(m, "mse", 5), _params(m)]
      psnr = [m.stat(lambda r: r["psnr"]["mean"]) if m else None for m in (s, h)]
      cells.append(compare(*psnr, 2, ("single", "hier")))
      cells.append(" / ".join(m.label for m in (s, h) if m))
      lines.append("| " + " | ".join(cells) + " |")
  return lines + ["", NOISE_RULE, ""]


def figure2_section(members: list[Member], out_dir: str) -> list[str]:
  grid: dict[tuple[int, int], Member] = {}
  for m in _others(members, "single"):
    grid.setdefault((m.config["model"]["code_dim"], m.config["model"]["num_codes"]), m)
  ds = sorted({d for d, _ in grid})
  ks = sorted({k for _, k in grid})
  if len(grid) < 2 or (len(ds) < 2 and len(ks) < 2):
    return []
  # One row (or column) is a slice, not the paper's K x D grid: tables, no heatmap.
  grid_2d = len(ds) > 1 and len(ks) > 1
  title = ("Figure 2: single-level model over K and D" if grid_2d else
           f"Single-level model over K at D = {ds[0]}" if len(ds) == 1 else
           f"Single-level model over D at K = {ks[0]}")
  lines = [f"## {title}", "",
           "Mean ± std over seeds (n seeds) of the validation PSNR (dB) and of the "
           "normalized perplexity (perplexity / K).", ""]
  panels = []
  for title, unit, key, digits in (
      ("PSNR (dB)", "PSNR (dB, higher is better)", lambda r: r["psnr"]["mean"], 2),
      ("normalized perplexity", "normalized perplexity (perplexity / K)", mean_perplexity, 3)):
    values = np.full((len(ds), len(ks)), np.nan)
    text = [["not run" for _ in ks] for _ in ds]
    lines += [f"{title}:", "", "| D \\ K | " + " | ".join(map(str, ks)) + " |",
              "|---" * (len(ks) + 1) + "|"]
    for i, d in enumerate(ds):
      cells = []
      for j, k in enumerate(ks):
        m = grid.get((d, k))
        s = m.stat(key) if m else None
        if s is None:
          text[i][j] = "missing" if m is None or m.status() == "missing" else "unfinished"
          cells.append(m.status() if m else "not in the sweep")
          continue
        values[i, j] = s[0]
        text[i][j] = f"{s[0]:.{digits}f}" + (f"\n±{s[1]:.{digits}f}" if s[1] is not None else "")
        cells.append(fmt(s, digits))
      lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("")
    panels.append((f"Single-level: {title}", unit, values, text))
  if not grid_2d:
    return lines
  figures.save_heatmaps(panels, ks, ds, "codebook size K_s (codes)",
                      "code dimension D_s", os.path.join(out_dir, "figure2_heatmaps.png"))
  return lines + ["![Figure 2](figure2_heatmaps.png)", ""]


def runs_section(members: list[Member]) -> list[str]:
  lines = ["## Every run", "", "| run | kind | K | D | step | PSNR (dB) | MSE "
           "| normalized perplexity | params (M) | status |", "|---|---|---|---|---|---|---|---|---|---|"]
  for m in members:
    model = m.config["model"] if m.config else {}
    steps = sorted({r.metrics["checkpoint_step"] for r in m.finished})
    usage = ", ".join(f"{lv} {fmt(m.stat(level_perplexity(lv)), 3)}"
                      for lv in (m.finished[0].metrics["levels"] if m.finished else []))
    lines.append(f"| {m.label} | {model.get('kind', '—')} | {model.get('num_codes', '—')} "
                 f"| {model.get('code_dim', '—')} | {', '.join(map(str, steps)) or '—'} "
                 f"| {fmt(m.stat(lambda r: r['psnr']['mean']), 2)} "
                 f"| {fmt(m.stat(lambda r: r['mse']['mean']), 5)} | {usage or '—'} "
                 f"| {_params(m)} | {m.status()} |")
  return lines + [""]


def write_report(dirs: list[str], out_dir: str, expected: dict | None = None,
                 seeds: list[int] | None = None) -> str:
  """Writes out_dir/REPORT.md and the PNGs; returns the markdown."""
  os.makedirs(out_dir, exist_ok=True)
  members = find_members(dirs, expected, seeds)
  lines = ["# vqjax report", "", f"Runs under {', '.join(dirs)}: {len(members)} members, "
           f"{sum(len(m.finished) for m in members)} finished runs.", ""]
  lines += figure1_section(members, out_dir)
  lines += table1_section(members)
  lines += figure2_section(members, out_dir)
  lines += runs_section(members)
  text = "\n".join(lines)
  with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
    f.write(text)
  logging.info("wrote %s", os.path.join(out_dir, "REPORT.md"))
  return text


def _define_flags() -> dict:
  """The command line's flags (defined only when run as a program)."""
  return dict(
      out=flags.DEFINE_string("out", None, "Where REPORT.md and the PNGs go."),
      sweep=flags.DEFINE_string("sweep", None, "Optional sweep file: its members are expected."),
      config=config_flags.DEFINE_config_file("config", None, "Base config of --sweep.",
                                             lock_config=False),
      seeds=flags.DEFINE_string("seeds", None, "Optional: seeds every member should have."),
  )


def main(argv, flag_values: dict):
  dirs = argv[1:]
  if not dirs:
    raise app.UsageError("give the run dirs: python -m vqjax.experiments.report DIR [DIR ...] --out=OUT")
  f = {name: holder.value for name, holder in flag_values.items()}
  expected = None
  if f["sweep"]:
    if f["config"] is None:
      raise app.UsageError("--sweep needs --config (the sweep's base config).")
    expected = expected_members(f["config"], sweep_spec.load_sweep(f["sweep"], f["config"]))
  print(write_report(dirs, f["out"], expected, sweep_spec.parse_seeds(f["seeds"])))


if __name__ == "__main__":
  _FLAGS = _define_flags()
  flags.mark_flags_as_required(["out"])
  app.run(lambda argv: main(argv, _FLAGS))
