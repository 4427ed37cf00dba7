"""Building blocks of the experiment configs in `configs/`.

A config holds everything a run needs (data, model, optimizer, steps, seeds,
cadences). The paper's models are built here once; the single-level model is
always *derived* from the hierarchical one through `capacity.py`, never typed.
"""

from __future__ import annotations

import ml_collections

from vqjax import capacity, input_pipeline
from vqjax.quantizers.ema_vq import INIT_CHOICES, RESET_CRITERIA, RESET_RULES

# Paper, Sec. 4: C_h = 128 at both levels; single-level C_s follows from Eq. 4.
PAPER_HIER_CHANNELS = 128


def quantizer_defaults() -> dict:
  """EMA quantizer hyper-parameters (paper Sec. 3-4, DESIGN.md)."""
  return dict(
      beta=0.25,                # commitment weight
      decay=0.99,               # EMA decay of counts and sums
      eps=1e-5,                 # Laplace smoothing of the counts
      codebook_init="data",     # 'data' (first batch's encoder outputs) | 'kmeans' (+ Lloyd) | 'uniform'
      kmeans_iters=10,          # Lloyd iterations of codebook_init='kmeans'
      init_noise=0.01,          # noise (x std of z) when a batch has < K vectors
      reset_threshold=2.0,      # dead if < this many assignments in the window
      reset_window=10,          # window length in batches
      reset_rule="average",     # 'average' of reset_average_size outputs | 'sample'
      reset_average_size=4,
      reset_criterion="window", # 'window' (paper) | 'ema': EMA cluster size < threshold, every step (released code)
      search_chunk_size=0,      # >0: code search over blocks of this many codes
      search_rows_per_block=-1, # rows per distance block; -1 auto (128 on CPU, 512 MiB blocks on accelerators), 0 all at once
  )


def hierarchical_model(num_codes: int, code_dim: int,
                       conditioned: bool = False) -> ml_collections.ConfigDict:
  """The paper's two-level model: C_h = 128, K_h codes of dimension D_h per level."""
  return ml_collections.ConfigDict(dict(
      kind="hierarchical", conditioned=conditioned,
      channels=PAPER_HIER_CHANNELS, res_channels=0, num_res_blocks=2,
      factorized_codes=False,  # True: the released code's C -> D -> C projections
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

  c.data = input_pipeline.default_data_config()  # builtin photos, 64x64, batch 32

  c.train = ml_collections.ConfigDict(dict(
      num_steps=300,
      learning_rate=3e-4,       # Adam
      lr_decay_rate=0.99,       # exponential decay per epoch
      steps_per_epoch=0,        # 0: examples per epoch / global batch (see README)
      log_every=10,
      eval_every=0,             # 0: only at the end
      checkpoint_every=100,
      keep_checkpoints=3,
      skip_nonfinite=0,         # 0: stop at the first NaN/inf step; n: skip such batches, stop after n in a row
  ))

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      checkpoint_step=-1,       # -1: latest
      num_grid_images=8,
  ))

  # Using a trained model (vqjax.export; checkpoint: eval.checkpoint_step).
  c.encode = ml_collections.ConfigDict(dict(
      split="validation",       # 'train' | 'validation' of config.data (records: vqjax.export)
      output="",                # ArrayRecord file; '' = <workdir>/codes/<split>.array_record
      batch_size=32,
  ))
  c.decode = ml_collections.ConfigDict(dict(
      input="",                 # a codes file written by --mode=encode
      output="",                # folder of PNGs; '' = <workdir>/decoded
      batch_size=32,
  ))
  c.reconstruct = ml_collections.ConfigDict(dict(
      input="",                 # an image file or a folder tree of images
      output="",                # '' = <workdir>/reconstructions
      batch_size=8,
  ))
  return c


def paper_config() -> ml_collections.ConfigDict:
  """The paper's training regime on ImageNet at 256x256 (model set by the caller).

  300 epochs of Adam 3e-4 decayed by 0.99 per epoch; the paper's global batch
  is not stated: 128 per GPU on 4 GPUs as in the released configs.
  """
  c = base_config()
  c.data.name = "tfds"
  c.data.tfds_name = "imagenet2012"
  c.data.image_size = 256
  c.data.resize_size = 256
  c.data.batch_size = 512
  c.data.num_workers = 16
  c.eval.batch_size = 256
  imagenet_train_images = 1_281_167
  c.train.steps_per_epoch = imagenet_train_images // c.data.batch_size
  c.train.num_steps = 300 * c.train.steps_per_epoch
  c.train.log_every = 100
  c.train.eval_every = 10 * c.train.steps_per_epoch
  c.train.checkpoint_every = 2000
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Clear errors for config values that cannot work (before anything compiles)."""
  m, d, t = config.model, config.data, config.train

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config: {msg}")

  need(m.kind in ("single", "hierarchical"),
       f"model.kind={m.kind!r}; use 'single' or 'hierarchical'.")
  need(d.image_size > 0 and d.image_size % 8 == 0,
       f"data.image_size={d.image_size} must be a positive multiple of 8 "
       "(the hierarchical top level is at 1/8 resolution).")
  need(m.num_codes >= 2, f"model.num_codes={m.num_codes} must be >= 2.")
  need(m.code_dim >= 1, f"model.code_dim={m.code_dim} must be >= 1.")
  need(m.channels >= 2 and m.channels % 2 == 0,
       f"model.channels={m.channels} must be an even number >= 2.")
  need(0.0 < m.decay < 1.0, f"model.decay={m.decay} must be in (0, 1).")
  need(m.eps > 0, f"model.eps={m.eps} must be > 0.")
  need(m.beta >= 0, f"model.beta={m.beta} must be >= 0.")
  need(m.reset_window >= 1, f"model.reset_window={m.reset_window} must be >= 1 batch.")
  need(m.reset_rule in RESET_RULES,
       f"model.reset_rule={m.reset_rule!r}; use one of {RESET_RULES}.")
  need(m.reset_criterion in RESET_CRITERIA,
       f"model.reset_criterion={m.reset_criterion!r}; use one of {RESET_CRITERIA} "
       "('window': the paper's windowed count, 'ema': the released code's EMA cluster size).")
  need(m.codebook_init in INIT_CHOICES,
       f"model.codebook_init={m.codebook_init!r}; use one of {INIT_CHOICES}.")
  need(m.codebook_init != "kmeans" or m.kmeans_iters >= 1,
       f"model.kmeans_iters={m.kmeans_iters} must be >= 1 for codebook_init='kmeans'.")
  need(m.dtype in ("float32", "bfloat16"),
       f"model.dtype={m.dtype!r}; use 'float32' or 'bfloat16'.")
  need(not m.search_chunk_size or m.num_codes % m.search_chunk_size == 0,
       f"model.search_chunk_size={m.search_chunk_size} must divide "
       f"model.num_codes={m.num_codes} (or be 0).")
  need(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be >= 1.")
  need(t.num_steps >= 1, f"train.num_steps={t.num_steps} must be >= 1.")
  need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0.")
  need(0 < t.lr_decay_rate <= 1, f"train.lr_decay_rate={t.lr_decay_rate} must be in (0, 1].")
  need(t.skip_nonfinite >= 0, f"train.skip_nonfinite={t.skip_nonfinite} must be >= 0 "
       "(0: stop at the first non-finite step).")
  need(t.log_every >= 1 and t.checkpoint_every >= 1,
       "train.log_every and train.checkpoint_every must be >= 1.")


MODES = ("train", "eval", "encode", "decode", "reconstruct")


def validate_mode(config: ml_collections.ConfigDict, mode: str) -> None:
  """Clear errors for the settings a --mode needs (after `validate`)."""
  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config for --mode={mode}: {msg}")

  need(mode in MODES, f"unknown mode; use one of {MODES}.")
  d = config.data
  need(d.color_augment in ("auto", "on", "off"),
       f"data.color_augment={d.color_augment!r}; use 'auto' (on for builtin), 'on' or 'off'.")
  need(0.0 <= d.color_prob <= 1.0, f"data.color_prob={d.color_prob} must be in [0, 1].")
  need(0.0 <= d.color_hue_degrees <= 180.0,
       f"data.color_hue_degrees={d.color_hue_degrees} must be in [0, 180].")
  if mode in ("encode", "decode", "reconstruct"):
    group = config[mode]
    need(group.batch_size >= 1, f"{mode}.batch_size={group.batch_size} must be >= 1.")
  if mode == "encode":
    need(config.encode.split in ("train", "validation"),
         f"encode.split={config.encode.split!r}; use 'train' or 'validation'.")
  if mode == "decode":
    need(bool(config.decode.input),
         "pass the codes file: --config.decode.input=PATH (written by --mode=encode).")
  if mode == "reconstruct":
    need(bool(config.reconstruct.input),
         "pass the images: --config.reconstruct.input=FILE_OR_FOLDER.")
