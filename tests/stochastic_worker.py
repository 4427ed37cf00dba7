"""StochasticQuantizer and one SQ-VAE-2 loss/gradient on a 1- and an 8-device mesh.

Run as a script by tests/test_stochastic.py in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=8:

  python tests/stochastic_worker.py OUT.npz

Saves every output as '<devices>:<name>' (devices 1 and 8).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vqjax import losses, parallel
from vqjax.models.hqvae import InjectedTopDownVAE
from vqjax.quantizers.stochastic import StochasticQuantizer

BATCH = 16
KEY = jax.random.key(42)


def flat(prefix, tree):
  return {prefix + jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def quantizer_outputs(mesh, z):
  train_q = StochasticQuantizer(16, 4, log_var_init=0.0, tau0=0.5)
  sample_q = StochasticQuantizer(16, 4, log_var_init=0.0, eval_mode="sample")
  variables = train_q.init({"params": jax.random.key(0)}, z, train=False)

  def run(variables, z):
    def loss(v):
      z_q, aux = train_q.apply(v, z, train=True, step=jnp.int32(7), rngs={"sample": KEY})
      return sum(aux["losses"].values()), (z_q, aux)
    grads, (z_q, aux) = jax.grad(loss, has_aux=True)(variables)
    z_s, aux_s = sample_q.apply(variables, z, train=False, rngs={"sample": KEY})
    return dict(z_q=z_q, aux=aux, grads=grads, sample_z_q=z_s,
                sample_indices=aux_s["indices"])

  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(run, in_shardings=(repl, data), out_shardings=repl)(
      variables, jax.device_put(z, data))


def sqvae2_outputs(mesh, x):
  model = InjectedTopDownVAE(functools.partial(StochasticQuantizer, log_var_init=1.0),
                             num_codes=(8, 16), code_dim=4, width=8, num_res_blocks=1)
  variables = model.init({"params": jax.random.key(0)}, x, train=False)

  def run(params, x):
    def loss(p):
      x_hat, aux = model.apply({"params": p}, x, train=True, step=jnp.int32(3),
                               rngs={"sample": KEY})
      return losses.arelbo(x, x_hat) + sum(aux["losses"].values()), aux
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    x_hat, eval_aux = model.apply({"params": params}, x, train=False)
    return dict(loss=value, losses=aux["losses"], grad=grads, eval_x_hat=x_hat,
                eval_indices={k: a["indices"] for k, a in eval_aux["levels"].items()})

  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(run, in_shardings=(repl, data), out_shardings=repl)(
      variables["params"], jax.device_put(x, data))


def main(out_path):
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  z = rng.normal(size=(BATCH, 4, 4, 4)).astype(np.float32)
  x = rng.uniform(-1, 1, size=(BATCH, 16, 16, 3)).astype(np.float32)
  result = {}
  for n in (1, 8):
    mesh = parallel.create_mesh(jax.devices()[:n])
    result.update(flat(f"{n}:quantizer/", quantizer_outputs(mesh, z)))
    result.update(flat(f"{n}:sqvae2/", sqvae2_outputs(mesh, x)))
  np.savez(out_path, **result)


if __name__ == "__main__":
  main(sys.argv[1])
