"""Sweeps: member overrides, per-(member, seed) workdirs and seeds, resuming."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vqjax import config_lib
from vqjax.experiments import sweep, sweep_spec

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_table1_sweep_matches_the_paper_rows():
  config = tiny_config("single")
  members = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/table1.py"), config)
  pairs = [(m["model.code_dim"], m["model.num_codes"]) for m in members]
  assert pairs == [(8, 1024), (8, 2048), (8, 4096), (8, 8192),
                   (16, 8192), (32, 8192), (64, 8192), (128, 8192)]
  hier = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/table1.py"),
                          tiny_config("hierarchical"))
  for s, h in zip(members, hier):  # Eq. 5: K_s D_s = 2 K_h D_h
    assert s["model.num_codes"] * s["model.code_dim"] == 2 * h["model.num_codes"] * h["model.code_dim"]


@pytest.mark.parametrize("base_kind", ["hierarchical", "single"])
def test_figure1_sweep_has_both_architectures_at_each_stage(base_kind):
  base = tiny_config(base_kind)
  members = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure1.py"), base)
  configs = {m["name"]: sweep_spec.apply_overrides(base, m) for m in members}
  assert sorted(configs) == sorted(f"{a}_{s}" for a in ("hier", "single")
                                   for s in ("none", "init", "reset", "lowdim"))
  # (codebook_init, reset_threshold, D) per stage, as the paper adds them.
  stages = {"none": ("uniform", 0.0, 64), "init": ("data", 0.0, 64),
            "reset": ("data", 2.0, 64), "lowdim": ("data", 2.0, 16)}
  for stage, (init, threshold, d) in stages.items():
    hier, single = configs[f"hier_{stage}"], configs[f"single_{stage}"]
    for c in (hier, single):
      config_lib.validate(c)
      assert (c.model.quantizer.codebook_init, c.model.quantizer.reset_threshold,
              c.model.code_dim) == (
          init, threshold, d)
    assert (hier.model.kind, hier.model.channels) == ("hierarchical", 128)
    assert (single.model.kind, single.model.channels) == ("single", 160)  # Eq. 4
    # Eq. 5 with the hand-picked budget K_h D_h = 65,536 per level.
    assert hier.model.num_codes * d == 65_536
    assert single.model.num_codes * d == 2 * 65_536


def test_figure2_sweep_is_the_single_level_grid():
  members = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure2.py"),
                             tiny_config("single"))
  grid = {(m["model.num_codes"], m["model.code_dim"]) for m in members}
  assert grid == {(k, d) for k in (1024, 2048, 4096, 8192) for d in (8, 16, 32, 64, 128)}
  assert len(members) == 20
  with pytest.raises(ValueError, match="single-level"):
    sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure2.py"),
                     tiny_config("hierarchical"))


def test_overrides_apply_to_a_copy_and_unknown_keys_fail():
  config = tiny_config("single")
  new = sweep_spec.apply_overrides(config, {"name": "x", "model.num_codes": 17, "train.num_steps": 3})
  assert (new.model.num_codes, new.train.num_steps) == (17, 3)
  assert config.model.num_codes != 17
  with pytest.raises(KeyError, match="model.num_code"):
    sweep_spec.apply_overrides(config, {"model.num_code": 3})


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
      [sys.executable, "-m", "vqjax.experiments.sweep", f"--config={config_file}", f"--sweep={sweep_file}",
       f"--workdir={tmp_path / 'runs'}", "--index=1"],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.listdir(tmp_path / "runs") == ["k8"]
  with open(tmp_path / "runs" / "k8" / "eval" / "metrics.json") as f:
    assert json.load(f)["levels"]["codes"]["num_codes"] == 8
  with open(tmp_path / "runs" / "k8" / "config.json") as f:
    assert json.load(f)["model"]["num_codes"] == 8
  out = subprocess.run(  # rerun: finished, skipped
      [sys.executable, "-m", "vqjax.experiments.sweep", f"--config={config_file}", f"--sweep={sweep_file}",
       f"--workdir={tmp_path / 'runs'}", "--index=1"],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "skipping" in out.stderr, out.stderr[-3000:]
  out = subprocess.run(
      [sys.executable, "-m", "vqjax.experiments.sweep", f"--config={config_file}", f"--sweep={sweep_file}",
       f"--workdir={tmp_path / 'runs'}", "--report"],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = (tmp_path / "runs" / "REPORT.md").read_text()
  lines = report.splitlines()
  assert any(l.startswith("| k16 | single | 16 |") and l.endswith("| missing |") for l in lines)
  assert "| k8 | single | 8 | 8 | 2 |" in report and "| finished |" in report


def _two_members():
  return [{"name": "k16", "model.num_codes": 16}, {"name": "k8", "model.num_codes": 8}]


def test_seeds_give_one_workdir_and_seed_per_member_and_seed(tmp_path):
  runs = sweep_spec.expand_runs(_two_members(), sweep_spec.parse_seeds("0,1,2"))
  # Member-major, so a SLURM array index covers (member, seed).
  assert [(r.name, r.seed, r.subdir) for r in runs] == [
      ("k16", 0, "k16/seed0"), ("k16", 1, "k16/seed1"), ("k16", 2, "k16/seed2"),
      ("k8", 0, "k8/seed0"), ("k8", 1, "k8/seed1"), ("k8", 2, "k8/seed2")]
  base = tiny_config("single")
  base.seed = 7
  configs = [sweep_spec.run_config(base, r) for r in runs]
  assert [(c.seed, c.model.num_codes) for c in configs] == [
      (0, 16), (1, 16), (2, 16), (0, 8), (1, 8), (2, 8)]
  # Without --seeds: the old layout and the config's own seed.
  plain = sweep_spec.expand_runs(_two_members(), sweep_spec.parse_seeds(""))
  assert [(r.subdir, sweep_spec.run_config(base, r).seed) for r in plain] == [("k16", 7), ("k8", 7)]
  assert [r.name for r in sweep_spec.expand_runs(
      sweep_spec.select_members(_two_members(), ["k8"]), [3])] == ["k8"]
  with pytest.raises(ValueError, match="unknown"):
    sweep_spec.select_members(_two_members(), ["k4"])
  with pytest.raises(ValueError, match="distinct"):
    sweep_spec.parse_seeds("1,1")


def test_distinct_seeds_give_distinct_first_training_batches():
  from vqjax import data
  runs = sweep_spec.expand_runs(_two_members()[:1], [0, 1])
  first = []
  for r in runs:
    config = sweep_spec.run_config(tiny_config("single"), r)
    loader = data.create_train_loader(config.data, seed=config.seed)
    first.append(np.asarray(next(iter(loader))["image"]))
  assert first[0].shape == first[1].shape == (8, 32, 32, 3)
  assert not np.array_equal(first[0], first[1])
  again = sweep_spec.run_config(tiny_config("single"), runs[0])
  same = next(iter(data.create_train_loader(again.data, seed=again.seed)))
  np.testing.assert_array_equal(np.asarray(same["image"]), first[0])


def test_finished_runs_are_skipped_and_the_rest_train_with_config_json(tmp_path):
  base = tiny_config("single")
  base.train.num_steps = 6
  runs = sweep_spec.expand_runs(_two_members(), [0, 1])
  done = tmp_path / "k16" / "seed1" / "eval"
  os.makedirs(done)
  (done / "metrics.json").write_text(json.dumps({"checkpoint_step": 6}))
  half = tmp_path / "k8" / "seed0" / "eval"  # evaluated mid-way: not finished
  os.makedirs(half)
  (half / "metrics.json").write_text(json.dumps({"checkpoint_step": 3}))
  calls = []
  trained = sweep.run_sweep(base, runs, str(tmp_path),
                            train_fn=lambda c, w: calls.append((w, c.seed, c.model.num_codes)))
  assert calls == [(str(tmp_path / "k16" / "seed0"), 0, 16),
                   (str(tmp_path / "k8" / "seed0"), 0, 8),
                   (str(tmp_path / "k8" / "seed1"), 1, 8)]
  assert trained == [w for w, _, _ in calls]
  for w, seed, k in calls:
    with open(os.path.join(w, "config.json")) as f:
      written = json.load(f)
    assert (written["seed"], written["model"]["num_codes"]) == (seed, k)
  assert not (tmp_path / "k16" / "seed1" / "config.json").exists()
  calls.clear()  # --index=1 is (k16, seed 1): finished, nothing to do
  assert sweep.run_sweep(base, runs, str(tmp_path), index=1,
                         train_fn=lambda c, w: calls.append(w)) == []
  assert calls == []
  with pytest.raises(IndexError, match="4 runs"):
    sweep.run_sweep(base, runs, str(tmp_path), index=4, train_fn=lambda c, w: None)


def test_a_run_stopped_on_request_stops_the_sweep(tmp_path):
  """SIGTERM stops a run cleanly (train returns {'stopped_at_step': s}); the sweep
  must stop too, not go on with the next member (it survived `pkill`)."""
  base = tiny_config("single")
  base.train.num_steps = 6
  runs = sweep_spec.expand_runs(_two_members(), [0, 1])
  calls = []

  def stopped_train(config, workdir):
    calls.append(workdir)
    return {"stopped_at_step": 3}

  with pytest.raises(sweep.SweepStopped, match="resume with the same command"):
    sweep.run_sweep(base, runs, str(tmp_path), train_fn=stopped_train)
  assert calls == [str(tmp_path / "k16" / "seed0")]


def test_train_reports_a_stop_on_request(tmp_path, monkeypatch):
  """The real loop says it stopped early, so callers (the sweep) can tell."""
  from vqjax import train  # pylint: disable=import-outside-toplevel
  config = tiny_config("single")
  config.train.num_steps = 50
  monkeypatch.setattr(train._StopRequested, "__init__",
                      lambda self: (setattr(self, "requested", True),
                                    setattr(self, "_previous", None))[0])
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result == {"stopped_at_step": 0}


def test_figure2_below8_extends_the_paper_grid_with_the_same_member_names():
  base = config_lib.base_config()
  base.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8, image_size=64)
  paper = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure2.py"), base)
  extended = sweep_spec.load_sweep(os.path.join(REPO, "configs/sweeps/figure2_below8.py"), base)
  below = [m for m in extended if m["model.code_dim"] < 8]
  assert [m for m in extended if m["model.code_dim"] >= 8] == paper   # same names: skipped
  assert sorted((m["model.code_dim"], m["model.num_codes"]) for m in below) == [
      (d, k) for d in (2, 4) for k in (1024, 2048, 4096, 8192)]
