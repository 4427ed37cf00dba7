"""Faults and bad input: diverged steps, evaluation errors, workdir, config keys.

Each test here failed on the code before issue 11 (the note says how).
"""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from vqjax import checkpointing, data, evaluate, train, writers

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RecordingWriter(writers.ConsoleWriter):
  """Keeps every scalar written, by step."""

  def __init__(self):
    super().__init__()
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(int(step), {}).update(scalars)


@pytest.fixture
def recorded(monkeypatch):
  writer = RecordingWriter()
  monkeypatch.setattr(writers, "create_writer", lambda *a, **k: writer)
  return writer


def saved_steps(workdir) -> list[int]:
  directory = checkpointing.checkpoint_dir(str(workdir))
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def poison_batches(monkeypatch, bad_steps):
  """Training batches at the given 1-based steps become NaN images."""
  real_loader = data.create_train_loader

  class PoisonedIterator:  # keeps the grain iterator's get/set_state for checkpoints
    def __init__(self, it):
      self.it, self.count = it, 0

    def __next__(self):
      batch = next(self.it)
      self.count += 1
      if self.count in bad_steps:
        batch = {"image": np.full(batch["image"].shape, np.nan, np.float32)}
      return batch

    def __getattr__(self, name):
      return getattr(self.it, name)

  class PoisonedLoader:
    def __init__(self, loader):
      self.loader = loader

    def __iter__(self):
      return PoisonedIterator(iter(self.loader))

  monkeypatch.setattr(data, "create_train_loader",
                      lambda *a, **k: PoisonedLoader(real_loader(*a, **k)))


def test_a_step_that_diverges_the_params_is_never_saved(tmp_path):
  # The loss of step 1 is computed with the initial params and is finite; the
  # update (learning rate 1e39 overflows float32) makes the params inf/NaN.
  # The old guard read only that loss and saved the diverged state.
  config = tiny_config("single")
  config.train.learning_rate = 1e39
  config.train.checkpoint_every = 1
  with pytest.raises(train.NonFiniteLossError, match="diverged at step 1"):
    train.train_and_evaluate(config, str(tmp_path))
  assert saved_steps(tmp_path) == []


def test_skip_nonfinite_skips_batches_and_counts_them(tmp_path, monkeypatch, recorded):
  config = tiny_config("single")
  config.train.skip_nonfinite = 3
  config.train.log_every = 6
  poison_batches(monkeypatch, {3, 4})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["psnr"]["mean"])
  assert recorded.scalars[6]["skipped_steps"] == 2.0
  assert recorded.scalars[6]["nonfinite"] == pytest.approx(2 / 6)
  assert saved_steps(tmp_path) == [3, 6]


@pytest.mark.slow
def test_skip_nonfinite_stops_after_n_in_a_row(tmp_path, monkeypatch, recorded):
  config = tiny_config("single")
  config.train.skip_nonfinite = 2
  config.train.checkpoint_every = 1
  poison_batches(monkeypatch, {3, 4, 5, 6})
  with pytest.raises(train.NonFiniteLossError, match="2 steps in a row"):
    train.train_and_evaluate(config, str(tmp_path))
  # Steps 3 and 4 kept the state of step 2; the run stopped at step 4 before
  # its save, so the last checkpoint is step 3 (a skipped, finite state).
  assert saved_steps(tmp_path)[-1] == 3


def test_evaluation_compiles_once_per_run(tmp_path, monkeypatch):
  traces = []
  real_step = evaluate.eval_step

  def counting_step(*args, **kwargs):
    traces.append(1)  # runs once per trace, not per call
    return real_step(*args, **kwargs)

  monkeypatch.setattr(evaluate, "eval_step", counting_step)
  config = tiny_config("single")
  config.train.eval_every = 2  # evaluations at steps 2 and 4, and the final one at 6
  train.train_and_evaluate(config, str(tmp_path))
  assert len(traces) == 1


# -- evaluation errors -----------------------------------------------------------------


def test_evaluation_without_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
    evaluate.evaluate_checkpoint(tiny_config("single"), str(tmp_path))


def test_evaluation_errors_name_steps_and_mismatched_shapes(tmp_path):
  config = tiny_config("single")
  train.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpointing.checkpoint_dir(str(tmp_path))
  before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(ckpt) for f in files}

  config.eval.checkpoint_step = 5
  with pytest.raises(ValueError, match=r"checkpoint step 5 .* available steps: \[3, 6\]"):
    evaluate.evaluate_checkpoint(config, str(tmp_path))

  other = tiny_config("single")
  other.model.code_dim = 4  # the decoder's first conv reads 4 channels, not 8
  with pytest.raises(ValueError, match=r"params/decoder/Conv_0/kernel has shape "
                                       r"\(3, 3, 8, 16\) in the checkpoint and "
                                       r"\(3, 3, 4, 16\) in this config"):
    evaluate.evaluate_checkpoint(other, str(tmp_path))

  config.eval.checkpoint_step = 3
  evaluate.evaluate_checkpoint(config, str(tmp_path))
  after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
           for d, _, files in os.walk(ckpt) for f in files}
  assert after == before  # evaluation never writes into checkpoints/


# -- workdir and config ----------------------------------------------------------------


def test_unwritable_workdir_fails_before_training(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  steps = []
  real = train.jit_train_step
  monkeypatch.setattr(train, "jit_train_step",
                      lambda *a, **k: steps.append(1) or real(*a, **k))
  with pytest.raises(PermissionError, match="cannot write checkpoints into"):
    train.train_and_evaluate(tiny_config("single"), str(blocker / "run"))
  assert not steps  # before the train step was even built


@pytest.mark.slow
def test_disk_too_small_for_a_checkpoint_fails_before_training(tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, "disk_usage",
                      lambda path: usage._replace(free=10_000))  # 10 kB free
  with pytest.raises(OSError, match=r"not enough disk space .* MiB, the disk has 0.0 MiB"):
    train.train_and_evaluate(tiny_config("single"), str(tmp_path))
  assert saved_steps(tmp_path) == []


def test_unknown_config_key_names_the_closest_valid_one(tmp_path):
  cmd = [sys.executable, "-m", "vqjax.main", "--config=configs/default.py",
         f"--workdir={tmp_path}", "--config.model.num_code=5"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == (
      "error: unknown config key --config.model.num_code; the closest valid key is "
      "--config.model.num_codes.")
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("flag,new", [
    ("--config.model.quantizer=fsq", "--config.model.quantizer.kind (switch kinds"),
    ("--config.model.sq_tau0=0.5", "--config.model.quantizer.tau0 (kind 'stochastic')"),
])
def test_old_flat_quantizer_key_names_the_new_one(tmp_path, flag, new):
  cmd = [sys.executable, "-m", "vqjax.main", "--config=configs/default.py",
         f"--workdir={tmp_path}", flag]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {flag.split('=')[0]} is now {new}"), last
  assert not os.listdir(tmp_path)  # nothing written


# -- kill -9 ------------------------------------------------------------------------------


def _config_file(tmp_path, checkpoint_every: int):
  path = tmp_path / "tiny.py"
  path.write_text(
      "import sys\nsys.path.insert(0, %r)\nfrom conftest import tiny_config\n"
      "def get_config():\n  c = tiny_config('single')\n  c.train.num_steps = 12\n"
      "  c.train.log_every = 1\n  c.train.checkpoint_every = %d\n  return c\n"
      % (os.path.join(REPO, "tests"), checkpoint_every))
  return path


def _final_state(workdir, config):
  from vqjax import models, state as state_lib
  model = models.create_model(config.model)
  tx = state_lib.create_optimizer(config)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(model, tx, 32, 0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # saved on 2
  abstract = checkpointing.abstract_like(abstract, one_device)
  manager = checkpointing.create_manager(str(workdir), config, read_only=True)
  return checkpointing.restore_state(manager, abstract)[0]


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [1, 5])  # kills inside a save / inside steps
def test_kill_9_then_the_same_command_ends_bit_identical(tmp_path, checkpoint_every):
  import re
  import signal
  import chex
  config_file = _config_file(tmp_path, checkpoint_every)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")

  def command(workdir):
    return [sys.executable, "-m", "vqjax.main", f"--config={config_file}",
            f"--workdir={workdir}"]

  straight = subprocess.run(command(tmp_path / "straight"), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-3000:]

  rng = np.random.default_rng(checkpoint_every)
  kill_after = int(rng.integers(checkpoint_every + 1, 11))  # a random step after a save
  proc = subprocess.Popen(command(tmp_path / "killed"), env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    found = re.search(r"\] \[(\d+)\] .*loss=", line)
    if found and int(found.group(1)) >= kill_after:
      break
  # With a save every step an asynchronous write is almost always in flight here.
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  # Only finalized checkpoints count: a save cut by the kill is a temporary
  # directory that orbax never lists (nor restores).
  finished = saved_steps(tmp_path / "killed")
  assert not finished or max(finished) <= kill_after

  again = subprocess.run(command(tmp_path / "killed"), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  if finished:
    assert f"Resumed from checkpoint at step {max(finished)}" in again.stderr
  else:  # killed before its first save was finalized: starts again from scratch
    assert "Resumed from checkpoint" not in again.stderr

  from ml_collections import config_flags  # noqa: F401  (the config file's own import path)
  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  a = _final_state(tmp_path / "straight", config)
  b = _final_state(tmp_path / "killed", config)
  assert int(a.step) == int(b.step) == 12
  chex.assert_trees_all_equal(jax.device_get(a.params), jax.device_get(b.params))
  chex.assert_trees_all_equal(jax.device_get(a.opt_state), jax.device_get(b.opt_state))
  chex.assert_trees_all_equal(jax.device_get(a.codebook), jax.device_get(b.codebook))


# -- preemption on several processes ---------------------------------------------------


@pytest.mark.slow
def test_preemption_of_one_process_stops_all_at_the_same_step(tmp_path):
  import re
  import signal
  import socket
  import time
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  config_file = tmp_path / "tiny.py"
  config_file.write_text(
      "import sys\nsys.path.insert(0, %r)\nfrom conftest import tiny_config\n"
      "def get_config():\n  c = tiny_config('single')\n  c.train.num_steps = 100000\n"
      "  c.train.log_every = 1\n  c.train.checkpoint_every = 100000\n  return c\n"
      % os.path.join(REPO, "tests"))
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  procs = []
  for i in range(2):
    cmd = [sys.executable, "-m", "vqjax.main", f"--config={config_file}",
           f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={i}"]
    procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(logs[i], "w"),
                                  stderr=subprocess.STDOUT))
  deadline = time.time() + 300
  while time.time() < deadline and not re.search(r"\] \[3\] .*loss=", logs[0].read_text()):
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)  # only process 1 is told
  for proc in procs:
    proc.wait(timeout=300)
  texts = [log.read_text() for log in logs]
  assert [p.returncode for p in procs] == [0, 0], texts[1][-3000:]
  stopped = [re.findall(r"Stopped at step (\d+) on request", t) for t in texts]
  assert stopped[0] and stopped[0] == stopped[1], stopped
  assert "resume with the same command" in texts[0]
  assert saved_steps(tmp_path / "run") == [int(stopped[0][0])]  # saved once


# -- compilation cache ------------------------------------------------------------------


@pytest.mark.slow
def test_compilation_cache_switch_and_cached_runs_are_bit_identical(tmp_path):
  import chex
  import re
  config_file = _config_file(tmp_path, checkpoint_every=4)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  cache = tmp_path / "cache"

  def run(name, cache_dir):
    out = subprocess.run(
        [sys.executable, "-m", "vqjax.main", f"--config={config_file}",
         f"--workdir={tmp_path / name}", f"--config.compilation_cache_dir={cache_dir}",
         "--config.train.num_steps=4"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(re.search(r"First train step done ([\d.]+) s", out.stderr).group(1))

  run("uncached", "")
  assert not cache.exists()                      # off: nothing written
  cold = run("cold", str(cache))
  entries = set(os.listdir(cache))
  assert entries                                 # on: the compiled programs are stored
  warm = run("warm", str(cache))
  assert set(os.listdir(cache)) == entries       # ... and reused, not compiled again
  assert warm < cold, (cold, warm)

  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.train.num_steps = 4
  states = [jax.device_get(_final_state(tmp_path / name, config))
            for name in ("uncached", "cold", "warm")]
  for other in states[1:]:
    chex.assert_trees_all_equal(states[0].params, other.params)
    chex.assert_trees_all_equal(states[0].codebook, other.codebook)
    chex.assert_trees_all_equal(states[0].opt_state, other.opt_state)
