"""scripts/regime_curves.py on fabricated runs: event files written by tensorboardX
with known PSNRs in, the known gaps (by hand) out; partial runs give what they have."""

import json
import os

import pytest

from model_snapshot import load_script

tensorboardX = pytest.importorskip("tensorboardX")


def write_run(path, evals, *, batch=32, steps=4800, train_psnr=99.0, metrics=None):
  """A run dir: config.json, events with eval/psnr at {step: value} (and a training
  `psnr` that must not be read), eval/metrics.json when `metrics` is given."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"data": {"batch_size": batch}, "train": {"num_steps": steps}}, f)
  writer = tensorboardX.SummaryWriter(str(path))
  for step, value in evals.items():
    writer.add_scalar("psnr", train_psnr, step)
    writer.add_scalar("eval/psnr", value, step)
  writer.close()
  if metrics is not None:
    os.makedirs(os.path.join(path, "eval"), exist_ok=True)
    with open(os.path.join(path, "eval", "metrics.json"), "w") as f:
      json.dump({"checkpoint_step": steps, "psnr": {"mean": metrics, "std": 1.0}}, f)


def test_gaps_images_seen_partial_runs_and_shorter_runs(tmp_path):
  runs = tmp_path / "runs"
  long_s, long_h = runs / "table1_4800steps_single", runs / "table1_4800steps_hierarchical"
  write_run(long_s / "D8_K2048" / "seed0", {400: 28.5, 800: 29.25, 1200: 29.75})
  write_run(long_h / "D8_2x1024" / "seed0", {400: 27.75, 800: 28.5})  # behind by one eval
  write_run(long_s / "D8_K8192" / "seed1", {400: 28.0})                # no hierarchical yet
  write_run(long_h / "D8_2x4096" / "seed1", {})                        # started, no eval
  # The same pair at 300 steps, finished: its final gap is drawn beside the curves.
  write_run(runs / "table1_single" / "D8_K2048" / "seed0", {}, steps=300, metrics=27.5)
  write_run(runs / "table1_hierarchical" / "D8_2x1024" / "seed0", {}, steps=300, metrics=26.5)
  # A finished 300-step pair at a budget the long runs do not have: left out.
  write_run(runs / "table1_single" / "D8_K1024" / "seed0", {}, steps=300, metrics=27.0)
  write_run(runs / "table1_hierarchical" / "D8_2x512" / "seed0", {}, steps=300, metrics=26.0)
  out = tmp_path / "out"
  load_script("regime_curves").main([str(runs), f"--out={out}"])
  data = json.loads((out / "regime_curves.json").read_text())
  assert data["tag"] == "eval/psnr"
  by_pair = {(p["K_s"], p["seed"]): p for p in data["pairs"]}
  assert sorted(by_pair) == [(2048, 0), (8192, 1)]
  points = by_pair[(2048, 0)]["points"]
  assert [p["step"] for p in points] == [400, 800, 1200]
  assert [p["images_seen"] for p in points] == [12800, 25600, 38400]
  assert [p["gap"] for p in points] == [0.75, 0.75, None]  # 28.5 - 27.75, 29.25 - 28.5
  assert points[2]["psnr_single"] == 29.75 and points[2]["psnr_hierarchical"] is None
  assert by_pair[(2048, 0)]["K_h"] == 1024
  assert by_pair[(8192, 1)]["points"] == [
      {"step": 400, "images_seen": 12800, "psnr_single": 28.0, "psnr_hierarchical": None,
       "gap": None}]
  assert [(s["K_s"], s["seed"], s["step"], s["images_seen"], s["gap"])
          for s in data["shorter_runs"]] == [(2048, 0, 300, 9600, 1.0)]
  png = out / "regime_gap.png"
  assert png.stat().st_size > 20_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_a_resumed_run_keeps_the_later_value_of_a_step(tmp_path):
  runs = tmp_path / "runs"
  run = runs / "table1_4800steps_single" / "D8_K2048" / "seed0"
  # Two event files, the second written after a resume (file names in time order).
  for stamp, evals in ((1000, {400: 28.0}), (2000, {400: 28.5, 800: 29.0})):
    write_run(tmp_path / str(stamp), evals)
    (event,) = (tmp_path / str(stamp)).glob("events.out.tfevents.*")
    write_run(run, {})
    event.rename(run / f"events.out.tfevents.{stamp}.host")
  for event in run.glob("events.out.tfevents.*"):
    if not event.name.endswith(".host"):
      event.unlink()
  assert len(list(run.glob("events.out.tfevents.*"))) == 2
  write_run(runs / "table1_4800steps_hierarchical" / "D8_2x1024" / "seed0", {400: 27.5})
  data = load_script("regime_curves").curves(str(runs))
  assert [(p["step"], p["psnr_single"], p["gap"]) for p in data["pairs"][0]["points"]] == [
      (400, 28.5, 1.0), (800, 29.0, None)]


def test_committed_runs_without_events_keep_their_curves(tmp_path):
  """collect_runs copies a finished run's eval/* scalars (not the training psnr,
  not an unfinished run) as eval/scalars.json; regime_curves reads them there."""
  runs, committed = tmp_path / "runs", tmp_path / "committed"
  write_run(runs / "table1_4800steps_single" / "D8_K2048" / "seed0",
            {400: 28.5, 800: 29.25}, metrics=29.25)
  write_run(runs / "table1_4800steps_hierarchical" / "D8_2x1024" / "seed0",
            {400: 27.75, 800: 28.0}, metrics=28.0)
  write_run(runs / "table1_4800steps_single" / "D8_K8192" / "seed0", {400: 30.0})  # unfinished
  load_script("collect_runs").main(str(runs), str(committed))
  single = committed / "table1_4800steps_single" / "D8_K2048" / "seed0"
  assert not list(single.glob("events.out.tfevents.*"))
  assert json.loads((single / "eval" / "scalars.json").read_text()) == {
      "eval/psnr": [[400, 28.5], [800, 29.25]]}
  assert not (committed / "table1_4800steps_single" / "D8_K8192").exists()
  data = load_script("regime_curves").curves(str(committed))
  assert [(p["step"], p["gap"]) for p in data["pairs"][0]["points"]] == [(400, 0.75), (800, 1.25)]
