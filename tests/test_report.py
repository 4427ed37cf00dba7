"""vqjax.experiments.report on fabricated run dirs: known numbers in, the same numbers in REPORT.md."""

import importlib.util
import json
import os

import numpy as np
from PIL import Image

from vqjax import config_lib
from vqjax.experiments import report, run_results, sweep_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config(kind: str = "single"):
  spec = importlib.util.spec_from_file_location("vqjax_default", os.path.join(REPO, "configs/default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if kind == "hierarchical":
    config.model = config_lib.hierarchical_model(4096, 8)
  return config


def sweep_configs(sweep_file: str, base) -> dict:
  return {sweep_spec.member_name(m): sweep_spec.apply_overrides(base, m)
          for m in sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps", sweep_file), base)}


def write_run(path, config, *, psnr=(30.0, 3.0), mse=(0.001, 0.0005), ppl=None, step=None,
              seed=None):
  """A run dir: config.json, eval/metrics.json with these numbers, code histograms."""
  os.makedirs(os.path.join(path, "eval"), exist_ok=True)
  config = sweep_spec.apply_overrides(config, {})
  if seed is not None:
    config.seed = seed
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  if step is False:
    return
  levels = ppl or ({"codes": 0.5} if config.model.kind == "single" else {"top": 0.4, "bottom": 0.6})
  k = config.model.num_codes
  rng = np.random.default_rng(0 if seed is None else seed)
  hist = {}
  for i, (name, p) in enumerate(levels.items()):
    hist[name] = rng.poisson(50.0, k) * (np.arange(k) < int(k * p) + 1)
  m = {"checkpoint_step": config.train.num_steps if step is None else step,
       "psnr": {"mean": psnr[0], "std": psnr[1]}, "mse": {"mean": mse[0], "std": mse[1]},
       "levels": {name: {"normalized_perplexity": p, "num_codes": k}
                  for name, p in levels.items()}}
  with open(os.path.join(path, "eval", "metrics.json"), "w") as f:
    json.dump(m, f)
  np.savez(os.path.join(path, "eval", "code_histograms.npz"), **hist)


def png_is_a_figure(path):
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 300
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
  assert len(np.unique(pixels, axis=0)) > 50 and pixels.std() > 20  # not blank


def rows_of(text):
  return text.splitlines()


def test_figure1_seed_means_noise_marks_and_missing_members(tmp_path):
  configs = sweep_configs("figure1.py", default_config())
  mse = {"hier_none": [0.010, 0.011, 0.012], "hier_init": [0.0090, 0.0091, 0.0089],
         "hier_reset": [0.0089, 0.0080, 0.0098], "hier_lowdim": [0.0070, 0.0071, 0.0072],
         "single_none": [0.013, 0.012, 0.014], "single_init": [0.010, 0.010, 0.010],
         "single_lowdim": [0.0078, 0.0080, 0.0099]}  # seed 2 of single_lowdim: unfinished
  for name, values in mse.items():
    for s, v in enumerate(values):
      ppl = ({"codes": 0.5} if name.startswith("single")
             else {"top": 0.03 + 0.01 * s, "bottom": 0.5})
      write_run(tmp_path / name / f"seed{s}", configs[name], mse=(v, 0.004), ppl=ppl,
                seed=s, step=3 if (name, s) == ("single_lowdim", 2) else None)
  text = report.write_report([str(tmp_path)], str(tmp_path / "out"))
  rows = rows_of(text)
  # Seed means ± seed std (ddof 1) by hand; consecutive stages compared.
  assert "| hierarchical | none | 0.01100 ± 0.00100 (n=3) | — |" in text
  assert "| hierarchical | init | 0.00900 ± 0.00010 (n=3) | -0.00200 (init better) |" in text
  assert "| hierarchical | reset | 0.00890 ± 0.00090 (n=3) | -0.00010 (within noise) |" in text
  assert "top 0.040 ± 0.010 (n=3), bottom 0.500 ± 0.000 (n=3)" in text
  assert "| single-level | reset | — | — | — | — | — | missing |" in text
  lowdim = next(r for r in rows if r.startswith("| single-level | lowdim |"))
  assert "0.00790 ± 0.00014 (n=2)" in lowdim  # the unfinished seed is left out...
  assert lowdim.endswith("| 2/3 finished; seed2 unfinished (step 3/600) |")  # ...and said
  assert "— (only one seed)" not in text and "larger of the two seed stds" in text
  for name in ("figure1_mse_perplexity.png", "figure1_lorenz.png"):
    png_is_a_figure(tmp_path / "out" / name)


def test_table1_pairs_by_budget_with_seed_stats_and_params(tmp_path):
  single = sweep_configs("table1.py", default_config())
  hier = sweep_configs("table1.py", default_config("hierarchical"))
  psnr = {"D8_K1024": [30.0, 30.2], "D8_2x512": [30.4, 30.6],      # clear: +0.40
          "D8_K2048": [31.0, 31.4], "D8_2x1024": [31.1, 31.5],     # within noise: +0.10
          "D8_K4096": [32.0], "D8_2x2048": [32.1, 32.3],           # one seed: —
          "D8_K8192": [33.0], "D128_K8192": [29.0]}                # no hierarchical run
  for name, values in psnr.items():
    config = single.get(name) or hier[name]
    for s, v in enumerate(values):
      write_run(tmp_path / name / f"seed{s}", config, psnr=(v, 3.0 + 0.2 * s),
                mse=(0.002 + 0.001 * s, 0.001), seed=s)
  write_run(tmp_path / "D128_2x4096", hier["D128_2x4096"], step=3)
  text = report.write_report([str(tmp_path)], str(tmp_path / "out"))
  row = {tuple(r.split(" | ")[:2]): r for r in rows_of(text) if r.startswith("| ")}
  r = row[("| 8", "1024")]
  assert ("| 30.10 ± 3.10 [seeds ± 0.14, n=2] | 0.00250 ± 0.00100 [seeds ± 0.00071, n=2] |"
          in r)
  assert "| 30.50 ± 3.10 [seeds ± 0.14, n=2] |" in r and "| +0.40 (hier better) |" in r
  assert "| 2 × 512 |" in r and r.endswith("| D8_K1024 / D8_2x512 |")
  assert "| 31.20 ± 3.10 [seeds ± 0.28, n=2] |" in row[("| 8", "2048")]
  assert "| +0.10 (within noise) |" in row[("| 8", "2048")]
  assert "| 32.00 ± 3.00 [n=1] |" in row[("| 8", "4096")]
  assert "| +0.20 (—) |" in row[("| 8", "4096")]
  assert "| missing (no run at this budget) |" in row[("| 8", "8192")]
  assert "| unfinished (step 3/600) |" in row[("| 128", "8192")]
  # Params (M): the paper's Table 1 gives 1.1 (D = 8, both) and 1.4 / 1.7 (D = 128).
  params = lambda r: [float(c) for c in r.split(" | ")[5:9:3]]
  np.testing.assert_allclose(params(row[("| 8", "1024")]), [1.1, 1.1], atol=0.1)
  np.testing.assert_allclose(params(row[("| 128", "8192")]), [1.4, 1.7], atol=0.1)


def test_figure2_grid_heatmaps_and_expected_members(tmp_path):
  base = default_config()
  configs = sweep_configs("figure2.py", base)
  for name, p in (("D8_K1024", 30.0), ("D8_K2048", 31.0), ("D16_K1024", 29.5)):
    for s, dp in enumerate((-0.1, 0.1)):
      write_run(tmp_path / name / f"seed{s}", configs[name], psnr=(p + dp, 3.0),
                ppl={"codes": 0.25 * (s + 1)}, seed=s)
  expected = run_results.expected_members(
      base, sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure2.py"), base))
  text = report.write_report([str(tmp_path)], str(tmp_path / "out"), expected, [0, 1])
  rows = rows_of(text)
  assert "| 8 | 30.00 ± 0.14 (n=2) | 31.00 ± 0.14 (n=2) | missing | missing |" in rows
  assert "| 16 | 29.50 ± 0.14 (n=2) | missing | missing | missing |" in rows
  assert "| 8 | 0.375 ± 0.177 (n=2) | 0.375 ± 0.177 (n=2) | missing | missing |" in rows
  missing = [r for r in rows if r.startswith("| D") and r.endswith("| missing |")]
  assert len(missing) == 17 and any(r.startswith("| D128_K8192 | single | 8192 | 128 |")
                                    for r in missing)
  png_is_a_figure(tmp_path / "out" / "figure2_heatmaps.png")
  assert "Table 1" in text and "nothing to pair" in text  # single-level only


def test_report_command_line(tmp_path):
  import subprocess
  import sys
  configs = sweep_configs("figure2.py", default_config())
  write_run(tmp_path / "runs" / "D8_K1024", configs["D8_K1024"], psnr=(30.0, 3.0))
  write_run(tmp_path / "runs" / "D8_K2048", configs["D8_K2048"], step=False)  # not evaluated
  out = subprocess.run(
      [sys.executable, "-m", "vqjax.experiments.report", str(tmp_path / "runs"), f"--out={tmp_path / 'out'}"],
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), capture_output=True,
      text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  text = (tmp_path / "out" / "REPORT.md").read_text()
  assert "| 8 | 30.00 (n=1) | unfinished (not evaluated) |" in text
  # One row of the K x D grid is not Figure 2: its tables, no heatmap.
  assert "## Single-level model over K at D = 8" in text and "Figure 2" not in text
  assert not (tmp_path / "out" / "figure2_heatmaps.png").exists()
