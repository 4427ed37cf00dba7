"""Building blocks of the experiment configs in `configs/`.

A config holds everything a run needs (data, model, optimizer, steps, seeds,
cadences). The paper's models are built here once; the single-level model is
always *derived* from the hierarchical one through `capacity.py`, never typed.
The data section is `data_config.py`'s, the HQ-VAE configs are in
`hqvae_configs.py`; `validate` checks a whole config before anything compiles.
"""

from __future__ import annotations

import math

import ml_collections

from vqjax import capacity, losses
from vqjax.data_config import default_data_config, validate_data
from vqjax.models import hqvae
from vqjax.models.factory import HQVAE_KINDS, check_buildable, codebook_sizes
from vqjax.quantizers import code_search, ema_vq, fsq, gradients, grouped, lfq, stochastic

# Evaluation sums a dense float32 histogram of every level's index space on the
# device (and an int64 copy on the host): at most 2^24 codes, 64 MiB per level.
MAX_HISTOGRAM_CODES = 2**24

LR_SCHEDULES = ("exponential", "plateau")

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
      plateau_factor=0.5,       # plateau: lr *= factor after plateau_patience validation rounds
      plateau_patience=3,       #   (every eval_every steps) whose validation MSE is not below
      plateau_rtol=1e-4,        #   (1 - plateau_rtol) * best (state.plateau_rule)
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

def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks `config` in place to its smoke size (big_vision's `runlocal`).

  2 steps at tiny width on 32x32 crops of the built-in photos (any data set
  of the config is replaced, so it runs offline in seconds on CPU); model
  kind, quantizer and the other options stay as configured; with the
  'plateau' schedule an evaluation after each step feeds the rule. Every config
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
  if t.get("lr_schedule", "exponential") == "plateau":
    t.eval_every = 1  # the plateau rule needs validation rounds
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
  """Clear errors for config values that cannot work (before anything compiles).

  The checks of a library class's own settings are that module's (e.g.
  `ema_vq.check_settings`), run here with the config keys in the messages.
  """
  m, d, t = config.model, config.data, config.train

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config: {msg}")

  check_buildable(m)
  quantizer = m.get("quantizer", "ema")
  if quantizer in ("fsq", "lfq", "grouped"):
    _validate_codebook_free_or_grouped(m, quantizer, need)
  if m.kind in HQVAE_KINDS:
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
    _checked(stochastic.check_settings, eval_mode=m.sq_eval_mode, tau0=m.sq_tau0,
             tau_rate=m.sq_tau_rate, tau_min=m.sq_tau_min,
             variance_offset=m.sq_variance_offset, key=lambda name: f"model.sq_{name}")
  elif quantizer in ("ema", "learned", "grouped"):
    _validate_ema(m, need)
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
    need(0 < t.plateau_factor < 1 and t.plateau_patience >= 1 and 0 < t.plateau_rtol <= 1,
         f"train.plateau_factor={t.plateau_factor} must be in (0, 1), plateau_patience="
         f"{t.plateau_patience} >= 1 and plateau_rtol={t.plateau_rtol} in (0, 1].")
    need(t.get("eval_every", 0) > 0 or t.get("eval_every_epochs", 0) > 0,
         "train.lr_schedule='plateau' watches the validation loss of each evaluation: "
         "set train.eval_every (steps) or train.eval_every_epochs > 0.")
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


def _model_key(name: str) -> str:
  return f"model.{name}"


def _checked(check, *args, **kwargs) -> None:
  """Runs a library module's check of its settings; its ValueError as a config error."""
  try:
    check(*args, **kwargs)
  except ValueError as e:
    raise ValueError(f"bad config: {e}") from None


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
    _checked(hqvae.check_injected_layers, m.num_layers, m.num_pools, key=_model_key)
    need(not m.shared_codebook, "model.shared_codebook=True is for kind 'residual_topdown'.")
  if m.shared_codebook:
    _checked(hqvae.check_shared_codebook, codebook_sizes(m), key=_model_key)


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
    _checked(lfq.check_settings, code_dim=m.code_dim, entropy_weight=m.lfq_entropy_weight,
             commitment_weight=m.lfq_commitment_weight, temperature=m.lfq_temperature,
             key=lambda name: f"model.{'' if name == 'code_dim' else 'lfq_'}{name}")
  else:
    g = m.num_groups
    need(isinstance(g, int) and g >= 1, f"model.num_groups={g!r} must be an int >= 1.")
    _checked(grouped.check_settings, num_groups=g, num_codes=m.num_codes,
             code_dim=m.code_dim, drop_probs=m.group_drop_probs,
             dropout_scope=m.group_dropout_scope,
             key=lambda name: f"model.{'group_' if name.startswith('drop') else ''}{name}")
    need(m.channels % g == 0,
         f"model.channels={m.channels} is not divisible by model.num_groups={g}: the "
         "grouped projections around the quantizer keep the groups apart.")
    need(m.num_codes // g >= 2, f"model.num_codes={m.num_codes} / num_groups={g} must be "
         ">= 2 codes per group.")
    need(not m.factorized_codes,
         "model.factorized_codes=True with quantizer='grouped': the factorized Dense "
         "projections would mix the groups; set model.factorized_codes=False.")


def _validate_ema(m, need) -> None:
  """quantizer 'ema', 'learned' or 'grouped' (the EMA fields for its sub-quantizers)."""
  _checked(gradients.check_estimator, m.get("gradient_estimator", "ste"), key=_model_key)
  quantizer = m.get("quantizer", "ema")
  learned = quantizer == "learned" or (quantizer == "grouped"
                                       and m.group_quantizer == "learned")
  need(learned or not m.get("l2_normalize", False),
       "model.l2_normalize=True needs a learned codebook: quantizer='learned', or "
       "quantizer='grouped' with group_quantizer='learned'.")
  _checked(ema_vq.check_settings, decay=m.decay, eps=m.eps, beta=m.beta,
           codebook_init=m.codebook_init, kmeans_iters=m.kmeans_iters,
           reset_threshold=m.reset_threshold, reset_window=m.reset_window,
           reset_rule=m.reset_rule, reset_criterion=m.reset_criterion, key=_model_key)
  groups = m.num_groups if quantizer == "grouped" else 1
  key = _model_key if groups == 1 else (
      lambda name: "model.num_codes / num_groups" if name == "num_codes" else _model_key(name))
  for k in codebook_sizes(m):  # a grouped level searches K / G codes per group
    _checked(code_search.check_chunk_size, m.search_chunk_size, k // groups, key=key)


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
