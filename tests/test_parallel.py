"""Data parallelism: 8 simulated devices and 2 processes match 1 device.

Each configuration runs in a fresh Python process (tests/devices_worker.py),
since the device count and jax.distributed are fixed at start-up.
"""

import os
import subprocess
import sys

import chex
import pytest

from devices_worker import assert_same_training, pick, run_worker, training_run
from vqjax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_eight_devices_match_one_device(tmp_path):
  runs = run_worker(tmp_path, {"run": training_run([1, 8])}, host_devices=8)["run"]
  assert_same_training(runs[1], runs[8])


def sample_stream_run(quantizer) -> dict:
  """The tiny single-level model (K = 64, D = 8, one residual block) with
  `quantizer`, 2 steps of 8 smooth 16x16 images on a 1- and a 2-device mesh
  (no evaluation: the train step is what draws from the 'sample' stream)."""
  return dict(scenario="train", devices=[1, 2], config="tiny_single", steps=2, batch=8,
              image_size=16, images="smooth", evaluate=False,
              overrides={"model.num_res_blocks": 1, "model.quantizer": quantizer.to_dict()})


def test_sample_stream_on_two_devices_matches_one_device(tmp_path):
  # The train step's 'sample' PRNG stream on a batch sharded over 2 devices:
  # the stochastic quantizer's Gumbel noise, and the grouped quantizer's
  # nested group dropout drawn per example. Both draw over the global batch,
  # so the sharded step is the 1-device step.
  runs = run_worker(tmp_path, {
      "stochastic": sample_stream_run(config_lib.quantizer_config("stochastic", tau0=0.5)),
      "grouped": sample_stream_run(config_lib.quantizer_config(
          "grouped", num_groups=2, dropout_scope="example", drop_probs=(0.0, 0.5)))},
      host_devices=2, fast_compile=True)
  # Group 1 is dropped for some of each batch's 8 images, not for all:
  # groups_kept = 1 + the fraction of images that keep it.
  kept = runs["grouped"][1]["metrics/codes/groups_kept"]
  assert ((kept > 1) & (kept < 2)).all(), kept
  assert runs["stochastic"][1]["metrics/codes/perplexity_soft"].min() > 1
  for name, run in runs.items():
    one, two = run[1], run[2]
    assert set(one) == set(two) and any(k.startswith("params/") for k in one), name
    assert any(k.startswith("codebook/") for k in one) == (name == "grouped")
    compared = ("params/", "codebook/", "metrics/")
    chex.assert_trees_all_close(pick(one, *compared), pick(two, *compared),
                                rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_released_options_on_eight_devices_match_one_device(tmp_path):
  # The released code's k-means init, every-step EMA dead-code rule with
  # distinct batch samples (top-k over the sharded global batch) and factorized
  # codes.
  run = training_run([1, 8], **{
      "model.quantizer.codebook_init": "kmeans", "model.quantizer.kmeans_iters": 3,
      "model.quantizer.reset_criterion": "ema", "model.quantizer.reset_rule": "sample",
      "model.factorized_codes": True})
  runs = run_worker(tmp_path, {"run": run}, host_devices=8)["run"]
  # Measured: max |1 device - 8 devices| = 2.7e-5 (codebook embed_sum, decoder
  # Conv_0 kernel), the summation order of the all-reduced k-means sums over 15
  # steps; this test failed at atol 1e-5 already before issue 22 (9e7d906).
  assert_same_training(runs[1], runs[8], atol=5e-5)
  assert any("project_in" in name for name in runs[1])


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  single = run_worker(tmp_path, {"run": training_run([1])}, host_devices=1, tag="single")
  # devices 0: the mesh spans the global devices, one per process.
  multi = run_worker(tmp_path, {"run": training_run([0])}, host_devices=1, processes=2,
                     tag="multi")
  assert_same_training(single["run"][1], multi["run"][2])


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
