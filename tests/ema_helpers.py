"""The EMA quantizer tests' NumPy re-derivations and small builders
(tests/test_quantizer.py, tests/test_dead_code_reset.py)."""

import jax
import jax.numpy as jnp

from vqjax.quantizers.ema_vq import VectorQuantizerEMA


def np_assign(z, codebook):
  """Brute-force nearest code, ties to the lowest index."""
  d = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
  return d.argmin(1)


def np_ema(cs, es, counts, sums, decay, eps):
  cs = decay * cs + (1 - decay) * counts
  es = decay * es + (1 - decay) * sums
  n = cs.sum()
  smoothed = (cs + eps) / (n + len(cs) * eps) * n
  return cs, es, es / smoothed[:, None]


def make_vq(**kw):
  args = dict(num_codes=8, code_dim=2, codebook_init="uniform", reset_window=10)
  args.update(kw)
  return VectorQuantizerEMA(**args)


def init_vars(vq, z, codebook=None):
  variables = vq.init({"params": jax.random.key(0)}, z, train=False)
  cb = dict(variables["codebook"])
  if codebook is not None:
    codebook = jnp.asarray(codebook, jnp.float32)
    cb.update(embedding=codebook, embed_sum=codebook,
              cluster_size=jnp.ones(codebook.shape[0]))
  return {"codebook": cb}


def train_call(vq, variables, z, seed=0):
  (z_q, aux), new = vq.apply(variables, z, train=True, mutable=["codebook"],
                             rngs={"codebook": jax.random.key(seed)})
  return z_q, aux, new
