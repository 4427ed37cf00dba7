"""HQ-VAE models through the command line, config validation, 8 devices = 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

import devices_worker

from vqjax import config_lib, data
from vqjax.experiments import hqvae_configs
from vqjax import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVEL_KEYS = {"num_codes", "perplexity", "normalized_perplexity", "unused_codes", "gini"}
SOFT_KEYS = {"perplexity_soft", "entropy", "variance"}
TOP_KEYS = {"checkpoint_step", "num_images", "dataset", "split", "image_size",
            "pixel_range", "psnr", "mse", "ssim", "levels",
            "lpips"}  # config.eval.lpips='alex' by default (docs/EVALUATION.md)


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return env


def run_main(config_arg: str, workdir) -> dict:
  cmd = [sys.executable, "-m", "vqjax.main", f"--config={config_arg}",
         f"--workdir={workdir}", "--cpu_devices=1"]
  proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    return json.load(f)


def check_metrics(result: dict, num_layers: int, num_codes: int, stochastic: bool):
  assert set(result) == TOP_KEYS
  assert result["checkpoint_step"] == 2
  for key in ("psnr", "mse", "ssim"):
    assert set(result[key]) == {"mean", "std"} and np.isfinite(result[key]["mean"])
  assert result["lpips"]["network"] == "alex" and np.isfinite(result["lpips"]["mean"])
  assert -1 <= result["ssim"]["mean"] <= 1
  names = [f"layer_{l}" for l in range(1, num_layers + 1)]
  assert list(result["levels"]) == names
  for level in result["levels"].values():
    assert set(level) == LEVEL_KEYS | (SOFT_KEYS if stochastic else set())
    assert level["num_codes"] == num_codes
    assert 1 <= level["perplexity"] <= num_codes
    if stochastic:
      assert 1 <= level["perplexity_soft"] <= num_codes
      assert 0 <= level["entropy"] <= np.log(num_codes) + 1e-6
      assert level["variance"] > 0


# Each new kind with each quantizer family, from its config file's smoke size.
CASES = [("configs/hqvae/cpu_sqvae2.py:smoke", 2, 64, True),
         pytest.param("configs/hqvae/cpu_rsqvae.py:smoke,shared", 2, 32, True,
                      marks=pytest.mark.slow),
         pytest.param("configs/hqvae/cpu_sqvae2.py:smoke,ema", 2, 64, False,
                      marks=pytest.mark.slow),
         pytest.param("configs/hqvae/cpu_rsqvae.py:smoke,ema,noreset", 2, 32, False,
                      marks=pytest.mark.slow)]


@pytest.mark.parametrize("config_arg,num_layers,num_codes,stochastic", CASES)
def test_new_models_train_and_evaluate_through_main(tmp_path, config_arg, num_layers,
                                                    num_codes, stochastic):
  result = run_main(os.path.join(REPO, config_arg), tmp_path / "run")
  check_metrics(result, num_layers, num_codes, stochastic)
  assert (tmp_path / "run" / "eval" / "reconstructions.png").exists()


@pytest.mark.parametrize("name", ["cifar10_sqvae2", "cifar10_rsqvae", "imagenet_sqvae2",
                                  "cpu_sqvae2", "cpu_rsqvae"])
def test_paper_configs_validate_and_shrink(name):
  from ml_collections import config_flags  # noqa: F401 (config files are plain modules)
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", "hqvae",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config_lib.validate(config)
  t, m = config.train, config.model
  assert (t.learning_rate, t.adam_b2, t.lr_schedule, t.plateau_factor,
          t.plateau_patience) == ((5e-4 if "imagenet" in name else 1e-3), 0.9, "plateau", 0.5, 3)
  assert m.code_dim == 64 and m.quantizer.kind == "stochastic"
  assert not data.color_augment_on(config.data)  # the paper trains on plain images
  # One validation round per epoch feeds the plateau rule.
  assert state_lib.resolve_durations(config).train.eval_every == state_lib.steps_per_epoch(config)
  # tau at the last step is the paper's CIFAR-10 end point exp(-1e-5 * 125000).
  np.testing.assert_allclose(np.exp(-m.quantizer.tau_rate * t.num_steps), np.exp(-1.25), rtol=1e-3)
  smoke = module.get_config("smoke")
  config_lib.validate(smoke)
  assert smoke.train.num_steps == 2 and smoke.model.channels == 8
  baseline = module.get_config("ema")
  assert baseline.model.quantizer.kind == "ema" and baseline.train.reconstruction_loss == "mse"
  with pytest.raises(ValueError, match=r"unknown option\(s\) \[.smok.\]"):
    module.get_config("smok")


def test_bad_hqvae_config_values_fail_with_the_field_name():
  def config(quantizer=None, **model):
    c = hqvae_configs.hqvae_config("injected_topdown", 16, num_pools=2, num_steps=10)
    c.model.update(model)
    c.model.quantizer.update(quantizer or {})
    return c

  for bad, message in [(config({"kind": "sq"}), r"model\.quantizer\.kind='sq'"),
                       (config({"kind": "fsq"}), "the HQ-VAE kinds take"),
                       (config(num_pools=0), "num_pools"),
                       (config(num_layers=3, num_pools=1), "num_pools >= 2"),
                       (config({"eval_mode": "argmax"}), r"model\.quantizer\.eval_mode"),
                       (config({"tau0": 0.0}), r"model\.quantizer\.tau0"),
                       (config(shared_codebook=True), "residual_topdown"),
                       (config(decoder_variance=True), "gaussian_nll")]:
    with pytest.raises(ValueError, match=message):
      config_lib.validate(bad)
  c = config()
  c.data.image_size = 36
  with pytest.raises(ValueError, match="multiple of 8"):
    config_lib.validate(c)
  c = config()
  c.train.reconstruction_loss = "l1"
  with pytest.raises(ValueError, match="reconstruction_loss"):
    config_lib.validate(c)
  c = hqvae_configs.hqvae_config("injected_topdown", (16, 16, 16), num_pools=2, num_steps=10)
  with pytest.raises(ValueError, match="num_layers"):   # 3 sizes for 2 layers
    config_lib.validate(c)
  c.model.num_layers = 3
  config_lib.validate(c)                                # one K per layer is fine
  c = config()
  c.train.lr_schedule = "cosine"
  with pytest.raises(ValueError, match="lr_schedule"):
    config_lib.validate(c)


@pytest.mark.slow
def test_sqvae2_train_steps_on_eight_devices_match_one_device(tmp_path):
  # configs/hqvae/cpu_sqvae2.py's model at smoke size (ARELBO, Adam (0.9,
  # 0.9)), 3 steps of 16 uint8 noise images at 16x16; the plateau rule with
  # patience 1, fed a scripted validation loss after each step.
  run = dict(scenario="train", devices=[1, 8], config="hqvae_injected_topdown", steps=3,
             batch=16, image_size=16, images="uint8", validation=[1.0, 1.5, 1.5],
             overrides={"model.quantizer.tau_rate": 0.1, "train.plateau_patience": 1})
  assert devices_worker.train_config(run).train.reconstruction_loss == "arelbo"
  runs = devices_worker.run_worker(tmp_path, {"sqvae2": run}, host_devices=8)["sqvae2"]
  names = sorted(runs[1])
  assert any("layer_2/neg_entropy" in n for n in names)
  assert any("log_var" in n for n in names) and any("scale" in n for n in names)
  # The plateau rule's scale as the train steps applied it: 1, 1, then halved
  # after validation round 2 (patience 1).
  for devices in (1, 8):
    assert list(runs[devices]["metrics/lr_scale"]) == [1, 1, 0.5]
  # Every logged metric of every step, the params and the optimizer state.
  compared = [{k: v for k, v in runs[d].items()
               if k.startswith(("metrics/", "params/", "opt_state/"))} for d in (1, 8)]
  chex.assert_trees_all_close(*compared, rtol=2e-4, atol=1e-5)
