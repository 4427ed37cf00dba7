"""Sweeps: member overrides, per-member workdirs, the report table."""

import json
import os
import subprocess
import sys

import pytest

from vqjax import sweep

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_table1_sweep_matches_the_paper_rows():
  config = tiny_config("single")
  members = sweep.load_sweep(os.path.join(REPO, "configs/sweeps/table1.py"), config)
  pairs = [(m["model.code_dim"], m["model.num_codes"]) for m in members]
  assert pairs == [(8, 1024), (8, 2048), (8, 4096), (8, 8192),
                   (16, 8192), (32, 8192), (64, 8192), (128, 8192)]
  hier = sweep.load_sweep(os.path.join(REPO, "configs/sweeps/table1.py"),
                          tiny_config("hierarchical"))
  for s, h in zip(members, hier):  # Eq. 5: K_s D_s = 2 K_h D_h
    assert s["model.num_codes"] * s["model.code_dim"] == 2 * h["model.num_codes"] * h["model.code_dim"]


def test_overrides_apply_to_a_copy_and_unknown_keys_fail():
  config = tiny_config("single")
  new = sweep.apply_overrides(config, {"name": "x", "model.num_codes": 17, "train.num_steps": 3})
  assert (new.model.num_codes, new.train.num_steps) == (17, 3)
  assert config.model.num_codes != 17
  with pytest.raises(KeyError, match="model.num_code"):
    sweep.apply_overrides(config, {"model.num_code": 3})


def test_report_gathers_each_members_metrics(tmp_path):
  members = [{"name": "a", "model.code_dim": 8}, {"name": "b", "model.code_dim": 16}]
  os.makedirs(tmp_path / "a" / "eval")
  metrics = {"checkpoint_step": 7, "psnr": {"mean": 30.5, "std": 1.25},
             "mse": {"mean": 0.001, "std": 0.0005},
             "levels": {"codes": {"normalized_perplexity": 0.5}}}
  (tmp_path / "a" / "eval" / "metrics.json").write_text(json.dumps(metrics))
  table = sweep.format_report(sweep.report(str(tmp_path), members))
  assert "| a | 7 | 30.50 ± 1.25 | 0.0010 ± 0.0005 | codes 0.500 |" in table
  assert "| b | - | not evaluated |" in table


def test_sweep_runs_one_member_in_its_own_workdir(tmp_path):
  config_file = tmp_path / "tiny.py"
  config_file.write_text(
      "import sys\nsys.path.insert(0, %r)\nfrom conftest import tiny_config\n"
      "def get_config():\n  c = tiny_config('single')\n  c.train.num_steps = 2\n  return c\n"
      % os.path.join(REPO, "tests"))
  sweep_file = tmp_path / "sw.py"
  sweep_file.write_text(
      "def get_sweep(config):\n"
      "  return [{'name': 'k16', 'model.num_codes': 16}, {'name': 'k8', 'model.num_codes': 8}]\n")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "vqjax.sweep", f"--config={config_file}", f"--sweep={sweep_file}",
       f"--workdir={tmp_path / 'runs'}", "--index=1"],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.listdir(tmp_path / "runs") == ["k8"]
  with open(tmp_path / "runs" / "k8" / "eval" / "metrics.json") as f:
    assert json.load(f)["levels"]["codes"]["num_codes"] == 8
