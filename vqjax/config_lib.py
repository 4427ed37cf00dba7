"""Building blocks of the experiment configs in `configs/`.

A config holds everything a run needs (data, model, optimizer, steps, seeds,
cadences). The paper's models are built here once; the single-level model is
always *derived* from the hierarchical one through `capacity.py`, never typed.
"""

from __future__ import annotations

import ml_collections

from vqjax import capacity

# Paper, Sec. 4: C_h = 128 at both levels; single-level C_s follows from Eq. 4.
PAPER_HIER_CHANNELS = 128


def quantizer_defaults() -> dict:
  """EMA quantizer hyper-parameters (paper Sec. 3-4, DESIGN.md)."""
  return dict(
      beta=0.25,                # commitment weight
      decay=0.99,               # EMA decay of counts and sums
      eps=1e-5,                 # Laplace smoothing of the counts
      codebook_init="data",     # 'data' (first batch's encoder outputs) | 'uniform'
      init_noise=0.01,          # noise (x std of z) when a batch has < K vectors
      reset_threshold=2.0,      # dead if < this many assignments in the window
      reset_window=10,          # window length in batches
      reset_rule="average",     # 'average' of reset_average_size outputs | 'sample'
      reset_average_size=4,
      search_chunk_size=0,      # >0: code search over blocks of this many codes
  )


def hierarchical_model(num_codes: int, code_dim: int,
                       conditioned: bool = False) -> ml_collections.ConfigDict:
  """The paper's two-level model: C_h = 128, K_h codes of dimension D_h per level."""
  return ml_collections.ConfigDict(dict(
      kind="hierarchical", conditioned=conditioned,
      channels=PAPER_HIER_CHANNELS, res_channels=0, num_res_blocks=2,
      num_codes=num_codes, code_dim=code_dim, dtype="float32",
      **quantizer_defaults()))


def single_model(hier_num_codes: int, hier_code_dim: int, image_size: int,
                 code_dim: int | None = None) -> ml_collections.ConfigDict:
  """The single-level model matched to `hierarchical_model(...)` (Eq. 4, Eq. 5)."""
  return capacity.matched_single_level(
      hierarchical_model(hier_num_codes, hier_code_dim), image_size, code_dim)


def base_config() -> ml_collections.ConfigDict:
  """Everything but the model: data, optimizer, schedule, cadences, eval."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="builtin",           # 'builtin' | 'folder' | 'tfds'
      image_size=64,            # training crop / eval crop, pixels
      resize_size=0,            # folder/tfds: resize shorter side first (0 = no)
      batch_size=32,            # global batch, split over devices and hosts
      num_workers=0,            # grain worker processes (0 = in-process)
      train_dir="", val_dir="", val_fraction=0.1,
      tfds_name="", tfds_data_dir="", train_split="train",
      val_split="validation",
      builtin_val_images=("chelsea", "coffee"),
  ))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=300,
      learning_rate=3e-4,       # Adam
      lr_decay_rate=0.99,       # exponential decay per epoch
      steps_per_epoch=0,        # 0: examples per epoch / global batch (see README)
      log_every=10,
      eval_every=0,             # 0: only at the end
      checkpoint_every=100,
      keep_checkpoints=3,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      checkpoint_step=-1,       # -1: latest
      num_grid_images=8,
  ))
  return c
