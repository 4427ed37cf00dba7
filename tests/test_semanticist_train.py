"""SEMANTICIST end to end: resume equals an uninterrupted run bit for bit, the
command line (train, resume, eval, reconstruct), reconstruction PSNR rising with
the number of tokens after training, and 8 devices matching 1.

References written here: PSNR per image in NumPy from uint8 reconstructions of
`vqjax.load`, paired standard errors for "monotone within noise", and the
first-k curve of metrics.json recomputed from `decode(codes, num_tokens=k)`.
"""

import functools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_snapshot
import vqjax
from vqjax import checkpointing, config_lib, parallel, train
from vqjax import state as state_lib
from vqjax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "semanticist_worker.py")
SMOKE = "configs/semanticist/cpu.py:smoke"


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return env


def smoke_config(steps: int):
  config = model_snapshot.load_config(SMOKE)
  config.data.builtin_val_images = ("chelsea",)   # 126 crops
  config.eval.batch_size = 64
  config.eval.first_k_tokens = (1,)               # k = 1 and k = T
  config.train.num_steps = steps
  config.train.checkpoint_every = 2
  config_lib.validate(config)
  return config


def restored_state(config, workdir):
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(
      model, tx, config.data.image_size, config.seed))
  manager = checkpointing.create_manager(str(workdir), config, read_only=True)
  return jax.device_get(checkpointing.restore_state(manager, abstract)[0])


def np_psnr(a, b):
  """Per-image PSNR (dB) of uint8 images on [0, 1]."""
  mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2, (1, 2, 3))
  return 10 * np.log10(1 / mse)


def test_resume_equals_uninterrupted_run_and_the_first_k_curve_is_decode_k(tmp_path):
  config = smoke_config(3)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  train.train_and_evaluate(smoke_config(2), str(tmp_path / "resumed"))   # "killed" at 2
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))  # the same command
  a, b = restored_state(config, tmp_path / "straight"), restored_state(config, tmp_path / "resumed")
  assert int(a.step) == int(b.step) == 3
  chex.assert_trees_all_equal((a.params, a.opt_state, a.rng), (b.params, b.opt_state, b.rng))
  assert straight == resumed
  t = config.model.num_tokens
  assert set(straight["psnr_first_k_tokens"]) == set(
      straight["variance_explained_first_k_tokens"]) == {"1", str(t)}
  assert straight["psnr_first_k_tokens"][str(t)] == straight["psnr"]
  # eval.lpips is on by default: LPIPS per k, k = T the main reconstruction's.
  assert set(straight["lpips_first_k_tokens"]) == {"1", str(t)}
  assert straight["lpips_first_k_tokens"][str(t)] == {
      k: v for k, v in straight["lpips"].items() if k != "network"}
  assert straight["levels"] == {}   # continuous tokens: no code level


@pytest.mark.slow
def test_trains_through_main_resumes_bit_identically_and_reconstructs(tmp_path):
  def main(workdir, *flags):
    cmd = [sys.executable, "-m", "vqjax.main", f"--config={SMOKE}", f"--workdir={workdir}",
           "--cpu_devices=1", "--config.data.builtin_val_images=('chelsea',)", *flags]
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stderr

  main(tmp_path / "straight", "--config.train.num_steps=4")
  main(tmp_path / "resumed", "--config.train.num_steps=2")
  assert "Resumed from checkpoint at step 2" in main(tmp_path / "resumed",
                                                     "--config.train.num_steps=4")
  config = smoke_config(4)
  a, b = (restored_state(config, tmp_path / n) for n in ("straight", "resumed"))
  chex.assert_trees_all_equal((a.params, a.opt_state), (b.params, b.opt_state))
  metrics = [json.load(open(tmp_path / n / "eval" / "metrics.json")) for n in ("straight", "resumed")]
  assert metrics[0] == metrics[1] and metrics[0]["checkpoint_step"] == 4
  assert len(metrics[0]["psnr_first_k_tokens"]) == config.model.num_tokens
  # --mode=reconstruct on a folder of photos of other sizes (tiled into 32x32).
  import skimage.data  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  (tmp_path / "photos").mkdir()
  Image.fromarray(skimage.data.coffee()[:40, :70]).save(tmp_path / "photos" / "coffee.png")
  main(tmp_path / "straight", "--mode=reconstruct",
       f"--config.reconstruct.input={tmp_path / 'photos'}")
  rows = open(tmp_path / "straight" / "reconstructions" / "psnr.csv").read().splitlines()
  assert rows[0] == "file,height,width,psnr_db" and rows[1].startswith("coffee.png,40,70,")
  # --mode=encode keeps continuous tokens float32 [T, D]; --mode=decode reads them back.
  from vqjax import export  # pylint: disable=import-outside-toplevel
  codes = tmp_path / "codes.array_record"
  main(tmp_path / "straight", "--mode=encode", f"--config.encode.output={codes}")
  records = export.codes_dataset(str(codes))
  first = records[0]
  assert first["tokens"].dtype == np.float32
  assert first["tokens"].shape == (config.model.num_tokens, config.model.code_dim)
  main(tmp_path / "straight", "--mode=decode", f"--config.decode.input={codes}",
       f"--config.decode.output={tmp_path / 'decoded'}")
  assert len(os.listdir(tmp_path / "decoded")) == len(records)


def test_first_k_tokens_step_psnr_and_lpips_are_those_of_decode_k():
  from vqjax import evaluate  # pylint: disable=import-outside-toplevel
  from vqjax.perceptual import PerceptualMetrics, lpips  # pylint: disable=import-outside-toplevel
  m = config_lib.semanticist_model(16)
  m.patch_size, m.decoder.patch_size = 4, 4
  m.width = m.decoder.width = 32
  m.depth = m.decoder.depth = 1
  m.num_heads = m.decoder.num_heads = 2
  m.num_tokens, m.code_dim = 4, 8
  m.decoder.num_timesteps, m.decoder.sample_steps = 100, 4
  model = create_model(m)
  x = smooth_images(3, 16, 0)
  batch = {"image": np.round((x + 1) * 127.5).astype(np.uint8)}
  x_in = batch["image"].astype(np.float32) / 127.5 - 1
  variables = {"codebook": {}, **model.init({"params": jax.random.key(0)}, x_in, train=False)}
  perceptual = PerceptualMetrics("alex")
  step = jax.jit(functools.partial(evaluate.first_k_tokens_step, model=model,
                                   perceptual=perceptual))
  codes = jax.jit(functools.partial(model.apply, method="encode_codes"))(variables, x_in)
  decode = jax.jit(lambda k: model.apply(variables, codes, num_tokens=k, method="decode_codes"))
  for k in (1, 4):
    got = step(variables["params"], variables["codebook"], batch, np.int32(k), perceptual.params)
    x_hat = np.clip(np.asarray(decode(np.int32(k))), -1, 1)
    mse = np.mean(((x_in + 1) / 2 - (x_hat + 1) / 2) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got["psnr"], 10 * np.log10(1 / mse), rtol=0, atol=1e-3)
    np.testing.assert_allclose(got["lpips"], lpips.lpips_distance(
        perceptual.params["lpips_alex"], jnp.asarray(x_in), jnp.asarray(x_hat)),
        rtol=1e-4, atol=1e-6)


def smooth_images(n, size, seed):
  """Random linear colour gradients in [-1, 1]: [n, size, size, 3] float32."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  c = rng.uniform(-1, 1, size=(n, 1, 1, 3, 3))
  return np.clip(c[..., 0] * xx[..., None] + c[..., 1] * yy[..., None] + 0.5 * c[..., 2],
                 -1, 1).astype(np.float32)


def train_tiny(size, tokens, steps, batches, seed=0):
  """A tiny SEMANTICIST trained `steps` steps on batches(step) -> (model, variables)."""
  config = config_lib.base_config()
  config.model = m = config_lib.semanticist_model(size)
  m.patch_size, m.decoder.patch_size = 4, 2
  m.width = m.decoder.width = 32
  m.depth = m.decoder.depth = 2
  m.num_heads = m.decoder.num_heads = 2
  m.num_tokens, m.code_dim = tokens, 8
  m.decoder.num_timesteps, m.decoder.sample_steps = 100, 10
  config.train.learning_rate, config.train.lr_decay_rate = 1e-3, 1.0
  config.train.steps_per_epoch = 100
  model, tx = create_model(m), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh()
  state = parallel.replicate(state_lib.create_train_state(model, tx, size, seed), mesh)
  step = train.jit_train_step(mesh, reconstruction_loss="none")
  for i in range(steps):
    state, _ = step(state, {"image": jnp.asarray(batches(i))})
  return model, {"params": state.params, "codebook": state.codebook}


def psnr_by_k(model, variables, x, ks):
  """{k: per-image PSNR [N]} of decode_codes from the first k tokens (NumPy PSNR)."""
  codes = model.apply(variables, x, method="encode_codes")
  decode = jax.jit(lambda k: model.apply(variables, codes, num_tokens=k, method="decode_codes"))
  to_u8 = lambda a: np.round((np.clip(np.asarray(a), -1, 1) + 1) * 127.5).astype(np.uint8)
  return {k: np_psnr(to_u8(x), to_u8(decode(k))) for k in ks}


def assert_rises_within_noise(psnr: dict):
  """Every step k -> k' no worse than 2 paired standard errors; first -> last clearly up."""
  ks = sorted(psnr)
  for a, b in zip(ks, ks[1:]):
    d = psnr[b] - psnr[a]
    assert d.mean() > -2 * d.std() / np.sqrt(len(d)), (a, b, d.mean())
  d = psnr[ks[-1]] - psnr[ks[0]]
  assert d.mean() > 4 * d.std() / np.sqrt(len(d)), d.mean()


def test_psnr_rises_with_k_after_training_on_gradients():
  model, variables = train_tiny(8, 4, 600, lambda i: smooth_images(32, 8, 1000 + i))
  assert_rises_within_noise(psnr_by_k(model, variables, smooth_images(64, 8, 0), range(5)))


@pytest.mark.slow
def test_psnr_rises_with_k_after_training_on_photo_crops():
  import skimage.data  # pylint: disable=import-outside-toplevel
  photos = [skimage.data.astronaut(), skimage.data.rocket(), skimage.data.coffee()]
  rng = np.random.default_rng(0)

  def crops(i, n=32, s=16):
    out = []
    for _ in range(n):
      p = photos[rng.integers(len(photos))]
      r, c = rng.integers(p.shape[0] - s), rng.integers(p.shape[1] - s)
      out.append(p[r:r + s, c:c + s])
    return np.stack(out)

  model, variables = train_tiny(16, 8, 3000, crops)
  cat = skimage.data.chelsea()
  x = np.stack([cat[r:r + 16, c:c + 16] for r in range(0, 256, 32) for c in range(0, 256, 32)])
  assert_rises_within_noise(psnr_by_k(model, variables, x.astype(np.float32) / 127.5 - 1,
                                      range(9)))


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
  out = {}
  for n in (1, 8):
    proc = subprocess.run([sys.executable, WORKER, str(tmp_path / f"{n}.npz"), str(n)],
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out[n] = np.load(tmp_path / f"{n}.npz")
  assert set(out[1].files) == set(out[8].files)
  np.testing.assert_array_equal(out[1]["indices/tokens"], out[8]["indices/tokens"])
  for name in out[1].files:
    np.testing.assert_allclose(out[1][name], out[8][name], atol=1e-5, rtol=0, err_msg=name)
