"""Data parallelism: 8 simulated devices and 2 processes match 1 device.

Each configuration runs in a fresh Python process (tests/parallel_worker.py),
since the device count and jax.distributed are fixed at start-up.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "parallel_worker.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(out, num_devices, host_devices, extra=(), env_extra=None, wait=True):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  env.update(env_extra or {})
  cmd = [sys.executable, WORKER, str(out), str(num_devices), *map(str, extra)]
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  if wait:
    return check(proc)
  return proc


def check(proc):
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output.decode()[-4000:]


def assert_same_training(a_path, b_path):
  a, b = np.load(a_path), np.load(b_path)
  assert set(a.files) == set(b.files)
  # Training must really have exercised data init and dead-code resets.
  assert a["resets"].sum() > 0
  np.testing.assert_array_equal(a["resets"], b["resets"])
  # The plateau rule halved the rate after validation rounds 5 and 10.
  np.testing.assert_array_equal(a["lr_scale"], [1] * 5 + [0.5] * 5 + [0.25] * 5)
  for name in a.files:
    if name.startswith("indices/"):
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    elif name != "resets":
      np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=0, err_msg=name)


def test_eight_devices_match_one_device(tmp_path):
  run_worker(tmp_path / "one.npz", 1, 8)
  run_worker(tmp_path / "eight.npz", 8, 8)
  assert_same_training(tmp_path / "one.npz", tmp_path / "eight.npz")


@pytest.mark.slow
def test_released_options_on_eight_devices_match_one_device(tmp_path):
  # The released code's k-means init, every-step EMA dead-code rule with
  # distinct batch samples (top-k over the sharded global batch) and factorized
  # codes.
  overrides = {"VQJAX_MODEL_OVERRIDES": json.dumps(
      {"codebook_init": "kmeans", "kmeans_iters": 3, "reset_criterion": "ema",
       "reset_rule": "sample", "factorized_codes": True})}
  run_worker(tmp_path / "one.npz", 1, 8, env_extra=overrides)
  run_worker(tmp_path / "eight.npz", 8, 8, env_extra=overrides)
  assert_same_training(tmp_path / "one.npz", tmp_path / "eight.npz")
  assert any("project_in" in name for name in np.load(tmp_path / "one.npz").files)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  run_worker(tmp_path / "single.npz", 1, 1)
  coordinator = f"127.0.0.1:{free_port()}"
  procs = [run_worker(tmp_path / "multi.npz", 0, 1, (coordinator, 2, i), wait=False)
           for i in range(2)]
  for proc in procs:
    check(proc)
  assert_same_training(tmp_path / "single.npz", tmp_path / "multi.npz")


def test_cpu_devices_divide_both_batch_sizes(monkeypatch):
  from conftest import tiny_config
  from vqjax import parallel

  config = tiny_config("single", batch_size=12)
  config.eval.batch_size = 8            # gcd 4
  for env_flags, requested, want in [("", 6, "=4"), ("", 3, "=2"), ("--foo", 1, None),
                                     ("--xla_force_host_platform_device_count=3", 6, "=3")]:
    monkeypatch.setenv("XLA_FLAGS", env_flags)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    parallel.configure_cpu_devices(config, requested)
    got = os.environ["XLA_FLAGS"]
    if want is None:
      assert got == env_flags
    else:
      assert got.endswith(f"xla_force_host_platform_device_count{want}"), got
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("SLURM_NTASKS", "4")   # multi-process: leave it to the launcher
  parallel.configure_cpu_devices(config, 6)
  assert os.environ["XLA_FLAGS"] == ""
