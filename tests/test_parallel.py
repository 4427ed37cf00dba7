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
  # The codes compared below are of real images (smooth images in [-1, 1]
  # have a pixel std of about 0.5): the images' code maps differ.
  assert a["eval_input_std"] > 0.2, float(a["eval_input_std"])
  for name in a.files:
    if name.startswith("indices/"):
      assert (a[name] != a[name][:1]).any(), f"{name}: every image has the same codes"
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
      {"model.quantizer.codebook_init": "kmeans", "model.quantizer.kmeans_iters": 3,
       "model.quantizer.reset_criterion": "ema", "model.quantizer.reset_rule": "sample",
       "model.factorized_codes": True})}
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


def test_cpu_backend_flags_added_once_and_never_override(monkeypatch):
  from vqjax import parallel

  monkeypatch.delenv("VQJAX_CPU_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  added = parallel.configure_cpu_backend()
  assert added == list(parallel.CPU_XLA_FLAGS)
  flags_now = os.environ["XLA_FLAGS"]
  assert flags_now.startswith("--xla_force_host_platform_device_count=2 ")
  assert parallel.configure_cpu_backend() == []          # idempotent
  assert os.environ["XLA_FLAGS"] == flags_now
  # A flag the user set keeps the user's value.
  name = parallel.CPU_XLA_FLAGS[0].split("=")[0]
  monkeypatch.setenv("XLA_FLAGS", f"{name}=")
  assert parallel.configure_cpu_backend() == []
  assert os.environ["XLA_FLAGS"] == f"{name}="
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("VQJAX_CPU_XLA_FLAGS", "0")
  assert parallel.configure_cpu_backend() == []
  assert os.environ["XLA_FLAGS"] == ""


def test_cpu_backend_flags_are_accepted_by_xla():
  """The flags start a CPU backend (an unknown flag would abort XLA) and train."""
  code = ("import os; from vqjax import parallel; parallel.configure_cpu_backend(); "
          "import jax, jax.numpy as jnp; "
          "x = jnp.ones((2, 8, 8, 3)); w = jnp.ones((3, 3, 3, 4)); "
          "f = lambda w: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))); "
          "print(os.environ['XLA_FLAGS'], float(jax.grad(f)(w).sum()))")
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  env.pop("VQJAX_CPU_XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, check=True, cwd=REPO).stdout
  from vqjax import parallel
  assert all(f in out for f in parallel.CPU_XLA_FLAGS), out
  # d/dw sum(conv): per (c, f) the taps see 8x8 (centre), 7x8 (edges), 7x7 (corners)
  # ones of each of the 2 images: (64 + 4 * 56 + 4 * 49) * 2 * 3 * 4.
  assert float(out.split()[-1]) == 11616.0, out
