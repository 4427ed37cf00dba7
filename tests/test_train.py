"""Training loop, checkpoints, resume and evaluation end to end (tiny models)."""

import functools
import glob
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vqjax import checkpointing, data, evaluate, parallel, train
from vqjax import state as state_lib
from vqjax.models import create_model

from conftest import main_flags, tiny_config, write_image_folder

METRICS_SCHEMA = {"checkpoint_step": int, "num_images": int, "dataset": str,
                  "split": str}


def test_loss_falls_over_30_steps_on_tiny_data():
  config = tiny_config("hierarchical")
  config.train.learning_rate = 2e-3  # a 16-channel toy model: a larger step
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh()
  state = parallel.replicate(state_lib.create_train_state(model, tx, 32, 0), mesh)
  step = train.jit_train_step(mesh)
  batch = next(iter(data.create_train_loader(config.data, seed=0)))
  batch = parallel.global_batch(batch, mesh)
  losses = []
  for _ in range(30):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_save_restore_is_bit_identical_and_data_position_is_kept(tmp_path):
  config = tiny_config("single")
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh()
  state = parallel.replicate(state_lib.create_train_state(model, tx, 32, 0), mesh)
  step = train.jit_train_step(mesh)
  it = iter(data.create_train_loader(config.data, seed=0))
  for _ in range(3):
    state, _ = step(state, parallel.global_batch(next(it), mesh))
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 3, state, it)
  manager.wait_until_finished()
  expected_next = next(it)["image"]

  fresh_it = iter(data.create_train_loader(config.data, seed=0))
  template = state_lib.create_train_state(model, tx, 32, 123)
  restored, fresh_it = checkpointing.restore_latest(
      checkpointing.create_manager(str(tmp_path), config), template, fresh_it,
      sharding=parallel.replicated(mesh))
  # Same structure, dtypes and bits (chex checks all three).
  chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(restored), strict=True)
  np.testing.assert_array_equal(next(fresh_it)["image"], expected_next)


def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
  config = tiny_config("single")
  config.train.num_steps = 6
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_steps = 3           # "killed" after step 3 ...
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_steps = 6           # ... and started again with the same command
  train.train_and_evaluate(config, str(tmp_path / "resumed"))

  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(model, tx, 32, 0))
  states = []
  for name in ("straight", "resumed"):
    manager = checkpointing.create_manager(str(tmp_path / name), config, read_only=True)
    states.append(checkpointing.restore_state(manager, abstract)[0])
  assert int(states[0].step) == int(states[1].step) == 6
  chex.assert_trees_all_close(jax.device_get(states[0]), jax.device_get(states[1]),
                              atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["single", pytest.param("hierarchical", marks=pytest.mark.slow)])
def test_eval_on_a_folder_writes_metrics_json(tmp_path, kind):
  write_image_folder(tmp_path / "train", 12)
  write_image_folder(tmp_path / "val", 5, seed=1)
  config = tiny_config(kind)
  config.data.name = "folder"
  config.data.train_dir = str(tmp_path / "train")
  config.data.val_dir = str(tmp_path / "val")
  config.data.batch_size = 4
  config.eval.batch_size = 4
  config.train.num_steps = 4
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  os.remove(os.path.join(workdir, "eval", "metrics.json"))

  result = evaluate.evaluate_checkpoint(config, workdir)
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(result))
  for key, typ in METRICS_SCHEMA.items():
    assert isinstance(on_disk[key], typ), key
  assert on_disk["checkpoint_step"] == 4 and on_disk["num_images"] == 5
  for key in ("psnr", "mse"):
    assert set(on_disk[key]) == {"mean", "std"}
    assert all(isinstance(v, float) for v in on_disk[key].values())
  want_levels = {"codes"} if kind == "single" else {"top", "bottom"}
  assert set(on_disk["levels"]) == want_levels
  for level in on_disk["levels"].values():
    assert set(level) >= {"num_codes", "perplexity", "normalized_perplexity",
                          "unused_codes", "gini"}
    assert level["num_codes"] == config.model.num_codes
    assert 1.0 <= level["perplexity"] <= level["num_codes"]
  # PSNR and MSE of each validation image, computed here from the PNGs on
  # disk and the restored model's reconstructions: the centre 32x32 crop of
  # each 40x40 image, pixels on [0, 1], the reconstruction clipped to [0, 1].
  crops = np.stack([np.asarray(Image.open(p).convert("RGB"))[4:36, 4:36]
                    for p in sorted(glob.glob(str(tmp_path / "val" / "*" / "*.png")))])
  model = create_model(config.model)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(
      model, state_lib.create_optimizer(config), 32, 0))
  state, _ = checkpointing.restore_state(
      checkpointing.create_manager(workdir, config, read_only=True), abstract)
  x_hat = model.apply({"params": state.params, "codebook": state.codebook},
                      jnp.asarray(crops / 127.5 - 1, jnp.float32), train=False)[0]
  x_hat = np.clip((np.asarray(x_hat, np.float64) + 1) / 2, 0, 1)
  mse = ((crops / 255.0 - x_hat) ** 2).mean((1, 2, 3))
  psnr = 10 * np.log10(1 / mse)
  assert len(crops) == 5 and psnr.std() > 0.1        # five different images
  for key, want in (("psnr", psnr), ("mse", mse)):
    np.testing.assert_allclose([on_disk[key]["mean"], on_disk[key]["std"]],
                               [want.mean(), want.std()], rtol=1e-4, err_msg=key)
  for name in ("reconstructions.png", "lorenz.png"):
    assert os.path.getsize(os.path.join(workdir, "eval", name)) > 1000


def test_eval_mode_leaves_the_runs_config_json_and_writes_its_own(tmp_path):
  """--mode=eval with other flags (a later step, another batch size) must not
  rewrite WORKDIR/config.json: vqjax.load and resumption read the trained model
  from it. The evaluation's own config goes to WORKDIR/eval/config.json."""
  from vqjax import main  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  config.train.num_steps = 3
  workdir = str(tmp_path / "run")
  main.main(["vqjax.main"], main_flags(config, workdir, "train"))
  with open(os.path.join(workdir, "config.json")) as f:
    trained = f.read()
  assert json.loads(trained)["train"]["num_steps"] == 3
  evaluation = tiny_config()
  evaluation.train.num_steps = 3
  evaluation.eval.batch_size = 2
  evaluation.data.batch_size = 2          # a flag of no effect on the model
  main.main(["vqjax.main"], main_flags(evaluation, workdir, "eval"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == trained
  with open(os.path.join(workdir, "eval", "config.json")) as f:
    written = json.load(f)
  assert written["eval"]["batch_size"] == 2 and written["data"]["batch_size"] == 2


def test_nan_loss_stops_with_a_clear_error_and_saves_nothing(tmp_path, monkeypatch):
  config = tiny_config("single")
  config.train.checkpoint_every = 1
  real_loader = data.create_train_loader

  def poisoned_loader(*args, **kwargs):
    for i, batch in enumerate(real_loader(*args, **kwargs)):
      if i >= 3:
        batch = {"image": np.full(batch["image"].shape, np.nan, np.float32)}
      yield batch

  monkeypatch.setattr(data, "create_train_loader", poisoned_loader)
  monkeypatch.setattr(checkpointing, "save",
                      lambda manager, step, state, it, force=False:
                      manager.save(step, args=checkpointing.ocp.args.Composite(
                          state=checkpointing.ocp.args.StandardSave(state)), force=force))
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint is step 3"):
    train.train_and_evaluate(config, str(tmp_path))


def test_batch_not_divisible_by_devices_is_a_clear_error():
  class ThreeDeviceMesh:  # the check only reads the device count
    devices = np.zeros(3)

  with pytest.raises(ValueError, match="must be divisible by the number of devices"):
    parallel.check_batch_size(10, ThreeDeviceMesh())
  parallel.check_batch_size(12, ThreeDeviceMesh())


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
  import signal
  import subprocess
  import sys

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config_file = tmp_path / "tiny.py"
  config_file.write_text(
      "import sys\nsys.path.insert(0, %r)\nfrom conftest import tiny_config\n"
      "def get_config():\n  c = tiny_config('single')\n  c.train.num_steps = 100000\n"
      "  c.train.checkpoint_every = 100000\n  return c\n" % os.path.join(repo, "tests"))
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "vqjax.main", f"--config={config_file}", f"--workdir={workdir}"]
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  seen = []
  for line in proc.stdout:           # wait until it has trained and logged a few steps
    seen.append(line)
    if " loss=" in line:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  out = "".join(seen) + out
  assert proc.returncode == 0, out[-3000:]
  assert "saving a checkpoint and stopping" in out
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert len(steps) == 1 and steps[0] > 0, steps
  # The same command with a finite step count resumes from there.
  out = subprocess.run(cmd + [f"--config.train.num_steps={steps[0] + 2}"], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"Resumed from checkpoint at step {steps[0]}" in out.stderr
  with open(workdir / "eval" / "metrics.json") as f:
    assert json.load(f)["checkpoint_step"] == steps[0] + 2


def test_bad_config_values_fail_with_the_field_name():
  from vqjax import config_lib
  for field, value, message in [("model.kind", "flat", "model.kind"),
                                ("data.image_size", 60, "multiple of 8"),
                                ("model.quantizer.reset_rule", "mean",
                                 r"model\.quantizer\.reset_rule"),
                                ("model.quantizer.search_chunk_size", 3,
                                 r"model\.quantizer\.search_chunk_size=3 must divide "
                                 r"model\.num_codes")]:
    config = tiny_config("single")
    *path, key = field.split(".")
    node = config
    for part in path:
      node = node[part]
    node[key] = value
    with pytest.raises(ValueError, match=message):
      config_lib.validate(config)


def trained_tiny_state(config, steps=2):
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  mesh = parallel.create_mesh()
  state = parallel.replicate(state_lib.create_train_state(model, tx, 32, 0), mesh)
  step = train.jit_train_step(mesh)
  it = iter(data.create_train_loader(config.data, seed=0))
  for _ in range(steps):
    state, _ = step(state, parallel.global_batch(next(it), mesh))
  return model, state, mesh


def test_eval_histogram_counts_each_image_once_and_psnr_is_per_image(tmp_path):
  config = tiny_config("single")
  config.data.name = "folder"
  config.data.train_dir = str(write_image_folder(tmp_path / "imgs", 5))
  config.data.val_dir = config.data.train_dir
  config.eval.batch_size = 4            # 5 images: the second batch has 3 padding rows
  model, state, mesh = trained_tiny_state(config)
  psnr, mse, counts, _, _ = evaluate.Evaluator(config, model, mesh)(state.params,
                                                                   state.codebook)
  latent_positions = (32 // 4) ** 2
  assert int(counts["codes"].sum()) == 5 * latent_positions
  images = np.concatenate([b["image"][b["mask"]] for b in data.create_eval_batches(
      config.data, batch_size=4)])
  assert images.shape == (5, 32, 32, 3)
  want_psnr, want_codes = [], np.zeros(config.model.num_codes, np.int64)
  for image in images:                 # one image at a time, PSNR in NumPy
    x = image[None].astype(np.float32) / 127.5 - 1
    x_hat, aux = model.apply({"params": state.params, "codebook": state.codebook}, x,
                             train=False)
    x01, y01 = image / 255.0, np.clip((np.asarray(x_hat[0], np.float64) + 1) / 2, 0, 1)
    want_psnr.append(10 * np.log10(1 / np.mean((x01 - y01) ** 2)))
    want_codes += np.bincount(np.asarray(aux["levels"]["codes"]["indices"]).ravel(),
                              minlength=config.model.num_codes)
  np.testing.assert_allclose(psnr, want_psnr, atol=1e-3)
  np.testing.assert_array_equal(counts["codes"], want_codes)


def test_bfloat16_model_traces_once_keeps_float32_codebooks_and_distances(monkeypatch):
  import chex
  from vqjax.quantizers import code_search
  seen = []
  real = code_search.squared_distances
  monkeypatch.setattr(code_search, "squared_distances",
                      lambda z, cb: seen.append((z.dtype, cb.dtype)) or real(z, cb))
  config = tiny_config("hierarchical")
  config.model.dtype = "bfloat16"
  model, tx = create_model(config.model), state_lib.create_optimizer(config)
  state = state_lib.create_train_state(model, tx, 32, 0)
  step = jax.jit(chex.assert_max_traces(train.train_step, n=1))
  it = iter(data.create_train_loader(config.data, seed=0))
  for _ in range(3):
    batch = next(it)
    state, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  assert seen and all(d == (jnp.float32, jnp.float32) for d in seen)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.codebook)
             if jnp.issubdtype(x.dtype, jnp.floating))
  # The same params and codebooks in float32 and bfloat16 on the same batch:
  # the loss differs by bfloat16 rounding (8 bits of mantissa), under 5%.
  x = data.to_model_range(batch["image"])
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    x_hat, aux = jax.jit(functools.partial(create_model(config.model).apply, train=False))(
        {"params": state.params, "codebook": state.codebook}, x)
    losses[dtype] = float(jnp.mean((x - x_hat) ** 2) + sum(aux["losses"].values()))
  assert abs(losses["bfloat16"] - losses["float32"]) < 0.05 * losses["float32"], losses


# -- the train step's logged metrics, on a scripted one-parameter model ----------


def scripted_state(tx, x_hat=None):
  """A TrainState of a stand-in model with one parameter w (0 at the start).

  Reconstruction: `x_hat` [B, H, W, 3] as given (the input if None), plus 0 * w;
  one quantizer loss term `linear` = w. So d loss / d w = 1 at every step, and
  an Adam step moves w by the learning rate it applied (for a constant
  gradient, the bias-corrected m / sqrt(v) is 1; float32 rounding aside).
  """

  def apply_fn(variables, x, **kwargs):
    del kwargs
    w = variables["params"]["w"]
    out = (x if x_hat is None else jnp.asarray(x_hat)) + 0.0 * w
    return (out, {"losses": {"linear": w}, "levels": {}}), {}

  return state_lib.TrainState.create(apply_fn=apply_fn, params={"w": jnp.zeros(())},
                                     tx=tx, codebook={}, rng=jax.random.PRNGKey(0))


def test_logged_train_mse_is_evaluations_per_image_mse_on_0_1():
  # Two 1x1 RGB images in [-1, 1]; x_hat leaves the range in two channels.
  x = np.array([[[[-1.0, 0.0, 0.5]]], [[[1.0, 1.0, -0.5]]]], np.float32)
  x_hat = np.array([[[[-1.5, 0.5, 0.5]]], [[[2.0, 0.0, -0.5]]]], np.float32)
  config = tiny_config("single")
  _, metrics = train.train_step(scripted_state(state_lib.create_optimizer(config), x_hat),
                                {"image": x})
  # Evaluation's convention in NumPy: pixels on [0, 1], x_hat clipped to [0, 1],
  # MSE per image, then the mean over images.
  x01, y01 = (x + 1) / 2, np.clip((x_hat + 1) / 2, 0, 1)
  per_image = ((x01 - y01) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(per_image, [0.0625 / 3, 0.25 / 3])   # by hand
  np.testing.assert_allclose(float(metrics["mse"]), per_image.mean(), rtol=1e-6)
  # The objective is unchanged: the MSE on [-1, 1], unclipped (by hand: 2.5 / 6).
  np.testing.assert_allclose(float(metrics["reconstruction"]), 2.5 / 6, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["loss"]), 2.5 / 6, rtol=1e-6)



def test_logged_learning_rate_is_the_step_the_optimizer_took_exponential():
  # Exponential decay by 1/2 per 1-step epoch. The second batch is NaN and
  # skipped (skip_nonfinite): the optimizer's state, its update count
  # included, stays as it was, so the third step applies the rate of update
  # 1 (1/2), not of state.step 2 (1/4).
  config = tiny_config("single")
  config.train.learning_rate, config.train.lr_decay_rate = 1.0, 0.5
  config.train.steps_per_epoch = 1
  state = scripted_state(state_lib.create_optimizer(config))
  step = jax.jit(functools.partial(train.train_step, skip_nonfinite=True,
                                   learning_rate_fn=state_lib.applied_learning_rate(config)))
  good = {"image": np.zeros((2, 1, 1, 3), np.float32)}
  bad = {"image": np.full((2, 1, 1, 3), np.nan, np.float32)}
  logged, moved = [], []
  for batch in (good, bad, good):
    w = float(state.params["w"])
    state, metrics = step(state, batch)
    logged.append(float(metrics["learning_rate"]))
    moved.append(w - float(state.params["w"]))
  assert int(state.step) == 3
  np.testing.assert_allclose(logged, [1.0, 0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(moved, [1.0, 0.0, 0.5], rtol=1e-4)  # Adam's float32 rounding
  # Another schedule's optimizer state: a clear error, not a wrong rate.
  exponential_rate = state_lib.applied_learning_rate(config)
  config.train.lr_schedule = "plateau"
  plateau_opt_state = state_lib.create_optimizer(config).init({"w": jnp.zeros(())})
  with pytest.raises(ValueError, match="ScaleByScheduleState"):
    exponential_rate(plateau_opt_state)


def test_logged_learning_rate_under_plateau_is_the_halved_rate_in_use():
  config = tiny_config("single")
  t = config.train
  t.lr_schedule, t.plateau_factor, t.plateau_patience, t.plateau_rtol = "plateau", 0.5, 1, 1e-4
  t.learning_rate, t.lr_decay_rate, t.steps_per_epoch = 0.1, 0.9, 1
  state = scripted_state(state_lib.create_optimizer(config))
  rule = state_lib.plateau_rule(config)
  for value in (1.0, 1.0):      # the 2nd round does not improve: patience 1 halves
    state = state_lib.advance_plateau(state, np.float32(value), rule=rule)
  step = jax.jit(functools.partial(train.train_step,
                                   learning_rate_fn=state_lib.applied_learning_rate(config)))
  batch = {"image": np.zeros((2, 1, 1, 3), np.float32)}
  for _ in range(2):
    w = float(state.params["w"])
    state, metrics = step(state, batch)
    np.testing.assert_allclose(float(metrics["learning_rate"]), 0.05, rtol=1e-6)
    np.testing.assert_allclose(w - float(state.params["w"]), 0.05, rtol=1e-4)
