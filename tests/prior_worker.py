"""Trains a tiny prior on a fixed Markov-chain codes file; saves its params and metrics.

Run as a script by tests/test_prior_slow.py in a fresh process, so that
XLA_FLAGS=--xla_force_host_platform_device_count=N gives it N devices:

  python tests/prior_worker.py OUT_DIR

OUT_DIR gets codes/{train,validation}.array_record (the same in every run:
test_prior.markov_prior_config), run/ (the prior's workdir) and params.npz.
Dropout is on, so the per-step dropout masks of the sharded batch must equal
one device's.
"""

import os
import sys

import jax
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(__file__))
from test_prior import markov_prior_config  # noqa: E402

from vqjax import parallel  # noqa: E402
from vqjax.prior import train as prior_train  # noqa: E402

def main(out_dir: str):
  flags.FLAGS.mark_as_parsed()
  config = markov_prior_config(out_dir)
  workdir = os.path.join(out_dir, "run")
  prior_train.train_and_evaluate(config, workdir)
  # The final state, restored onto this process's devices.
  _, _, _, state, step = prior_train.restore(config, workdir, parallel.create_mesh(), "sample")
  assert step == config.train.num_steps
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(
      {"params": state.params, "opt_state": state.opt_state}))
  np.savez(os.path.join(out_dir, "params.npz"),
           **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves},
           num_devices=np.asarray(jax.device_count()))


if __name__ == "__main__":
  main(sys.argv[1])
