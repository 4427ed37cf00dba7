"""The one worker of the "N devices == 1 device" tests.

The device count (XLA_FLAGS=--xla_force_host_platform_device_count) and
jax.distributed are fixed when JAX starts, so a test runs its scenarios in a
fresh process: `run_worker` (called by the tests) starts

  python tests/devices_worker.py SPEC.json OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]

SPEC.json: {name: {"scenario": SCENARIO, "devices": [1, 8], ...its fields}}.
Each run is done once per entry of `devices` on a mesh of that many of the
(global) devices (0: all of them); OUT.npz holds '<name>/<devices>/<key>'
(devices as the mesh's size), written by process 0. Scenarios:

  train     train.jit_train_step on fixed synthetic batches, the config from a
            builder (BUILDERS) and dotted overrides (sweep_spec.apply_overrides),
            validated (config.loss's terms included: the discriminator's
            state is saved as disc_params/, disc_opt_state/). Fields: config,
            overrides, steps, batch (global),
            image_size, images ('smooth': float32 in [-1, 1]; 'uint8': uniform
            noise), validation (a scripted validation loss per step, fed to the
            plateau rule after each step as the train loop does after an
            evaluation; needs train.lr_schedule='plateau'). Saves params/,
            codebook/, opt_state/ (leaves by keystr), metrics/<name> [steps]
            (every logged metric of every step) and, unless evaluate=false,
            indices/<level> (the codes of the last batch in evaluation mode)
            and eval_input_std (the pixel std of the evaluated inputs, as the
            model sees them).
  stochastic_quantizer  StochasticQuantizer's training output, losses and
            gradients, its 'sample' evaluation, and one SQ-VAE-2 loss/gradient
            and evaluation (the 'sample' stream of a fixed key).
  grouped_quantizer  6 training calls of a grouped quantizer of 4 EMA groups
            (nested dropout at `scope`, dead-code resets) and its input gradient.

Multi-process runs (jax.distributed; only the train scenario): each process
feeds its rows of the global batch.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_config  # noqa: E402

from vqjax import config_lib, data, losses, parallel, train  # noqa: E402
from vqjax.experiments import hqvae_configs, sweep_spec  # noqa: E402
from vqjax import state as state_lib  # noqa: E402
from vqjax.models import create_model  # noqa: E402
from vqjax.quantizers import COLLECTION  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat(prefix: str, tree) -> dict[str, np.ndarray]:
  """{prefix + keystr(path): leaf} of a pytree (on the host)."""
  return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


# -- train: train.jit_train_step on a config ------------------------------------------


def _tiny(kind):
  def build(spec):
    return tiny_config(kind, image_size=spec["image_size"], batch_size=spec["batch"])
  return build


def _hqvae_smoke(kind):
  """configs/hqvae/cpu_*.py's model at smoke size (ARELBO, Adam (0.9, 0.9), the plateau rule)."""
  def build(spec):
    config = hqvae_configs.hqvae_config(kind, num_codes=16, num_pools=2,
                                        num_steps=spec["steps"])
    config = hqvae_configs.apply_hqvae_options(config, "smoke")
    config.data.image_size = spec["image_size"]
    config.data.batch_size = spec["batch"]
    return config
  return build


BUILDERS = {"tiny_single": _tiny("single"), "tiny_hierarchical": _tiny("hierarchical"),
            "hqvae_injected_topdown": _hqvae_smoke("injected_topdown")}


def synthetic_images(kind: str, steps: int, batch: int, size: int) -> np.ndarray:
  """[steps, B, S, S, 3] (the same in every process)."""
  rng = np.random.default_rng(0)
  if kind == "uint8":
    return rng.integers(0, 256, (steps, batch, size, size, 3), dtype=np.uint8)
  if kind != "smooth":
    raise ValueError(f"images={kind!r}; use 'smooth' or 'uint8'.")
  # Smooth random images in [-1, 1]: colour gradients plus a little noise.
  yy, xx = np.mgrid[0:size, 0:size] / size
  coef = rng.uniform(-1, 1, size=(steps, batch, 1, 1, 3, 3))
  img = coef[..., 0] * xx[..., None] + coef[..., 1] * yy[..., None] + coef[..., 2] * 0.5
  img += 0.05 * rng.normal(size=img.shape)
  return np.clip(img, -1, 1).astype(np.float32)


def train_config(spec: dict):
  config = BUILDERS[spec["config"]](spec)
  config = sweep_spec.apply_overrides(config, spec.get("overrides", {}))
  config_lib.validate(config)
  return config


def run_train(mesh, spec: dict) -> dict:
  config = train_config(spec)
  steps, batch_size, size = spec["steps"], spec["batch"], spec["image_size"]
  validation = spec.get("validation")
  model = create_model(config.model)
  parallel.check_batch_size(batch_size, mesh)
  # The discriminator too when config.loss.gan_weight > 0 (GANTrainState).
  state = parallel.replicate(state_lib.create_state_for(config, model, seed=0), mesh)
  step_fn = train.jit_train_step(
      mesh, reconstruction_loss=config.train.get("reconstruction_loss", "mse"),
      objective=train.training_losses(config))
  plateau_step = train.jit_plateau_step(config, mesh) if validation else None
  per_process = batch_size // jax.process_count()
  rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
  images = synthetic_images(spec.get("images", "smooth"), steps, batch_size, size)
  history = []
  for i, batch in enumerate(images):
    state, metrics = step_fn(state, parallel.global_batch({"image": batch[rows]}, mesh))
    history.append(jax.device_get(metrics))
    if plateau_step is not None:
      state = plateau_step(state, validation[i])
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state))
  result = {f"metrics/{name}": np.asarray([float(m[name]) for m in history])
            for name in history[0]}
  result.update(flat("params/", state.params))
  result.update(flat("codebook/", state.codebook))
  result.update(flat("opt_state/", state.opt_state))
  if isinstance(state, state_lib.GANTrainState):
    result.update(flat("disc_params/", state.disc_params))
    result.update(flat("disc_opt_state/", state.disc_opt_state))
  if not spec.get("evaluate", True):
    return result
  gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
  eval_fn = jax.jit(lambda params, codebook, x: model.apply(
      {"params": params, COLLECTION: codebook}, x, train=False)[1]["levels"])
  x = data.to_model_range(parallel.global_batch({"image": images[-1][rows]}, mesh)["image"])
  for level, aux in eval_fn(state.params, state.codebook, x).items():
    result[f"indices/{level}"] = gather(aux["indices"])
  result["eval_input_std"] = np.asarray(np.std(gather(x)))
  return result


# -- stochastic_quantizer: StochasticQuantizer and SQ-VAE-2 ---------------------------


def run_stochastic_quantizer(mesh, spec: dict) -> dict:
  del spec
  from vqjax.models.hqvae import InjectedTopDownVAE  # pylint: disable=import-outside-toplevel
  from vqjax.quantizers.stochastic import StochasticQuantizer  # pylint: disable=import-outside-toplevel
  key = jax.random.key(42)
  rng = np.random.default_rng(0)
  z = rng.normal(size=(16, 4, 4, 4)).astype(np.float32)
  x = rng.uniform(-1, 1, size=(16, 16, 16, 3)).astype(np.float32)
  repl, sharded = parallel.replicated(mesh), parallel.data_sharding(mesh)

  train_q = StochasticQuantizer(16, 4, log_var_init=0.0, tau0=0.5)
  sample_q = StochasticQuantizer(16, 4, log_var_init=0.0, eval_mode="sample")
  variables = train_q.init({"params": jax.random.key(0)}, z, train=False)

  def quantizer(variables, z):
    def loss(v):
      z_q, aux = train_q.apply(v, z, train=True, step=jnp.int32(7), rngs={"sample": key})
      return sum(aux["losses"].values()), (z_q, aux)
    grads, (z_q, aux) = jax.grad(loss, has_aux=True)(variables)
    z_s, aux_s = sample_q.apply(variables, z, train=False, rngs={"sample": key})
    return dict(z_q=z_q, aux=aux, grads=grads, sample_z_q=z_s,
                sample_indices=aux_s["indices"])

  out = jax.jit(quantizer, in_shardings=(repl, sharded), out_shardings=repl)(
      variables, jax.device_put(z, sharded))
  result = flat("quantizer/", out)

  model = InjectedTopDownVAE(functools.partial(StochasticQuantizer, log_var_init=1.0),
                             num_codes=(8, 16), code_dim=4, width=8, num_res_blocks=1)
  params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]

  def sqvae2(params, x):
    def loss(p):
      x_hat, aux = model.apply({"params": p}, x, train=True, step=jnp.int32(3),
                               rngs={"sample": key})
      return losses.arelbo(x, x_hat) + sum(aux["losses"].values()), aux
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    x_hat, eval_aux = model.apply({"params": params}, x, train=False)
    return dict(loss=value, losses=aux["losses"], grad=grads, eval_x_hat=x_hat,
                eval_indices={k: a["indices"] for k, a in eval_aux["levels"].items()})

  out = jax.jit(sqvae2, in_shardings=(repl, sharded), out_shardings=repl)(
      params, jax.device_put(x, sharded))
  result.update(flat("sqvae2/", out))
  return result


# -- grouped_quantizer: GroupedQuantizer of EMA groups, nested dropout ----------------


def run_grouped_quantizer(mesh, spec: dict) -> dict:
  from vqjax.quantizers.ema_vq import VectorQuantizerEMA  # pylint: disable=import-outside-toplevel
  from vqjax.quantizers.grouped import GroupedQuantizer  # pylint: disable=import-outside-toplevel
  sub = functools.partial(VectorQuantizerEMA, reset_window=2, reset_threshold=30.0)
  q = GroupedQuantizer(num_groups=4, num_codes=32, code_dim=8, group_quantizer=sub,
                       dropout_scope=spec["scope"])
  rng = np.random.default_rng(0)
  zs = rng.normal(size=(6, 16, 3, 3, 8)).astype(np.float32)
  w = jnp.asarray(rng.normal(size=zs.shape[1:]), jnp.float32)
  variables = parallel.replicate(q.init(jax.random.key(0), jnp.asarray(zs[0]), train=False),
                                 mesh)

  @jax.jit
  def step(variables, z, t):
    def f(zz):
      (z_q, aux), new = q.apply(variables, zz, train=True, mutable=[COLLECTION],
                                rngs={COLLECTION: jax.random.fold_in(jax.random.key(1), t),
                                      "sample": jax.random.fold_in(jax.random.key(2), t)})
      return jnp.sum(w * z_q), (z_q, aux, new)
    grad, (z_q, aux, new) = jax.grad(f, has_aux=True)(z)
    return new, z_q, aux, grad

  result = {}
  for t, z in enumerate(zs):
    z = jax.device_put(z, parallel.data_sharding(mesh))
    variables, z_q, aux, grad = step(variables, z, t)
    result[f"z_q/{t}"], result[f"grad/{t}"] = np.asarray(z_q), np.asarray(grad)
    result[f"indices/{t}"] = np.asarray(aux["indices"])
    result[f"kept/{t}"] = np.asarray(aux["metrics"]["groups_kept"])
    result[f"resets/{t}"] = np.asarray(aux["metrics"]["codes_reset"])
  result.update(flat("var", variables))
  return result


SCENARIOS = {"train": run_train, "stochastic_quantizer": run_stochastic_quantizer,
             "grouped_quantizer": run_grouped_quantizer}


def main(argv):
  spec_path, out_path = argv[1], argv[2]
  if len(argv) > 3:
    jax.distributed.initialize(coordinator_address=argv[3], num_processes=int(argv[4]),
                               process_id=int(argv[5]))
  else:  # the tests' compilation cache (tests/conftest.py): re-runs skip compiling
    parallel.configure_compilation_cache(
        os.path.join(tempfile.gettempdir(), "vqjax-tests-jax-cache"))
  with open(spec_path) as f:
    runs = json.load(f)
  result = {}
  for name, spec in runs.items():
    for n in spec["devices"]:
      mesh = parallel.create_mesh(jax.devices()[:n] if n > 0 else jax.devices())
      out = SCENARIOS[spec["scenario"]](mesh, spec)
      result.update({f"{name}/{mesh.devices.size}/{k}": v for k, v in out.items()})
  if jax.process_index() == 0:
    np.savez(out_path, **result)


# -- the tests' side -------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# XLA:CPU compiles a tiny model's programs ~10x faster without LLVM's
# optimisations (model.init: 1.4 s instead of 20 s); the programs compute the
# same functions, and both sides of a comparison are compiled alike.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def run_worker(tmp_path, runs: dict, host_devices: int, processes: int = 1,
               tag: str = "worker", timeout: int = 900, fast_compile: bool = False) -> dict:
  """Runs `runs` (SPEC.json's dict) in fresh processes of `host_devices` CPU
  devices each (`processes` > 1: jax.distributed over that many) and returns
  {name: {devices: {key: array}}}. fast_compile: FAST_COMPILE_FLAGS too."""
  spec_path, out_path = tmp_path / f"{tag}.json", tmp_path / f"{tag}.npz"
  spec_path.write_text(json.dumps(runs))
  xla_flags = f"--xla_force_host_platform_device_count={host_devices}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags + (" " + FAST_COMPILE_FLAGS if fast_compile else ""))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  cmd = [sys.executable, os.path.abspath(__file__), str(spec_path), str(out_path)]
  if processes > 1:
    coordinator = f"127.0.0.1:{_free_port()}"
    cmds = [cmd + [coordinator, str(processes), str(i)] for i in range(processes)]
  else:
    cmds = [cmd]
  procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT) for c in cmds]
  for proc in procs:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output.decode()[-4000:]
  results: dict = {}
  with np.load(out_path) as saved:
    for key in saved.files:
      name, devices, rest = key.split("/", 2)
      results.setdefault(name, {}).setdefault(int(devices), {})[rest] = saved[key]
  return results


# The training run of tests/test_parallel.py (and grouped in test_quantizer_integration.py).

NUM_STEPS = 15
# Falls by 10% a step except at steps 5 and 10: the scale halves twice.
VALIDATION = [0.9 ** i if i % 5 else 2.0 for i in range(1, NUM_STEPS + 1)]


def training_run(devices, **overrides) -> dict:
  """The tiny hierarchical model, 15 steps of 16 smooth 16x16 images; resets
  within 15 steps (window 3); the learning rate follows the plateau rule
  (patience 1) fed VALIDATION after each step. `overrides`: dotted config keys."""
  return dict(scenario="train", devices=devices, config="tiny_hierarchical",
              steps=NUM_STEPS, batch=16, image_size=16, images="smooth",
              validation=VALIDATION,
              overrides={"model.quantizer.reset_window": 3, **overrides,
                         "train.lr_schedule": "plateau", "train.plateau_patience": 1,
                         "train.eval_every": 1})


def pick(result: dict, *prefixes: str) -> dict:
  return {k: v for k, v in result.items() if k.startswith(prefixes)}


def resets(result: dict) -> np.ndarray:
  """[steps, 2]: codes reset per step at the top and bottom level."""
  return np.stack([result["metrics/top/codes_reset"], result["metrics/bottom/codes_reset"]], -1)


def assert_same_training(a: dict, b: dict, atol: float = 1e-5):
  assert set(a) == set(b)
  # Training must really have exercised data init and dead-code resets.
  assert resets(a).sum() > 0
  np.testing.assert_array_equal(resets(a), resets(b))
  # The plateau rule halved the rate after validation rounds 5 and 10.
  np.testing.assert_array_equal(a["metrics/lr_scale"], [1] * 5 + [0.5] * 5 + [0.25] * 5)
  # The codes compared below are of real images (smooth images in [-1, 1]
  # have a pixel std of about 0.5): the images' code maps differ.
  assert a["eval_input_std"] > 0.2, float(a["eval_input_std"])
  for name, codes in pick(a, "indices/").items():
    assert (codes != codes[:1]).any(), f"{name}: every image has the same codes"
  chex.assert_trees_all_equal(pick(a, "indices/"), pick(b, "indices/"))
  compared = ("params/", "codebook/", "metrics/lr_scale", "eval_input_std")
  chex.assert_trees_all_close(pick(a, *compared), pick(b, *compared), atol=atol, rtol=0)


if __name__ == "__main__":
  main(sys.argv)
