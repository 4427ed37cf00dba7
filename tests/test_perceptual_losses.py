"""Perceptual and adversarial training losses (config.loss): the GAN losses and
VQGAN's adaptive weight against hand and NumPy / jax.grad references, the train
step before and after the start step against the step without them, the
discriminator's state through a checkpoint, LPIPS's gradient, the config checks.

The train steps here are compiled with XLA:CPU's fast-compile options (both
sides of every comparison alike; devices_worker.FAST_COMPILE_FLAGS).
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from vqjax import checkpointing, config_lib, data, losses, parallel, train
from vqjax import state as state_lib
from vqjax.models import create_model, vqvae
from vqjax.perceptual import lpips
from vqjax.quantizers import COLLECTION

FAST = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
SIZE, BATCH, START = 16, 8, 2


# -- the losses, by hand -------------------------------------------------------------


REAL = np.array([2.0, 0.5, -1.0, 0.0], np.float32).reshape(1, 2, 2, 1)
FAKE = np.array([-2.0, 0.0, 1.5, -0.5], np.float32).reshape(1, 2, 2, 1)


def test_hinge_losses_match_hand_computed_values():
  # relu(1 - real) = 0, 0.5, 2, 1 (mean 0.875); relu(1 + fake) = 0, 1, 2.5, 0.5 (mean 1).
  np.testing.assert_allclose(losses.discriminator_loss("hinge", REAL, FAKE),
                             0.5 * (0.875 + 1.0), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("hinge", FAKE), 0.25, rtol=1e-6)  # -mean


def test_non_saturating_losses_match_hand_computed_values():
  softplus = lambda v: math.log1p(math.exp(v))
  d = 0.5 * (np.mean([softplus(-r) for r in REAL.ravel()])
             + np.mean([softplus(f) for f in FAKE.ravel()]))
  g = np.mean([-math.log(1 / (1 + math.exp(-f))) for f in FAKE.ravel()])  # -log sigmoid
  np.testing.assert_allclose(losses.discriminator_loss("non_saturating", REAL, FAKE), d,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss("non_saturating", FAKE), g, rtol=1e-6)
  with pytest.raises(ValueError, match="hinge"):
    losses.generator_loss("wasserstein", FAKE)


def test_adaptive_weight_is_the_ratio_of_the_last_layers_gradient_norms():
  # A toy decoder z -> h = relu(z W1) -> x_hat = h W2 (W2: the last layer), a
  # linear critic logits = x_hat v. NumPy gradients at W2, by hand:
  # L_rec = mean((x_hat - x)^2): h^T 2 (x_hat - x) / x.size;
  # L_G = -mean(logits): -h^T v^T / n.
  rng = np.random.default_rng(0)
  z, w1, w2 = rng.normal(size=(5, 3)), rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
  x, v = rng.normal(size=(5, 2)), rng.normal(size=(2,))
  h = np.maximum(z @ w1, 0)
  x_hat = h @ w2
  rec_grad = h.T @ (2 * (x_hat - x) / x.size)
  gan_grad = -np.outer(h.sum(0), v) / len(z)
  want = np.linalg.norm(rec_grad) / (np.linalg.norm(gan_grad) + 1e-4)
  # ... and jax.grad of the same losses at W2.
  rec_fn = lambda w: jnp.mean((jnp.maximum(z @ w1, 0) @ w - x) ** 2)
  gan_fn = lambda w: -jnp.mean(jnp.maximum(z @ w1, 0) @ w @ v)
  for a, b in ((rec_grad, rec_fn), (gan_grad, gan_fn)):
    np.testing.assert_allclose(jax.grad(b)(jnp.asarray(w2, jnp.float32)), a, rtol=1e-5,
                               atol=1e-6)
  got = losses.adaptive_weight(jax.grad(rec_fn)(w2), jax.grad(gan_fn)(w2))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Clipped to [0, 1e4]: a vanishing adversarial gradient gives 1e4, not 1e4 * ||rec||.
  assert float(losses.adaptive_weight(jnp.full((3,), 10.0), jnp.zeros(3))) == 1e4
  # Detached: no gradient flows through the weight.
  assert float(jax.grad(lambda g: losses.adaptive_weight(g, jnp.ones(2)))(jnp.ones(2)).sum()) == 0


# -- the train step with and without the GAN term ------------------------------------
#
# Each property twice: on a scripted toy autoencoder (fast, the default suite)
# and on the tiny single-level VQ-VAE (slow): 3 steps on the same batches with
# the GAN term from step START on, and without it.


def gan_config(**loss):
  config = tiny_config("single", image_size=SIZE, batch_size=BATCH)
  config.model.num_res_blocks = 1
  config.loss.update({**dict(gan_weight=0.5, gan_start_step=START, disc_channels=8,
                             disc_layers=2), **loss})
  config_lib.validate(config)
  return config


def batches(n):
  it = iter(data.create_train_loader(gan_config().data, seed=0))
  return [next(it) for _ in range(n)]


def jitted(objective):
  return jax.jit(functools.partial(train.train_step, objective=objective),
                 compiler_options=FAST)


def host(tree):
  return jax.device_get(tree)


def toy_states(gan: bool):
  """A scripted autoencoder on 8x8 images: x_hat = tanh(x A) K with K at
  vqvae.LAST_LAYER, one quantizer-like loss term 0.1 mean(A^2); with `gan` a
  PatchDiscriminator(4 channels, 1 layer) beside it (Adam (0.5, 0.9))."""
  from vqjax.models.discriminator import PatchDiscriminator  # pylint: disable=import-outside-toplevel

  def apply_fn(variables, x, **kwargs):
    del kwargs
    p = variables["params"]
    x_hat = jnp.tanh(x @ p["mix"]) @ vqvae.last_layer_kernel(p)
    return (x_hat, {"losses": {"codes/commitment": 0.1 * jnp.mean(p["mix"] ** 2)},
                    "levels": {}}), {}

  rng = np.random.default_rng(0)
  params = {"mix": jnp.asarray(rng.normal(size=(3, 6)), jnp.float32),
            "decoder": {"UpConv_1": {"kernel": jnp.asarray(0.3 * rng.normal(size=(6, 3)),
                                                           jnp.float32)}}}
  tx = optax.adam(1e-2)
  fields = dict(step=jnp.zeros((), jnp.int32), apply_fn=apply_fn, params=params, tx=tx,
                opt_state=tx.init(params), codebook={}, rng=jax.random.PRNGKey(0))
  if not gan:
    return state_lib.TrainState(**fields)
  disc, disc_tx = PatchDiscriminator(channels=4, num_layers=1), optax.adam(1e-2, 0.5, 0.9)
  disc_params = disc.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))["params"]
  return state_lib.GANTrainState(**fields, disc_params=disc_params,
                                 disc_opt_state=disc_tx.init(disc_params),
                                 disc_apply_fn=disc.apply, disc_tx=disc_tx)


TOY_IMAGES = np.random.default_rng(1).uniform(-1, 1, (3, 4, 8, 8, 3)).astype(np.float32)
TOY_GAN = train.TrainingLosses(gan_weight=0.5, gan_start_step=START)


def three_steps(state, step, images):
  states, metrics = [host(state)], []
  for x in images:
    state, m = step(state, {"image": x})
    states.append(host(state))
    metrics.append(host(m))
  return states, metrics


@pytest.fixture(scope="module")
def toy():
  step = jitted(TOY_GAN)
  return dict(gan=three_steps(toy_states(True), step, TOY_IMAGES),
              off=three_steps(toy_states(False), jitted(None), TOY_IMAGES),
              step=step, images=TOY_IMAGES, forward=toy_forward)


def toy_forward(state, x, step):
  del step
  x_hat, aux = state.apply_fn({"params": state.params}, x)[0]
  return x_hat, sum(aux["losses"].values())


@pytest.fixture(scope="module")
def vqvae_runs():
  """The tiny VQ-VAE (16x16, one residual block), GAN on (start step 2) and off."""
  config = gan_config()
  off = config.copy_and_resolve_references()
  off.loss.gan_weight = 0.0
  model = create_model(config.model)
  step = jitted(train.training_losses(config))
  images = np.stack([b["image"] for b in batches(3)])
  out = dict(gan=three_steps(state_lib.create_state_for(config, model, seed=0), step, images),
             off=three_steps(state_lib.create_state_for(off, model, seed=0),
                             jitted(None), images), step=step, images=images)

  def forward(state, x, step):
    key = jax.random.fold_in(state.rng, step)   # the step's PRNG streams
    rngs = {COLLECTION: key, "sample": jax.random.fold_in(key, 1)}
    (x_hat, aux), _ = model.apply({"params": state.params, COLLECTION: state.codebook}, x,
                                  train=True, mutable=[COLLECTION], rngs=rngs, step=step)
    return x_hat, sum(aux["losses"].values())

  out["forward"] = forward
  out["config"], out["model"] = config, model
  return out


CASES = ["toy", pytest.param("vqvae_runs", marks=pytest.mark.slow)]


def autoencoder(state):
  return dict(params=state.params, opt_state=state.opt_state, codebook=state.codebook,
              step=state.step)


def fields(state):
  """Every array field of a (GAN)TrainState, without its static functions."""
  out = dict(autoencoder(state), rng=state.rng)
  if isinstance(state, state_lib.GANTrainState):
    out.update(disc_params=state.disc_params, disc_opt_state=state.disc_opt_state)
  return out


def test_gan_state_holds_the_discriminator_and_the_plain_state_does_not():
  config = gan_config()
  model = create_model(config.model)
  gan = jax.eval_shape(lambda: state_lib.create_state_for(config, model))
  config.loss.gan_weight = 0.0
  off = jax.eval_shape(lambda: state_lib.create_state_for(config, model))
  assert type(off) is state_lib.TrainState and type(gan) is state_lib.GANTrainState
  assert {"conv_0", "conv_1", "norm_1", "conv_2", "norm_2", "logits"} == set(gan.disc_params)
  # Adam with VQGAN's betas (0.5, 0.9) on the discriminator.
  assert isinstance(gan.disc_opt_state[0], optax.ScaleByAdamState)
  assert gan.disc_tx is not gan.tx


@pytest.mark.parametrize("case", CASES)
def test_before_the_start_step_the_update_is_the_one_without_the_gan_bit_for_bit(
    request, case):
  # Bit for bit on the VQ-VAE. The two steps are different XLA programs, so
  # equal bits are what XLA:CPU gives, not a guarantee: on the toy its small
  # matmuls' gradients differ in the last bits (Adam's nu by 1.5e-6 relative),
  # there compared to 1e-5.
  run = request.getfixturevalue(case)
  (gan, gan_m), (off, off_m) = run["gan"], run["off"]
  same = (chex.assert_trees_all_equal if case == "vqvae_runs" else
          functools.partial(chex.assert_trees_all_close, rtol=1e-5, atol=0))
  for t in range(START):                       # steps 0 and 1 (state after them: t + 1)
    same(autoencoder(gan[t + 1]), autoencoder(off[t + 1]))
    assert (gan_m[t]["loss"] == off_m[t]["loss"] or case == "toy") and \
        gan_m[t]["gan_factor"] == 0
    # The discriminator is untouched: params and Adam state (count included).
    chex.assert_trees_all_equal(gan[t + 1].disc_params, gan[0].disc_params)
    chex.assert_trees_all_equal(gan[t + 1].disc_opt_state, gan[0].disc_opt_state)
    assert np.isfinite(gan_m[t]["d_loss"]) and np.isfinite(gan_m[t]["g_loss"])


@pytest.mark.parametrize("case", CASES)
def test_from_the_start_step_the_discriminator_moves_and_the_gradient_has_the_gan_term(
    request, case):
  run = request.getfixturevalue(case)
  (gan, gan_m), (off, _) = run["gan"], run["off"]
  t = START                                    # the first step with the term
  before = jax.tree.map(jnp.asarray, gan[t])   # = off[t], bit for bit (test above)
  # Every kernel moves (at init every |logit| < 1, so the hinge's gradient at
  # the last bias is exactly 0: +1/2 from the fakes, -1/2 from the reals).
  moved = {k: float(np.abs(v["kernel"] - before.disc_params[k]["kernel"]).max())
           for k, v in gan[t + 1].disc_params.items() if "kernel" in v}
  assert min(moved.values()) > 0, moved
  assert int(gan[t + 1].disc_opt_state[0].count) == 1
  factor = float(gan_m[t]["gan_factor"])
  assert factor > 0 and factor == pytest.approx(0.5 * float(gan_m[t]["adaptive_weight"]))

  # Reference gradients at `before` on the step's batch, by jax.grad through
  # the whole model: L_rec = MSE (+ the quantizer terms), L_G = -mean D(x_hat).
  x = data.to_model_range(run["images"][t])

  def terms(params):
    x_hat, quant = run["forward"](before.replace(params=params), x, before.step)
    logits = before.disc_apply_fn({"params": before.disc_params}, x_hat)
    return jnp.mean((x - x_hat) ** 2), quant, -jnp.mean(logits)

  g_mse, g_quant, g_gan = jax.jit(lambda p: [jax.grad(lambda q, i=i: terms(q)[i])(p)
                                             for i in range(3)])(before.params)
  # VQGAN's weight: ||dL_rec/dW_last|| / (||dL_G/dW_last|| + 1e-4) (the quantizer
  # terms do not reach the decoder's last layer).
  last = vqvae.last_layer_kernel
  assert float(np.abs(last(g_quant)).max()) == 0
  want = np.linalg.norm(last(g_mse)) / (np.linalg.norm(last(g_gan)) + 1e-4)
  np.testing.assert_allclose(gan_m[t]["adaptive_weight"], want, rtol=1e-4)
  # The gradient Adam received, read back from its first moment (mu = b1 mu_prev +
  # (1 - b1) g, b1 = 0.9): with the GAN term minus without = factor * dL_G/dparams.
  mu = lambda s: s.opt_state[0].mu
  got = jax.tree.map(lambda a, b: (a - b) / 0.1, mu(gan[t + 1]), mu(off[t + 1]))
  want_diff = jax.tree.map(lambda g: factor * g, g_gan)
  chex.assert_trees_all_close(got, want_diff, atol=1e-3 * optax.tree.norm(want_diff),
                              rtol=1e-3)
  assert optax.tree.norm(want_diff) > 0


@pytest.mark.parametrize("case", CASES)
def test_discriminator_state_survives_a_checkpoint_two_steps_plus_one_equal_three(
    request, case, tmp_path):
  run = request.getfixturevalue(case)
  gan, step, images = run["gan"][0], run["step"], run["images"]
  config = gan_config()
  it = iter(data.create_train_loader(config.data, seed=0))
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 2, gan[2], it, force=True)
  manager.wait_until_finished()
  # A template with other values (a fresh state; the toy's: zeros).
  template = (state_lib.create_state_for(config, run["model"], seed=5) if "model" in run
              else jax.tree.map(jnp.zeros_like, gan[0]))
  restored, _ = checkpointing.restore_latest(
      checkpointing.create_manager(str(tmp_path), config), template,
      iter(data.create_train_loader(config.data, seed=0)))
  chex.assert_trees_all_equal(fields(host(restored)), fields(gan[2]), strict=True)
  resumed, _ = step(restored, {"image": images[2]})
  chex.assert_trees_all_equal(fields(host(resumed)), fields(gan[3]))  # 3 uninterrupted


@pytest.mark.slow
def test_a_resumed_gan_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
  # Through the train loop (train_and_evaluate): 2 steps, stop, resume to 3 ==
  # 3 steps; LPIPS and the GAN term (from step 1) on.
  config = gan_config(lpips_weight=0.1, gan_start_step=1)
  config.train.checkpoint_every = 1
  config.train.num_steps = 3
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  config.train.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.train.num_steps = 3
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  model = create_model(config.model)
  abstract = jax.eval_shape(lambda: state_lib.create_state_for(config, model))
  states = [checkpointing.restore_state(checkpointing.create_manager(
      str(tmp_path / name), config, read_only=True), abstract)[0]
            for name in ("straight", "resumed")]
  assert int(states[0].step) == int(states[1].step) == 3
  assert type(states[0]) is state_lib.GANTrainState
  chex.assert_trees_all_equal(fields(host(states[0])), fields(host(states[1])))


def test_the_state_tree_is_unchanged_when_the_gan_is_off(tmp_path):
  # Losses off, or LPIPS alone: the TrainState of before (no discriminator fields),
  # so checkpoints written without the discriminator restore as they did; with
  # the GAN on, such a checkpoint is an error that names the missing field.
  config = gan_config()
  model = create_model(config.model)
  plain = jax.eval_shape(lambda: state_lib.create_train_state(
      model, state_lib.create_optimizer(config), SIZE, 0))
  paths = lambda s: [jax.tree_util.keystr(p) for p, _ in
                     jax.tree_util.tree_leaves_with_path(s)]
  for loss in (dict(gan_weight=0.0), dict(gan_weight=0.0, lpips_weight=1.0)):
    c = config.copy_and_resolve_references()
    c.loss.update(loss)
    state = jax.eval_shape(lambda c=c: state_lib.create_state_for(c, model))
    assert type(state) is state_lib.TrainState and paths(state) == paths(plain)
  rng = np.random.default_rng(0)   # a state of random values (no init compiled)
  old = jax.tree.map(lambda x: np.asarray(rng.normal(size=x.shape)).astype(x.dtype), plain)
  manager = checkpointing.create_manager(str(tmp_path), config)
  checkpointing.save(manager, 1, old, iter(data.create_train_loader(config.data, seed=0)),
                     force=True)
  manager.wait_until_finished()
  c = config.copy_and_resolve_references()
  c.loss.update(gan_weight=0.0, lpips_weight=1.0)
  restored, _ = checkpointing.restore_state(checkpointing.create_manager(
      str(tmp_path), c, read_only=True), jax.eval_shape(lambda: state_lib.create_state_for(
          c, model)))
  chex.assert_trees_all_equal(fields(host(restored)), fields(host(old)), strict=True)
  with pytest.raises(ValueError, match="disc_opt_state|disc_params"):
    checkpointing.restore_state(checkpointing.create_manager(
        str(tmp_path), config, read_only=True),
        jax.eval_shape(lambda: state_lib.create_state_for(config, model)))


# -- LPIPS as a loss ------------------------------------------------------------------


def test_lpips_loss_is_differentiable_with_a_finite_gradient():
  import skimage.data  # pylint: disable=import-outside-toplevel
  params = lpips.load_params("alex")
  photo = skimage.data.astronaut()[100:132, 180:212].astype(np.float32) / 127.5 - 1
  rng = np.random.default_rng(0)
  x = np.stack([photo, photo])
  # A noisy reconstruction, and a flat black one (all-zero feature vectors:
  # the unit normalisation's sqrt at 0 must not give NaN).
  y = np.stack([np.clip(photo + 0.2 * rng.normal(size=photo.shape), -1, 1),
                np.full_like(photo, -1.0)]).astype(np.float32)
  loss = lambda y: jnp.mean(lpips.lpips_distance(params, x, y, "alex"))
  value, grad = jax.jit(jax.value_and_grad(loss), compiler_options=FAST)(y)
  grad = np.asarray(grad)
  assert np.isfinite(grad).all() and np.abs(grad[0]).max() > 0 and np.abs(grad[1]).max() > 0
  # The gradient is the derivative: a small step along -grad lowers the loss
  # by about eps * |grad|^2.
  eps = 1e-3 / np.linalg.norm(grad)
  lower = float(jax.jit(loss, compiler_options=FAST)(y - eps * grad))
  np.testing.assert_allclose(float(value) - lower, eps * np.sum(grad ** 2), rtol=0.1)


# -- the config checks ----------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("gan_loss", "wgan", r"loss\.gan_loss='wgan'"),
    ("disc_norm", "batch", r"loss\.disc_norm='batch'.*BatchNorm"),
    ("disc_layers", 4, r"loss\.disc_layers=4 at data\.image_size=16"),
    ("gan_weight", -1.0, r"loss\.lpips_weight=0\.1 and loss\.gan_weight=-1\.0"),
    ("gan_start_step", -3, r"loss\.gan_start_step=-3"),
    ("disc_b1", 1.0, r"loss\.disc_b1=1\.0"),
    ("lpips_network", "squeeze", r"loss\.lpips_network='squeeze'"),
])
def test_bad_loss_settings_fail_with_the_field_name(field, value, message):
  config = gan_config()
  config.loss.lpips_weight = 0.1
  config.loss[field] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_the_losses_are_for_the_single_level_and_hierarchical_models_only():
  from vqjax.experiments import hqvae_configs  # pylint: disable=import-outside-toplevel
  config = hqvae_configs.apply_hqvae_options(
      hqvae_configs.hqvae_config("injected_topdown", num_codes=16, num_pools=2, num_steps=2),
      "smoke")
  config.loss.lpips_weight = 0.1
  with pytest.raises(ValueError, match="model.kind='injected_topdown'"):
    config_lib.validate(config)
  assert vqvae.LAST_LAYER[0] == "decoder"
  for kind in ("single", "hierarchical"):
    params = jax.eval_shape(lambda kind=kind: create_model(tiny_config(kind).model).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
    assert vqvae.last_layer_kernel(params).shape == (4, 4, 8, 3), kind  # C/2 -> RGB


# -- N devices == 1 device (tests/devices_worker.py) ----------------------------------


def gan_devices_run(devices, batch, **loss) -> dict:
  """The tiny single-level model (one residual block) on smooth 16x16 images, 4
  steps with the GAN term (and `loss`) on from step 1: steps 1-3 train the
  discriminator and add the adversarial term."""
  overrides = {"model.num_res_blocks": 1, "loss.gan_weight": 0.5, "loss.gan_start_step": 1,
               "loss.disc_channels": 8, "loss.disc_layers": 2}
  overrides.update({f"loss.{k}": v for k, v in loss.items()})
  return dict(scenario="train", devices=devices, config="tiny_single", steps=4, batch=batch,
              image_size=16, images="smooth", evaluate=False, overrides=overrides)


def assert_same_gan_training(one: dict, many: dict, atol: float):
  from devices_worker import pick  # pylint: disable=import-outside-toplevel
  assert set(one) == set(many) and any(k.startswith("disc_params/") for k in one)
  assert (one["metrics/gan_factor"][1:] > 0).all() and one["metrics/gan_factor"][0] == 0
  compared = ("params/", "codebook/", "opt_state/", "disc_params/", "disc_opt_state/",
              "metrics/")
  chex.assert_trees_all_close(pick(one, *compared), pick(many, *compared), atol=atol,
                              rtol=1e-5)


# ~12 s of CPU, 35-45 s of wall time on the loaded 2-core machine (a fresh
# process compiles both meshes' steps): over the default suite's budget, so slow.
@pytest.mark.slow
def test_gan_training_on_two_devices_matches_one_device(tmp_path):
  from devices_worker import run_worker  # pylint: disable=import-outside-toplevel
  runs = run_worker(tmp_path, {"gan": gan_devices_run([1, 2], 8)}, host_devices=2,
                    fast_compile=True)["gan"]
  assert_same_gan_training(runs[1], runs[2], atol=1e-6)


@pytest.mark.slow
def test_lpips_and_gan_training_on_eight_devices_match_one_device(tmp_path):
  from devices_worker import run_worker  # pylint: disable=import-outside-toplevel
  runs = run_worker(tmp_path, {"gan": gan_devices_run(
      [1, 8], 16, lpips_weight=0.1, gan_loss="non_saturating")}, host_devices=8)["gan"]
  assert (runs[1]["metrics/lpips"] > 0).all()
  assert_same_gan_training(runs[1], runs[8], atol=1e-6)
