"""Building blocks of the experiment configs in `configs/`.

A config holds everything a run needs (data, model, optimizer, steps, seeds,
cadences). The paper's models are built here once; the single-level model is
always *derived* from the hierarchical one through `capacity.py`, never typed.
"""

from __future__ import annotations

import math

import ml_collections

from vqjax import capacity, losses
from vqjax.models.factory import (GROUP_QUANTIZERS, HQVAE_KINDS, HQVAE_QUANTIZERS,
                                  MODEL_KINDS, QUANTIZERS, codebook_sizes)
from vqjax.quantizers import fsq, lfq
from vqjax.quantizers.ema_vq import INIT_CHOICES, RESET_CRITERIA, RESET_RULES
from vqjax.quantizers.gradients import GRADIENT_ESTIMATORS
from vqjax.quantizers.grouped import DROPOUT_SCOPES
from vqjax.quantizers.stochastic import EVAL_MODES

# Evaluation sums a dense float32 histogram of every level's index space on the
# device (and an int64 copy on the host): at most 2^24 codes, 64 MiB per level.
MAX_HISTOGRAM_CODES = 2**24

LR_SCHEDULES = ("exponential", "plateau")

DATA_NAMES = ('builtin', 'folder', 'tfds')
# Colour photos that scikit-image ships inside its wheel (no download).
BUILTIN_PHOTOS = (
    'astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field',
    'immunohistochemistry', 'retina', 'stereo_motorcycle',
)
IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.webp')
# data.on_bad_image: '' (or 'auto') = 'skip' in training, 'error' in evaluation.
ON_BAD_IMAGE_CHOICES = ('', 'auto', 'skip', 'error')
COLOR_AUGMENT_CHOICES = ('auto', 'on', 'off')



def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every field at its default."""
  c = ml_collections.ConfigDict()
  c.name = "builtin"           # "builtin" | "folder" | "tfds"
  c.image_size = 64            # S: square crop side, pixels
  c.resize_size = 0            # folder/tfds: shorter side first resized to this; 0 = off
  c.batch_size = 32            # global batch (all processes together)
  c.num_workers = 0            # grain worker processes; 0 = in-process
  c.prefetch = 2               # training batches prepared ahead in a background thread; 0 = off
  c.decode_cache_mb = 512      # folder: decoded images kept in memory per process (MiB); 0 = off
  c.train_dir = ""             # folder: root of training images
  c.val_dir = ""               # folder: root of validation images ("" = split train_dir)
  c.val_fraction = 0.1         # folder without val_dir: held-out fraction
  c.tfds_name = ""             # tfds: e.g. "imagenet2012"
  c.tfds_data_dir = ""         # tfds: "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.train_split = "train"      # tfds split names (tfds slicing syntax allowed)
  c.val_split = "validation"
  c.builtin_val_images = ("chelsea", "coffee")
  # folder: an undecodable file: "skip" (training: next decodable file instead;
  # eval: left out, mask False; logged and counted) | "error" (ValueError
  # naming it) | "" = auto: skip in training, error in evaluation.
  c.on_bad_image = ""
  # Training-time colour augmentation (vqjax.data.augment): "auto" = on for builtin
  # (its photos hold almost no green), off for folder/tfds | "on" | "off".
  c.color_augment = "auto"
  c.color_hue_degrees = 180.0  # hue rotated by U[-this, this] degrees (HSV)
  c.color_permute = True       # and the RGB channels put in a random order
  c.color_prob = 1.0           # fraction of training crops augmented
  return c


def validate_data(d) -> None:
  """Clear errors for data fields that cannot work (ConfigDict or attributes)."""
  if d.name not in DATA_NAMES:
    raise ValueError(f"bad config: data.name={d.name!r}; use one of {list(DATA_NAMES)}.")
  if int(d.image_size) <= 0:
    raise ValueError(f"bad config: data.image_size={d.image_size} must be positive.")
  if d.resize_size and int(d.resize_size) < int(d.image_size):
    raise ValueError(f"bad config: data.resize_size={d.resize_size} must be 0 (off) or "
                     f">= data.image_size={d.image_size}.")
  if (d.on_bad_image or "") not in ON_BAD_IMAGE_CHOICES:
    raise ValueError(
        f"bad config: data.on_bad_image={d.on_bad_image!r}; use one of "
        f"{list(ON_BAD_IMAGE_CHOICES)} ('' or 'auto': skip undecodable files in "
        "training, raise in evaluation).")
  if d.color_augment not in COLOR_AUGMENT_CHOICES:
    raise ValueError(
        f"bad config: data.color_augment={d.color_augment!r}; use one of "
        f"{list(COLOR_AUGMENT_CHOICES)} (auto: on for builtin, off otherwise).")
  for field in ("num_workers", "prefetch", "decode_cache_mb"):
    if int(getattr(d, field, 0)) < 0:
      raise ValueError(f"bad config: data.{field}={getattr(d, field)} must be >= 0 (0 = off).")
  if not 0.0 <= float(d.color_prob) <= 1.0 or not 0.0 <= float(d.color_hue_degrees) <= 180.0:
    raise ValueError(
        f"bad config: data.color_prob={d.color_prob} must be in [0, 1] and "
        f"data.color_hue_degrees={d.color_hue_degrees} in [0, 180].")


# Paper, Sec. 4: C_h = 128 at both levels; single-level C_s follows from Eq. 4.
PAPER_HIER_CHANNELS = 128


def quantizer_defaults() -> dict:
  """Quantizer hyper-parameters: EMA (paper Sec. 3-4, DESIGN.md), SQ-VAE (sq_*),
  grouped (MGVQ), FSQ (fsq_*) and LFQ (lfq_*); docs/QUANTIZERS.md."""
  return dict(
      quantizer="ema",          # 'ema' (VectorQuantizerEMA) | 'stochastic' (SQ-VAE, HQ-VAE) |
                                # 'learned' | 'grouped' (MGVQ) | 'fsq' | 'lfq' (models/factory.py)
      gradient_estimator="ste", # 'ste' | 'rotation' (rotation trick) for ema, learned, grouped
      beta=0.25,                # commitment weight (ema, learned, grouped)
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
      # quantizer='stochastic' (vqjax/quantizers/stochastic.py; the EMA fields above are unused):
      sq_log_var_init=math.log(20.0),  # theta_0: s^2 = sq_variance_offset + exp(theta), per quantizer
      sq_variance_offset=0.0,   # 1.0: the released SQ-VAE code's s^2 = 1 + exp(theta)
      sq_tau0=1.0,              # Gumbel-softmax temperature max(tau0 exp(-rate t), tau_min)
      sq_tau_rate=1e-5,         # r per train step (the paper's value; rescale for short runs)
      sq_tau_min=0.0,
      sq_eval_mode="det",       # evaluation: 'det' nearest code | 'sample' k ~ P(k | z)
      # quantizer='learned' (and grouped with group_quantizer='learned'):
      l2_normalize=False,       # cosine-similarity look-up on the unit sphere (MGVQ's codebooks)
      # quantizer='grouped': G groups of num_codes / G codes of dim code_dim / G each
      num_groups=1,             # G; divides num_codes, code_dim and channels
      group_quantizer="ema",    # sub-quantizer per group: 'ema' (fields above) | 'learned'
      group_dropout=True,       # nested group dropout (MGVQ stage 1); False: fine-tuning stage
      group_drop_probs=(0.0, 0.2, 0.3, 0.4),  # group i dropped when u < p_i (released values)
      group_dropout_scope="batch",  # one u per step ('batch', released) | per image ('example')
      # quantizer='fsq': code_dim must equal len(fsq_levels); prod(levels) implicit codes
      fsq_levels=(8, 5, 5, 5),
      fsq_eps=1e-3,
      # quantizer='lfq': code_dim bits, 2^code_dim implicit codes
      lfq_entropy_weight=0.1,   # 0: no entropy penalty (needs code_dim <= 16 when > 0)
      lfq_diversity_weight=1.0,
      lfq_temperature=0.01,
      lfq_commitment_weight=0.25,
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


def hqvae_model(kind: str, quantizer: str, num_codes, num_layers: int = 2,
                width: int = 64, num_pools: int = 1) -> ml_collections.ConfigDict:
  """An HQ-VAE top-down network (vqjax/models/hqvae.py), d_b = code_dim = width.

  kind: 'injected_topdown' (SQ-VAE-2, or VQ-VAE-2 with quantizer='ema') or
  'residual_topdown' (RSQ-VAE, or RQ-VAE with 'ema'). num_codes: K per layer
  (an int for every layer, or a tuple top first). Layer 1 sits at
  image / 2^(stem_downsamples + num_pools); injected layer l at 2^(l-1) times that.
  """
  return ml_collections.ConfigDict(dict(
      kind=kind, num_layers=num_layers, num_codes=num_codes,
      code_dim=width, channels=width,   # d_b and the network width (paper: both 64)
      num_res_blocks=2,         # ResBlocks per bottom-up group and in the decoder
      stem_downsamples=1,       # 4x4 stride-2 convs before the first group
      num_pools=num_pools,      # 2x2 average pools between groups (resolutions - 1)
      shared_codebook=False,    # residual_topdown: one codebook for every layer
      decoder_variance=False,   # learned log sigma^2 (needs train.reconstruction_loss='gaussian_nll')
      dtype="float32",
      **dict(quantizer_defaults(), quantizer=quantizer)))


def single_model(hier_num_codes: int, hier_code_dim: int, image_size: int,
                 code_dim: int | None = None) -> ml_collections.ConfigDict:
  """The single-level model matched to `hierarchical_model(...)` (Eq. 4, Eq. 5)."""
  return capacity.matched_single_level(
      hierarchical_model(hier_num_codes, hier_code_dim), image_size, code_dim)


def base_config() -> ml_collections.ConfigDict:
  """Everything but the model: data, optimizer, schedule, cadences, eval."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # JAX's persistent compilation cache for main/sweep runs ('' = off): a
  # second launch with the same shapes skips compilation.
  c.compilation_cache_dir = "~/.cache/vqjax/jax_cache"

  c.data = default_data_config()  # builtin photos, 64x64, batch 32

  c.train = ml_collections.ConfigDict(dict(
      num_steps=300,
      num_epochs=0,             # > 0: train this many epochs instead (steps from the data size)
      learning_rate=3e-4,       # Adam
      lr_decay_rate=0.99,       # exponential decay per epoch
      steps_per_epoch=0,        # 0: examples per epoch / global batch (see README)
      log_every=10,
      eval_every=0,             # 0: only at the end
      eval_every_epochs=0,      # > 0: evaluate every this many epochs instead
      checkpoint_every=100,
      keep_checkpoints=3,
      profile=False,            # True: a jax.profiler trace of 5 steps in the workdir (clu Profile)
      skip_nonfinite=0,         # 0: stop at the first NaN/inf step; n: skip such batches, stop after n in a row
      reconstruction_loss="mse",  # 'mse' | 'arelbo' (SQ-VAE/HQ-VAE) | 'gaussian_nll' (learned sigma^2)
      lr_schedule="exponential",  # 'exponential' (lr_decay_rate per epoch) | 'plateau' (below)
      plateau_factor=0.5,       # plateau: lr *= factor after plateau_patience epochs whose
      plateau_patience=3,       #   mean train loss fell by < plateau_rtol (relative)
      plateau_rtol=1e-4,
      adam_b2=0.999,            # Adam beta_2 (HQ-VAE: 0.9)
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
  c.train.num_epochs = 300        # steps from the train split's size (state.resolve_durations)
  c.train.eval_every_epochs = 10
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  return c


# HQ-VAE (Takida et al., TMLR 2024), App. F and Table 5: CIFAR-10 has 40k
# training images in batches of 32 (1250 steps per epoch) for 100 epochs, so
# the paper's tau = exp(-1e-5 t) ends at exp(-1.25) = 0.29. Shorter runs keep
# that end point: sq_tau_rate = HQVAE_TAU_EXPONENT / train.num_steps.
HQVAE_TAU_EXPONENT = 1.25
HQVAE_OPTIONS = ("smoke", "ema", "shared", "noreset")


def hqvae_config(kind: str, num_codes, num_pools: int, num_steps: int,
                 steps_per_epoch: int = 0) -> ml_collections.ConfigDict:
  """HQ-VAE's optimisation (App. F) around an SQ model of `hqvae_model`.

  ARELBO reconstruction, Adam 1e-3 with betas (0.9, 0.9), batch 32, the
  learning rate halved after 3 epochs without improvement (`lr_schedule=
  'plateau'`, on the epoch-mean training loss: see state.create_optimizer),
  validation once per epoch, the temperature rate rescaled to num_steps.
  """
  c = base_config()
  c.model = hqvae_model(kind, "stochastic", num_codes, num_pools=num_pools)
  c.model.sq_tau_rate = HQVAE_TAU_EXPONENT / num_steps
  c.data.image_size = 32
  c.data.batch_size = 32
  c.eval.batch_size = 32
  t = c.train
  t.num_steps, t.steps_per_epoch = num_steps, steps_per_epoch
  t.learning_rate, t.lr_decay_rate, t.adam_b2 = 1e-3, 1.0, 0.9
  t.reconstruction_loss, t.lr_schedule = "arelbo", "plateau"
  t.plateau_factor, t.plateau_patience, t.plateau_rtol = 0.5, 3, 1e-4
  return c


def apply_hqvae_options(config: ml_collections.ConfigDict,
                        arg: str | None) -> ml_collections.ConfigDict:
  """Options of configs/hqvae/*.py, e.g. `--config=configs/hqvae/cpu_rsqvae.py:ema,shared`.

    ema      the deterministic baseline on the same network: EMA VQ (beta 0.25,
             decay 0.99, data init, dead-code reset), MSE reconstruction
             (VQ-VAE-2 for injected_topdown, RQ-VAE for residual_topdown)
    shared   one codebook for every residual layer
    noreset  no dead-code reset (reset_threshold = 0; for 'ema')
    smoke    2 steps at tiny width on 32x32 built-in photo crops (tests, CI; any
             data set of the config is replaced, so it runs offline)
  """
  options = [o.strip() for o in (arg or "").split(",") if o.strip()]
  unknown = sorted(set(options) - set(HQVAE_OPTIONS))
  if unknown:
    raise ValueError(f"unknown config option(s) {unknown}; choose from {HQVAE_OPTIONS}.")
  m, t = config.model, config.train
  if "ema" in options:
    m.quantizer = "ema"
    t.reconstruction_loss = "mse"
  if "shared" in options:
    m.shared_codebook = True
  if "noreset" in options:
    m.reset_threshold = 0.0
  if "smoke" in options:
    smoke(config)
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks `config` in place to its smoke size (big_vision's `runlocal`).

  2 steps at tiny width on 32x32 crops of the built-in photos (any data set
  of the config is replaced, so it runs offline in seconds on CPU); model
  kind, quantizer and the other options stay as configured. Every config
  file offers it as `get_config('smoke')` (tests/test_configs.py trains each).
  """
  m, t = config.model, config.train
  if m.kind in HQVAE_KINDS:
    m.channels, m.code_dim, m.num_res_blocks = 8, 8, 1
  else:
    m.channels = 16
  config.data = default_data_config()
  config.data.image_size = 32
  config.data.batch_size = config.eval.batch_size = 8
  t.num_steps, t.log_every, t.checkpoint_every, t.eval_every = 2, 1, 2, 0
  t.num_epochs = t.eval_every_epochs = 0
  t.steps_per_epoch = 0
  if "sq_tau_rate" in m:
    m.sq_tau_rate = HQVAE_TAU_EXPONENT / t.num_steps
  config.eval.num_grid_images = 4
  return config


def config_options(arg: str | None, allowed: tuple[str, ...], path: str) -> list[str]:
  """'a,b' -> ['a', 'b'] for `get_config(arg)`; unknown options are an error."""
  options = [o.strip() for o in (arg or "").split(",") if o.strip()]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"{path}: unknown option(s) {unknown}; choose from {allowed}, "
                     f"e.g. --config={path}:{allowed[0]}.")
  return options


def validate(config: ml_collections.ConfigDict) -> None:
  """Clear errors for config values that cannot work (before anything compiles)."""
  m, d, t = config.model, config.data, config.train

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config: {msg}")

  need(m.kind in MODEL_KINDS, f"model.kind={m.kind!r}; use one of {MODEL_KINDS}.")
  hq = m.kind in HQVAE_KINDS
  quantizer = m.get("quantizer", "ema")
  need(quantizer in QUANTIZERS, f"model.quantizer={quantizer!r}; use one of {QUANTIZERS}.")
  need(not hq or quantizer in HQVAE_QUANTIZERS,
       f"model.quantizer={quantizer!r} with kind {m.kind!r}: the HQ-VAE kinds take "
       f"{HQVAE_QUANTIZERS}; use kind 'single' or 'hierarchical' for {quantizer!r}.")
  if quantizer in ("fsq", "lfq", "grouped"):
    _validate_codebook_free_or_grouped(m, quantizer, need)
  if hq:
    _validate_hqvae(m, d, need)
  else:
    need(d.image_size > 0 and d.image_size % 8 == 0,
         f"data.image_size={d.image_size} must be a positive multiple of 8 "
         "(the hierarchical top level is at 1/8 resolution).")
    need(isinstance(m.num_codes, int),
         f"model.num_codes={m.num_codes!r} must be one int for kind {m.kind!r}.")
  for k in codebook_sizes(m):
    need(k >= 2, f"model.num_codes={m.num_codes} must be >= 2 (every level).")
    need(k <= MAX_HISTOGRAM_CODES,
         f"model.quantizer={quantizer!r} has an index space of {k} codes per level; "
         f"evaluation's dense histogram holds at most {MAX_HISTOGRAM_CODES} (2^24, 64 MiB): "
         "use fewer codes (bits, levels).")
  need(m.code_dim >= 1, f"model.code_dim={m.code_dim} must be >= 1.")
  need(m.channels >= 2 and m.channels % 2 == 0,
       f"model.channels={m.channels} must be an even number >= 2.")
  if quantizer == "stochastic":
    need(m.sq_tau0 > 0 and m.sq_tau_rate >= 0 and m.sq_tau_min >= 0,
         f"model.sq_tau0={m.sq_tau0}, sq_tau_rate={m.sq_tau_rate}, sq_tau_min={m.sq_tau_min}: "
         "need tau0 > 0, rate >= 0, tau_min >= 0.")
    need(m.sq_variance_offset >= 0,
         f"model.sq_variance_offset={m.sq_variance_offset} must be >= 0.")
    need(m.sq_eval_mode in EVAL_MODES,
         f"model.sq_eval_mode={m.sq_eval_mode!r}; use one of {EVAL_MODES}.")
  elif quantizer in ("ema", "learned", "grouped"):
    _validate_ema(m, need)
  need(m.dtype in ("float32", "bfloat16"),
       f"model.dtype={m.dtype!r}; use 'float32' or 'bfloat16'.")
  recon = t.get("reconstruction_loss", "mse")
  need(recon in losses.RECONSTRUCTION_LOSSES,
       f"train.reconstruction_loss={recon!r}; use one of {losses.RECONSTRUCTION_LOSSES}.")
  need((recon == "gaussian_nll") == bool(m.get("decoder_variance", False)),
       f"train.reconstruction_loss={recon!r} with model.decoder_variance="
       f"{m.get('decoder_variance', False)}: 'gaussian_nll' needs the learned decoder "
       "variance (set both, on an HQ-VAE kind), the others must not have it.")
  schedule = t.get("lr_schedule", "exponential")
  need(schedule in LR_SCHEDULES,
       f"train.lr_schedule={schedule!r}; use one of {LR_SCHEDULES}.")
  if schedule == "plateau":
    need(0 < t.plateau_factor < 1 and t.plateau_patience >= 0 and t.plateau_rtol >= 0,
         f"train.plateau_factor={t.plateau_factor} must be in (0, 1), plateau_patience="
         f"{t.plateau_patience} and plateau_rtol={t.plateau_rtol} >= 0.")
  need(0 <= t.get("adam_b2", 0.999) < 1, f"train.adam_b2={t.get('adam_b2')} must be in [0, 1).")
  need(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be >= 1.")
  validate_data(d)
  need(t.num_steps >= 1 or t.get("num_epochs", 0) >= 1,
       f"train.num_steps={t.num_steps} must be >= 1 (or set train.num_epochs).")
  need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0.")
  need(0 < t.lr_decay_rate <= 1, f"train.lr_decay_rate={t.lr_decay_rate} must be in (0, 1].")
  need(t.skip_nonfinite >= 0, f"train.skip_nonfinite={t.skip_nonfinite} must be >= 0 "
       "(0: stop at the first non-finite step).")
  need(t.log_every >= 1 and t.checkpoint_every >= 1,
       "train.log_every and train.checkpoint_every must be >= 1.")


def _validate_hqvae(m, d, need) -> None:
  need(m.num_layers >= 1, f"model.num_layers={m.num_layers} must be >= 1.")
  need(m.stem_downsamples >= 1 and m.num_pools >= 0,
       f"model.stem_downsamples={m.stem_downsamples} must be >= 1 and "
       f"model.num_pools={m.num_pools} >= 0.")
  factor = 2 ** (m.stem_downsamples + m.num_pools)
  need(d.image_size > 0 and d.image_size % factor == 0,
       f"data.image_size={d.image_size} must be a positive multiple of {factor} "
       f"(2^(stem_downsamples + num_pools) = 2^({m.stem_downsamples} + {m.num_pools})).")
  if m.kind == "injected_topdown":
    need(m.num_pools >= m.num_layers - 1,
         f"model.num_pools={m.num_pools}: {m.num_layers} injected layers need "
         f"num_pools >= {m.num_layers - 1} (one resolution per layer).")
    need(not m.shared_codebook, "model.shared_codebook=True is for kind 'residual_topdown'.")
  if m.shared_codebook:
    need(len(set(codebook_sizes(m))) == 1,
         f"model.shared_codebook=True needs one K for every layer; got {m.num_codes}.")


def _validate_codebook_free_or_grouped(m, quantizer: str, need) -> None:
  """model.quantizer 'fsq', 'lfq' or 'grouped'."""
  if quantizer == "fsq":
    levels = tuple(m.fsq_levels)
    try:
      fsq.check_levels(levels, m.fsq_eps)
    except ValueError as e:
      need(False, f"model.fsq_levels / fsq_eps: {e}")
    need(m.code_dim == len(levels),
         f"model.code_dim={m.code_dim} with model.fsq_levels={levels}: FSQ quantizes one "
         f"channel per level, set model.code_dim={len(levels)}.")
  elif quantizer == "lfq":
    need(1 <= m.code_dim <= lfq.MAX_BITS,
         f"model.code_dim={m.code_dim}: LFQ's code_dim is its bits, 1..{lfq.MAX_BITS}.")
    need(m.lfq_entropy_weight == 0 or m.code_dim <= lfq.MAX_ENTROPY_BITS,
         f"model.code_dim={m.code_dim} > {lfq.MAX_ENTROPY_BITS} with lfq_entropy_weight="
         f"{m.lfq_entropy_weight}: the entropy penalty enumerates 2^code_dim codes; "
         "set model.lfq_entropy_weight=0 or use fewer bits.")
    need(m.lfq_entropy_weight >= 0 and m.lfq_commitment_weight >= 0
         and m.lfq_temperature > 0,
         f"model.lfq_entropy_weight={m.lfq_entropy_weight}, lfq_commitment_weight="
         f"{m.lfq_commitment_weight} must be >= 0 and lfq_temperature="
         f"{m.lfq_temperature} > 0.")
  else:
    g = m.num_groups
    need(isinstance(g, int) and g >= 1, f"model.num_groups={g!r} must be an int >= 1.")
    for field in ("num_codes", "code_dim", "channels"):
      need(m[field] % g == 0,
           f"model.{field}={m[field]} is not divisible by model.num_groups={g}; "
           f"each group takes {field} / num_groups (e.g. num_codes=128, num_groups=2: "
           "2 codebooks of 64).")
    need(m.num_codes // g >= 2, f"model.num_codes={m.num_codes} / num_groups={g} must be "
         ">= 2 codes per group.")
    need(m.group_quantizer in GROUP_QUANTIZERS,
         f"model.group_quantizer={m.group_quantizer!r}; use one of {GROUP_QUANTIZERS}.")
    need(not m.factorized_codes,
         "model.factorized_codes=True with quantizer='grouped': the factorized Dense "
         "projections would mix the groups; set model.factorized_codes=False.")
    p = [float(x) for x in m.group_drop_probs]
    need(not p or (p[0] == 0.0 and all(b >= a for a, b in zip(p, p[1:]))
                   and all(0.0 <= x <= 1.0 for x in p)),
         f"model.group_drop_probs={tuple(m.group_drop_probs)} must be non-decreasing in "
         "[0, 1] with the first 0 (only suffixes of groups are dropped).")
    need(m.group_dropout_scope in DROPOUT_SCOPES,
         f"model.group_dropout_scope={m.group_dropout_scope!r}; use one of {DROPOUT_SCOPES}.")


def _validate_ema(m, need) -> None:
  """quantizer 'ema', 'learned' or 'grouped' (the EMA fields for its sub-quantizers)."""
  estimator = m.get("gradient_estimator", "ste")
  need(estimator in GRADIENT_ESTIMATORS,
       f"model.gradient_estimator={estimator!r}; use one of {GRADIENT_ESTIMATORS}.")
  quantizer = m.get("quantizer", "ema")
  learned = quantizer == "learned" or (quantizer == "grouped"
                                       and m.group_quantizer == "learned")
  need(learned or not m.get("l2_normalize", False),
       "model.l2_normalize=True needs a learned codebook: quantizer='learned', or "
       "quantizer='grouped' with group_quantizer='learned'.")
  need(0.0 < m.decay < 1.0, f"model.decay={m.decay} must be in (0, 1).")
  need(m.eps > 0, f"model.eps={m.eps} must be > 0.")
  need(m.beta >= 0, f"model.beta={m.beta} must be >= 0.")
  need(m.reset_threshold >= 0,
       f"model.reset_threshold={m.reset_threshold} must be >= 0 (0: no dead-code reset).")
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
  need(not m.search_chunk_size or all(k % m.search_chunk_size == 0 for k in codebook_sizes(m)),
       f"model.search_chunk_size={m.search_chunk_size} must divide "
       f"model.num_codes={m.num_codes} (or be 0).")


MODES = ("train", "eval", "encode", "decode", "reconstruct")


def validate_mode(config: ml_collections.ConfigDict, mode: str) -> None:
  """Clear errors for the settings a --mode needs (after `validate`)."""
  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config for --mode={mode}: {msg}")

  need(mode in MODES, f"unknown mode; use one of {MODES}.")
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
