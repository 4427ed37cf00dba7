"""The prior's slow checks (-m slow): a resumed run equals an uninterrupted one,
a K = 4 Markov chain learnt through the whole pipeline, 8 devices train the
prior 1 device trains, and the command line. Their fast siblings are in
tests/test_prior.py (the end-to-end test resumes a run; a 2-state chain in
memory; main.main in this process)."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from test_prior import (REPO, entropy_rate, markov_chain, markov_prior_config, stationary,
                        tiny_prior)
from vqjax import export, parallel
from vqjax.prior import train as prior_train

pytestmark = pytest.mark.slow

WORKER = os.path.join(os.path.dirname(__file__), "prior_worker.py")


def test_a_resumed_prior_equals_an_uninterrupted_one(tmp_path):
  """Stopped at step 3 and resumed (state and grain iterator from the checkpoint,
  dropout keys from the step): the same state as 6 steps in one go."""
  config = markov_prior_config(str(tmp_path))
  config.train.lr_schedule = "constant"    # the schedule does not depend on num_steps
  straight = prior_train.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_steps = 3
  prior_train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_steps = 6
  resumed = prior_train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed == straight
  mesh = parallel.create_mesh()
  states = [prior_train.restore(config, str(tmp_path / d), mesh, "sample")[3]
            for d in ("straight", "resumed")]
  chex.assert_trees_all_equal(*[(s.params, s.opt_state, s.step) for s in states])


def test_prior_reaches_the_entropy_rate_of_a_four_state_markov_chain(tmp_path):
  transition = np.array([[0.8, 0.1, 0.05, 0.05], [0.1, 0.7, 0.1, 0.1],
                         [0.05, 0.05, 0.8, 0.1], [0.2, 0.2, 0.1, 0.5]])
  rng = np.random.default_rng(0)
  for split, n in (("train", 512), ("validation", 256)):
    export.write_codes_file(str(tmp_path / f"{split}.array_record"),
                            {"codes": markov_chain(transition, n, 64, rng).reshape(n, 8, 8)})
  config = tiny_prior(codes=str(tmp_path / "train.array_record"), width=32)
  config.train.update(num_steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=10,
                      log_every=100, eval_every=0, checkpoint_every=300)
  config.sample.num_samples = 0
  result = prior_train.train_and_evaluate(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "eval" / "metrics.json") as f:
    assert json.load(f)["bits_per_code"] == result["bits_per_code"]
  rate = entropy_rate(transition)                                  # 1.2083 bits
  pi = stationary(transition)
  expected = (-(pi * np.log2(pi)).sum() + 63 * rate) / 64           # the first code: H(pi)
  assert abs(result["bits_per_code"] - rate) < 0.05, (result["bits_per_code"], rate)
  assert abs(result["bits_per_code"] - expected) < 0.05
  assert result["unigram_bits_per_code"] > rate + 0.5               # the baseline it beats


def run_worker(out_dir, num_devices: int):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  proc = subprocess.run([sys.executable, WORKER, str(out_dir)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return np.load(out_dir / "params.npz")


def test_eight_devices_train_the_prior_one_device_trains(tmp_path):
  one, eight = run_worker(tmp_path / "one", 1), run_worker(tmp_path / "eight", 8)
  assert int(one["num_devices"]) == 1 and int(eight["num_devices"]) == 8
  assert set(one.files) == set(eight.files)
  for name in set(one.files) - {"num_devices"}:
    np.testing.assert_allclose(one[name], eight[name], atol=2e-5, rtol=0, err_msg=name)
  metrics = [json.load(open(tmp_path / d / "run" / "eval" / "metrics.json"))
             for d in ("one", "eight")]
  assert metrics[0]["nll_bits_per_image"] == pytest.approx(metrics[1]["nll_bits_per_image"],
                                                           rel=1e-5)


def test_command_line_trains_evaluates_and_samples(tmp_path):
  rng = np.random.default_rng(1)
  for split in ("train", "validation"):
    export.write_codes_file(str(tmp_path / f"{split}.array_record"),
                            {"top": rng.integers(0, 3, (16, 2, 2)),
                             "bottom": rng.integers(0, 5, (16, 4, 4))})
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "vqjax.main", "--config=configs/prior.py:smoke",
          f"--workdir={tmp_path / 'run'}", f"--config.prior.codes={tmp_path / 'train.array_record'}",
          f"--config.compilation_cache_dir={jax.config.jax_compilation_cache_dir}"]
  for mode in ("train", "eval", "sample"):
    proc = subprocess.run(base + [f"--mode={mode}", "--config.sample.top_k=2"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
  with open(tmp_path / "run" / "eval" / "metrics.json") as f:
    result = json.load(f)
  assert result["tokens_per_image"] == 20 and list(result["levels"]) == ["top", "bottom"]
  assert result["checkpoint_step"] == 3
  sampled = export.codes_dataset(str(tmp_path / "run" / "samples" / "samples.array_record"))
  assert len(sampled) == 2 and sampled[0]["bottom"].shape == (4, 4)
  # Without the codes the command says how to write them.
  proc = subprocess.run(base[:-2] + ["--mode=train"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode != 0 and "--config.prior.codes=PATH" in proc.stderr
  assert "--mode=encode" in proc.stderr
