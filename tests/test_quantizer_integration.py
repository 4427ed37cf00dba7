"""Every quantizer kind in the models, the command line and evaluation.

References are written here: PSNR in NumPy, histogram totals counted by hand,
"decode from the first k groups" by intercepting the quantizer's output
instead of through `active_groups`.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from devices_worker import assert_same_training, run_worker, training_run
from vqjax import capacity, config_lib, evaluate
from vqjax.perceptual import PerceptualMetrics, lpips
from vqjax.experiments import hqvae_configs
from vqjax.models import create_model
from vqjax.models.factory import create_quantizer, level_quantizers
from vqjax.models.vqvae import SingleLevelVQVAE
from vqjax.quantizers.grouped import GroupedQuantizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_KEYS = {"checkpoint_step", "num_images", "dataset", "split", "image_size",
            "pixel_range", "psnr", "mse", "ssim", "levels"}
LEVEL_KEYS = {"num_codes", "perplexity", "normalized_perplexity", "unused_codes", "gini"}
SOFT_KEYS = {"perplexity_soft", "entropy", "variance"}


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return env


def run_main(workdir, config_arg: str, *overrides: str) -> dict:
  cmd = [sys.executable, "-m", "vqjax.main", f"--config={config_arg}",
         f"--workdir={workdir}", "--cpu_devices=1", *overrides]
  proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    return json.load(f)


# (member of configs/quantizers.py, extra flags, K of the histogram, groups, stochastic)
CASES = [
    pytest.param("grouped_g2", (), 128, 2, False, marks=pytest.mark.slow),
    pytest.param("lfq", (), 2**12, 1, False, marks=pytest.mark.slow),
    pytest.param("fsq", (), 7 * 5**4, 1, False, marks=pytest.mark.slow),
    pytest.param("vq,quantizer=learned", ("--config.model.quantizer.gradient_estimator=rotation",
                                          "--config.model.quantizer.l2_normalize=True"),
                 8192, 1, False, marks=pytest.mark.slow),
    pytest.param("grouped_g4", ("--config.model.quantizer.group_quantizer.beta=0.5",
                                "--config.model.quantizer.group_dropout=False"), 32, 4, False,
                 marks=pytest.mark.slow),
    pytest.param("vq_rotation", (), 4096, 1, False, marks=pytest.mark.slow),
    pytest.param("sq", (), 4096, 1, True, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("member,flags,num_codes,groups,stochastic", CASES)
def test_every_quantizer_trains_and_evaluates_through_main(tmp_path, member, flags,
                                                           num_codes, groups, stochastic):
  workdir = tmp_path / "run"
  result = run_main(workdir, os.path.join(REPO, f"configs/quantizers.py:{member},smoke"),
                    *flags)
  want_top = TOP_KEYS | {"lpips"} | (  # eval.lpips is on by default
      {"psnr_first_k_groups", "lpips_first_k_groups"} if groups > 1 else set())
  assert set(result) == want_top
  assert result["checkpoint_step"] == 2
  for key in ("psnr", "mse", "ssim"):
    assert set(result[key]) == {"mean", "std"} and np.isfinite(result[key]["mean"])
  level = result["levels"]["codes"]
  assert set(level) == (LEVEL_KEYS | (SOFT_KEYS if stochastic else set())
                        | ({"groups"} if groups > 1 else set()))
  assert level["num_codes"] == num_codes
  # The histogram counts every latent position (32x32 images -> 8x8), once per group.
  hist = np.load(workdir / "eval" / "code_histograms.npz")["codes"]
  assert hist.shape == (num_codes,)
  assert hist.sum() == result["num_images"] * 8 * 8 * groups
  if groups > 1:
    per_group = num_codes // groups
    assert list(level["groups"]) == [f"group_{i}" for i in range(groups)]
    for i, g in enumerate(level["groups"].values()):
      part = hist[i * per_group:(i + 1) * per_group]
      assert part.sum() == result["num_images"] * 8 * 8
      p = part[part > 0] / part.sum()
      np.testing.assert_allclose(g["perplexity"], np.exp(-np.sum(p * np.log(p))), rtol=1e-9)
      np.testing.assert_allclose(g["normalized_perplexity"], g["perplexity"] / per_group)
      assert g["unused_codes"] == int(np.sum(part == 0))
    first_k = result["psnr_first_k_groups"]
    assert list(first_k) == [str(k) for k in range(1, groups + 1)]
    # k = G decodes from every group: the full PSNR.
    np.testing.assert_allclose(first_k[str(groups)]["mean"], result["psnr"]["mean"],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(first_k[str(groups)]["std"], result["psnr"]["std"],
                               rtol=0, atol=1e-5)
    lpips_k = result["lpips_first_k_groups"]
    assert list(lpips_k) == list(first_k)
    np.testing.assert_allclose(lpips_k[str(groups)]["mean"], result["lpips"]["mean"],
                               rtol=1e-5, atol=1e-6)


# -- budgets and validation ----------------------------------------------------------


def test_bits_per_position_of_the_sweep_members():
  import importlib.util
  spec = importlib.util.spec_from_file_location("qcfg", os.path.join(REPO, "configs",
                                                                     "quantizers.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  want = {"vq": 12, "vq_rotation": 12, "grouped_g2": 2 * 6, "grouped_g2_nodrop": 2 * 6,
          "grouped_g4": 4 * 3, "fsq": np.log2(7) + 4 * np.log2(5), "lfq": 12, "lfq_noentropy": 12,
          "sq": 12, "sq_var1": 12}
  assert set(module.MEMBERS) == set(want)
  for name, bits in want.items():
    config = module.get_config(name)
    config_lib.validate(config)
    q = level_quantizers(config.model)["codes"]
    np.testing.assert_allclose(capacity.bits_per_position(q), bits, rtol=1e-12)
    # 8 x 8 positions per 32 x 32 image (encoder stride 4).
    np.testing.assert_allclose(capacity.bits_per_image(config.model, 32), 64 * bits,
                               rtol=1e-12)
  fsq = level_quantizers(module.get_config("fsq").model)["codes"]
  assert (fsq.codebook_size, fsq.histogram_size) == (4375, 4375)


def grouped(**fields):
  return config_lib.quantizer_config("grouped", **fields)


@pytest.mark.parametrize("quantizer,model,message", [
    (grouped(num_groups=3), {}, r"model\.num_codes=64 is not divisible by "
                                r"model\.quantizer\.num_groups=3"),
    (grouped(num_groups=4), {"channels": 18}, r"model\.channels=18 is not divisible"),
    (grouped(num_groups=2), {"factorized_codes": True}, "factorized_codes"),
    (grouped(num_groups=2, drop_probs=(0.3, 0.2)), {}, r"model\.quantizer\.drop_probs"),
    (grouped(num_groups=2, group_quantizer={"kind": "fsq", "levels": (8,), "eps": 1e-3}), {},
     r"model\.quantizer\.group_quantizer\.kind='fsq'"),
    (grouped(num_groups=2, group_quantizer=config_lib.quantizer_config("ema", decay=1.5)),
     {}, r"model\.quantizer\.group_quantizer\.decay=1\.5"),
    (config_lib.quantizer_config("fsq", levels=(8, 5, 5, 5)), {"code_dim": 8},
     r"set model\.code_dim=4"),
    (config_lib.quantizer_config("fsq", levels=(1, 5)), {"code_dim": 2},
     r"model\.quantizer\.levels"),
    (config_lib.quantizer_config("lfq"), {"code_dim": 20}, r"model\.quantizer\.entropy_weight=0"),
    (config_lib.quantizer_config("lfq", entropy_weight=0.0), {"code_dim": 26}, "2\\^24"),
    (config_lib.quantizer_config("ema", gradient_estimator="gumbel"), {},
     r"model\.quantizer\.gradient_estimator"),
    (config_lib.quantizer_config("residual", num_stages=0), {}, r"model\.quantizer\.num_stages"),
    ({"kind": "vq"}, {}, r"model\.quantizer\.kind='vq'"),
    ({**config_lib.quantizer_config("ema").to_dict(), "l2_normalize": True}, {},
     r"holds field\(s\) \['l2_normalize'\] of another kind"),
    ("ema", {}, r"model\.quantizer='ema' must be a quantizer config"),
])
def test_bad_quantizer_fields_fail_with_the_field_name(quantizer, model, message):
  config = tiny_config("single")
  config.model = ml_collections.ConfigDict({**config.model.to_dict(), "quantizer": quantizer})
  config.model.update(model)
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_codebook_free_quantizers_are_refused_on_hqvae_kinds():
  config = hqvae_configs.hqvae_config("injected_topdown", 16, num_pools=1, num_steps=10)
  config.model.quantizer = config_lib.quantizer_config("fsq")
  with pytest.raises(ValueError, match="HQ-VAE kinds take"):
    config_lib.validate(config)
  config.model.quantizer = config_lib.quantizer_config("learned")
  config_lib.validate(config)


# -- the grouped model ----------------------------------------------------------------


def grouped_model_config(num_groups: int = 2):
  config = tiny_config("single")           # C = 16, D = 8, K = 64
  config.model.quantizer = grouped(num_groups=num_groups)
  config_lib.validate(config)
  return config.model


def quantizer_output(model, params, codebook, x):
  """The grouped quantizer's z_q [B, h, w, D] inside model.apply (captured)."""
  _, state = model.apply({"params": params, "codebook": codebook}, x, train=False,
                         capture_intermediates=lambda m, _: isinstance(m, GroupedQuantizer))
  return state["intermediates"]["quantizer"]["__call__"][0][0]


@pytest.mark.parametrize("grouped_projection", [True, False])
def test_group_codes_depend_only_on_their_own_channels_and_weights(grouped_projection):
  """d(codes of group i) / d(encoder output channels of group j) and d/d(projection
  weights of group j) are zero for j != i. Control: with a plain 1x1 conv
  (grouped_projection=False) every group's codes read every encoder channel."""
  m = grouped_model_config(2)
  g, d, c = 2, m.code_dim // 2, m.channels // 2
  model = SingleLevelVQVAE(channels=m.channels, code_dim=m.code_dim,
                           quantizer=create_quantizer(m),
                           num_groups=g if grouped_projection else 1)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  variables = model.init({"params": jax.random.key(0)}, x, train=False)
  params, codebook = variables["params"], variables["codebook"]
  w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, d)), jnp.float32)

  def codes_of_group(p, delta, i):
    """sum(w * z_q of group i), with delta added to the encoder output."""
    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.module.name == "encoder" and context.method_name == "__call__":
        return out + delta
      return out
    with nn.intercept_methods(interceptor):
      z_q = quantizer_output(model, p, codebook, x)
    return jnp.sum(z_q[..., i * d:(i + 1) * d] * w)   # straight-through to z_e

  delta = jnp.zeros((2, 8, 8, m.channels), jnp.float32)
  for i in range(g):
    grad_p, grad_h = jax.grad(codes_of_group, argnums=(0, 1))(params, delta, i)
    grad_h = np.asarray(grad_h)
    kernel = grad_p["pre_quant"]["conv"] if grouped_projection else grad_p["pre_quant"]
    bias, kernel = np.asarray(kernel["bias"]), np.asarray(kernel["kernel"])
    for j in range(g):
      channels, cols = slice(j * c, (j + 1) * c), slice(j * d, (j + 1) * d)
      if j == i:
        assert np.abs(grad_h[..., channels]).max() > 0
        assert np.abs(kernel[..., cols]).max() > 0 and np.abs(bias[cols]).max() > 0
      elif grouped_projection:
        assert np.all(grad_h[..., channels] == 0), (i, j)
        assert np.all(kernel[..., cols] == 0) and np.all(bias[cols] == 0), (i, j)
      else:
        assert np.abs(grad_h[..., channels]).max() > 0, (i, j)
    # The grouped kernel: C/G input channels per output group; the plain one: C.
    assert kernel.shape[2] == (c if grouped_projection else m.channels)


def np_psnr(x, x_hat):
  """Per-image PSNR in dB of images in [-1, 1] (reconstructions clipped), on [0, 1]."""
  x = (np.asarray(x, np.float64) + 1) / 2
  y = np.clip((np.asarray(x_hat, np.float64) + 1) / 2, 0, 1)
  mse = np.mean((x - y) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(1.0 / mse)


def decode_first_k_by_interception(model, variables, x, k: int, group_dim: int):
  """x_hat with the grouped quantizer's output beyond the first k groups zeroed,
  by intercepting its __call__ (not through active_groups)."""

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, GroupedQuantizer) and context.method_name == "__call__":
      z_q, aux = out
      keep = (jnp.arange(z_q.shape[-1]) < k * group_dim).astype(z_q.dtype)
      return z_q * keep, aux
    return out

  with nn.intercept_methods(interceptor):
    x_hat, _ = model.apply(variables, x, train=False)
  return x_hat


def test_first_k_group_psnr_matches_a_numpy_reference():
  m = grouped_model_config(4)
  g, d = 4, m.code_dim // 4
  model = create_model(m)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, (3, 32, 32, 3)), jnp.float32)
  variables = model.init({"params": jax.random.key(0)}, x, train=False)
  # Codes initialised from this batch (one training call), so they differ from 0.
  _, updates = model.apply(variables, x, train=True, mutable=["codebook"],
                           rngs={"codebook": jax.random.key(1), "sample": jax.random.key(2)})
  variables = {"params": variables["params"], **updates}
  models = {k: create_model(m, active_groups=k) for k in range(1, g + 1)}
  batch = {"image": np.asarray(np.rint((np.asarray(x) + 1) * 127.5), np.uint8)}
  perceptual = PerceptualMetrics("alex")
  got = jax.jit(functools.partial(evaluate.first_k_groups_step, models=models,
                                  perceptual=perceptual))(
      variables["params"], variables["codebook"], batch, perceptual.params)
  x_in = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1
  full = np_psnr(x_in, model.apply(variables, x_in, train=False)[0])
  for k in range(1, g + 1):
    x_hat = jax.jit(lambda v, x: decode_first_k_by_interception(model, v, x, k, d))(
        variables, x_in)
    np.testing.assert_allclose(np.asarray(got["psnr"][k]), np_psnr(x_in, x_hat), rtol=0, atol=1e-3)
    want_lpips = lpips.lpips_distance(perceptual.params["lpips_alex"], x_in,
                                      jnp.clip(x_hat, -1, 1))
    np.testing.assert_allclose(np.asarray(got["lpips"][k]), want_lpips, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got["psnr"][g]), full, rtol=0, atol=1e-3)
  assert np.abs(np.asarray(got["psnr"][1]) - full).max() > 1e-3   # k = 1 really drops groups
  assert np.abs(np.asarray(got["lpips"][1] - got["lpips"][g])).max() > 1e-4
  # LPIPS off: PSNR only.
  assert set(jax.jit(functools.partial(evaluate.first_k_groups_step, models=models))(
      variables["params"], variables["codebook"], batch)) == {"psnr"}


# -- 8 devices = 1 ----------------------------------------------------------------------


@pytest.mark.slow
def test_grouped_model_on_eight_devices_matches_one(tmp_path):
  # The tiny hierarchical model (C = 16, D = 8, K = 32) with 2 groups of 16
  # EMA codes, per-image nested dropout (drawn from the global batch), 15
  # steps of train.jit_train_step with data init and dead-code resets.
  run = training_run([1, 8], **{"model.quantizer": grouped(
      num_groups=2, dropout_scope="example", drop_probs=(0.0, 0.5)).to_dict()})
  runs = run_worker(tmp_path, {"run": run}, host_devices=8)["run"]
  one, eight = runs[1], runs[8]
  assert any("pre_quant_top']['conv" in name for name in one)
  assert one["indices/top"].shape[-1] == 2                   # [B, h, w, G]
  # Resets, codes (equal), params and codebooks (atol 1e-5) as in test_parallel.py.
  assert_same_training(one, eight)


@pytest.mark.slow
def test_group_dropout_stage_then_fine_tuning_resumes_the_same_workdir(tmp_path):
  # MGVQ's two stages: nested group dropout, then the same run continued
  # without it (the checkpoint's structure does not depend on the switch).
  config = os.path.join(REPO, "configs/quantizers.py:grouped_g2,smoke")
  run_main(tmp_path / "run", config)
  cmd = [sys.executable, "-m", "vqjax.main", f"--config={config}",
         f"--workdir={tmp_path / 'run'}", "--cpu_devices=1",
         "--config.model.quantizer.group_dropout=False", "--config.train.num_steps=4"]
  proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  assert "Resumed from checkpoint at step 2" in proc.stderr
  with open(tmp_path / "run" / "eval" / "metrics.json") as f:
    assert json.load(f)["checkpoint_step"] == 4
