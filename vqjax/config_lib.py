"""Building blocks of the experiment configs in `configs/`.

A config holds everything a run needs (data, model, optimizer, steps, seeds,
cadences). The paper's models are built here once; the single-level model is
always *derived* from the hierarchical one through `capacity.py`, never typed.
The data section is `data_config.py`'s, the HQ-VAE configs are in
`hqvae_configs.py`; `validate` checks a whole config before anything compiles.
"""

from __future__ import annotations

import os
import re

import ml_collections

from vqjax import capacity, losses
from vqjax.data_config import default_data_config, validate_data
from vqjax.models import discriminator, hqvae
from vqjax.models.factory import (HQVAE_KINDS, SEMANTICIST, check_buildable, is_continuous,
                                  layer_codebook_sizes, level_quantizers, num_groups)
from vqjax.perceptual import FID_NETWORKS, LPIPS_NETWORKS
from vqjax.quantizers import registry

# Evaluation sums a dense float32 histogram of every level's index space on the
# device (and an int64 copy on the host): at most 2^24 codes, 64 MiB per level.
MAX_HISTOGRAM_CODES = 2**24

LR_SCHEDULES = ("exponential", "plateau")

# Paper, Sec. 4: C_h = 128 at both levels; single-level C_s follows from Eq. 4.
PAPER_HIER_CHANNELS = 128


def quantizer_config(kind: str = "ema", **fields) -> ml_collections.ConfigDict:
  """config.model.quantizer: `kind` and only that quantizer's fields, its
  class's defaults unless given (vqjax.quantizers.registry; docs/QUANTIZERS.md).

  Kinds: 'ema' (VectorQuantizerEMA: the paper's EMA codebook, data init,
  windowed dead-code reset), 'learned' (codebook in params), 'stochastic'
  (SQ-VAE, HQ-VAE), 'grouped' (MGVQ; `group_quantizer` is the nested config of
  its per-group quantizer), 'fsq', 'lfq', 'residual' (RQ; `stage_quantizer`
  nested). E.g. quantizer_config('fsq', levels=(8, 5, 5, 5)).
  """
  return registry.default_config(kind, **fields)


# The flat quantizer fields config.model had before model.quantizer became a
# ConfigDict: field prefix -> kind, and the grouped fields' new names.
_FLAT_PREFIXES = {"sq_": "stochastic", "fsq_": "fsq", "lfq_": "lfq"}
_FLAT_GROUPED = {"num_groups": "num_groups", "group_dropout": "group_dropout",
                 "group_drop_probs": "drop_probs", "group_dropout_scope": "dropout_scope",
                 "group_quantizer": "group_quantizer.kind"}


def _flat_field(field: str) -> tuple[str | None, str] | None:
  """(kind or None for the EMA/learned fields, nested field) of a flat model field."""
  for prefix, kind in _FLAT_PREFIXES.items():
    if field.startswith(prefix) and field[len(prefix):] in registry.configurable_fields(kind):
      return kind, field[len(prefix):]
  if field in _FLAT_GROUPED:
    return "grouped", _FLAT_GROUPED[field]
  codebook_fields = {**registry.configurable_fields("ema"),
                     **registry.configurable_fields("learned")}
  return (None, field) if field in codebook_fields else None


def renamed_key(key: str) -> str | None:
  """Where a flat quantizer key of config.model went ('model.sq_tau0' ->
  "model.quantizer.tau0 (kind 'stochastic')"), or None if `key` is not one."""
  head, _, field = key.partition(".")
  if head != "model" or "." in field:
    return None
  if field == "quantizer":
    return ("model.quantizer.kind (switch kinds with the config option quantizer=KIND, "
            "e.g. --config=configs/default.py:quantizer=fsq)")
  found = _flat_field(field)
  if found is None:
    return None
  kind, new = found
  if kind is None:
    return (f"model.quantizer.{new} (kinds 'ema'/'learned'; model.quantizer."
            f"group_quantizer.{new} or stage_quantizer.{new} inside 'grouped'/'residual')")
  return f"model.quantizer.{new} (kind {kind!r})"


def upgrade_model_config(model: dict) -> dict:
  """A config.model dict with the flat quantizer fields (runs before
  model.quantizer was nested) -> the nested form; others are returned as is."""
  if isinstance(model.get("quantizer", {}), dict):
    return model
  model = dict(model)
  kind = model.pop("quantizer")
  moved = {f: model.pop(f) for f in list(model) if _flat_field(f) is not None}
  quantizer = registry.default_config(kind).to_dict()
  sub_kind = moved.pop("group_quantizer", "ema")
  if kind == "grouped":
    quantizer["group_quantizer"] = registry.default_config(sub_kind).to_dict()
  for field, value in moved.items():
    owner, new = _flat_field(field)
    target = quantizer["group_quantizer"] if kind == "grouped" and owner is None else quantizer
    if (owner in (None, kind)) and new in target:
      target[new] = list(value) if isinstance(value, tuple) else value
  model["quantizer"] = quantizer
  return model


def unknown_key_message(error: Exception | None, argv: list[str],
                        renamed_only: bool = False) -> str | None:
  """A one-line message for an unknown `--config.<key>` override (naming the
  new key of a flat quantizer key, else the closest valid key), or None."""
  given = [a.split("=")[0].removeprefix("--config.") for a in argv
           if a.startswith("--config.")]
  for key in given:
    new = renamed_key(key)
    if new is not None:
      return f"--config.{key} is now --config.{new}."
  if renamed_only:
    return None
  found = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', str(error))
  if found is None:
    return None
  closest, bad = found.groups()
  key = next((g for g in given if g.split(".")[-1] == bad), bad)
  parent = key.rpartition(".")[0]
  return (f"unknown config key --config.{key}; the closest valid key is "
          f"--config.{parent + '.' if parent else ''}{closest}.")


def run_app(app_main) -> None:
  """absl's app.run(app_main), a bad `--config.<key>` override a one-line error
  (unknown_key_message) instead of a traceback: a flat quantizer key of before
  model.quantizer was nested is named before the flags are parsed (absl would
  stop on it with a parse error first). For `__main__` blocks."""
  import sys  # pylint: disable=import-outside-toplevel
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  renamed = unknown_key_message(None, sys.argv, renamed_only=True)
  if renamed:
    sys.exit(f"error: {renamed}")
  try:
    app.run(app_main)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    message = None if flags.FLAGS.is_parsed() else unknown_key_message(e, sys.argv)
    if message is None:
      raise
    sys.exit(f"error: {message}")


def hierarchical_model(num_codes: int, code_dim: int,
                       conditioned: bool = False) -> ml_collections.ConfigDict:
  """The paper's two-level model: C_h = 128, K_h codes of dimension D_h per level."""
  return ml_collections.ConfigDict(dict(
      kind="hierarchical", conditioned=conditioned,
      channels=PAPER_HIER_CHANNELS, res_channels=0, num_res_blocks=2,
      factorized_codes=False,  # True: the released code's C -> D -> C projections
      num_codes=num_codes, code_dim=code_dim, dtype="float32",
      quantizer=quantizer_config("ema")))


def single_model(hier_num_codes: int, hier_code_dim: int, image_size: int,
                 code_dim: int | None = None) -> ml_collections.ConfigDict:
  """The single-level model matched to `hierarchical_model(...)` (Eq. 4, Eq. 5)."""
  return capacity.matched_single_level(
      hierarchical_model(hier_num_codes, hier_code_dim), image_size, code_dim)


def default_loss_config() -> ml_collections.ConfigDict:
  """config.loss: LPIPS and PatchGAN terms of the generator's loss (0 = off)."""
  return ml_collections.ConfigDict(dict(
      lpips_weight=0.0,         # > 0: + lpips_weight * LPIPS(x, x_hat) (mean over images)
      lpips_network="alex",     # 'alex' | 'vgg' (vqjax/perceptual/lpips.py)
      gan_weight=0.0,           # > 0: a PatchGAN discriminator; its term's weight (VQGAN's
                                #   discriminator_weight, times the adaptive weight)
      gan_loss="hinge",         # 'hinge' | 'non_saturating' (vqjax/losses.py)
      gan_start_step=0,         # before this step: no adversarial term, discriminator frozen
      adaptive_weight=True,     # VQGAN Eq. 7: ||grad L_rec|| / (||grad L_G|| + 1e-4) at
                                #   the decoder's last layer, clipped to [0, 1e4]
      disc_channels=64,         # PatchGAN width C (layers: C, 2C, 4C, 8C at most)
      disc_layers=3,            # stride-2 convolutions (logits at 1/2^layers, minus 2)
      disc_norm="group",        # 'group' (GroupNorm, per image) | 'none'; not BatchNorm
      disc_learning_rate=3e-4,  # Adam, constant
      disc_b1=0.5,              # Adam betas of VQGAN's discriminator
      disc_b2=0.9,
  ))


def loss_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.loss with every field (configs and runs from before it have none: all off)."""
  merged = default_loss_config()
  merged.update(config.get("loss", {}) or {})
  return merged
def semanticist_model(image_size: int = 32) -> ml_collections.ConfigDict:
  """The SEMANTICIST tokenizer at CPU size (notes, section 7; docs/SEMANTICIST.md).

  Causal ViT encoder (patch 4, width 64, 4 blocks, 4 heads) to T = num_tokens
  tokens of D = code_dim channels, continuous (quantizer kind 'continuous';
  any vqjax quantizer kind quantizes them instead, num_codes K for the VQ
  kinds); DiT decoder (`decoder`: patch, width, depth, heads; the linear
  schedule of num_timesteps steps from beta_start to beta_end; `prediction`
  'v' (default; 'eps' is the released code's, diffusion.py); DDIM with
  sample_steps steps from x_T of sample_seed, x0 clipped, guidance_scale w);
  nested CFG (`nested`: all-null share null_prob, nesting from start_step).
  The train step's reconstruction term is off (train.reconstruction_loss
  'none'): the diffusion loss is the objective.
  """
  return ml_collections.ConfigDict(dict(
      kind=SEMANTICIST, image_size=image_size, patch_size=4, width=64, depth=4,
      num_heads=4, mlp_ratio=4, num_tokens=32, code_dim=8, normalize_tokens=True,
      num_codes=1024, dtype="float32", quantizer=ml_collections.ConfigDict(dict(kind="continuous")),
      decoder=ml_collections.ConfigDict(dict(
          patch_size=4, width=64, depth=4, num_heads=4, num_timesteps=1000,
          beta_start=1e-4, beta_end=0.02, prediction="v", sample_steps=25, clip_x0=True,
          guidance_scale=1.0, sample_seed=0)),
      nested=ml_collections.ConfigDict(dict(null_prob=0.1, start_step=0))))


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
      steps_per_epoch=0,        # 0: examples per epoch / global batch (docs/CONFIG.md)
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

  # Perceptual and adversarial training losses (docs/PERCEPTUAL.md): all off by
  # default, and then the train state and step are exactly those without them.
  c.loss = default_loss_config()

  c.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      checkpoint_step=-1,       # -1: latest
      num_grid_images=8,
      # Perceptual metrics, computed in the eval step (vqjax/perceptual; docs/EVALUATION.md).
      # Measured on configs/default.py (BENCHMARKS.md): LPIPS (AlexNet) adds 14-20% to an
      # evaluation's wall time, under the 20% that earns a default; with the FID stand-in 23-33%.
      lpips="alex",             # LPIPS network: 'alex' | 'vgg' | '' (off)
      fid="",                   # Fréchet distance features: 'lpips_alex' (offline stand-in) |
                                #   'lpips_vgg' | 'inception_v3' (needs inception_weights) | '' (off)
      inception_weights="",     # .npz of pytorch-fid's Inception-v3 (scripts/inception_npz.py)
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
# that end point: model.quantizer.tau_rate = HQVAE_TAU_EXPONENT / train.num_steps.
HQVAE_TAU_EXPONENT = 1.25

def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks `config` in place to its smoke size (big_vision's `runlocal`).

  2 steps at tiny width on 32x32 crops of the built-in photos (any data set
  of the config is replaced, so it runs offline in seconds on CPU); model
  kind, quantizer and the other options stay as configured; with the
  'plateau' schedule an evaluation after each step feeds the rule. Every config
  file offers it as `get_config('smoke')` (tests/test_configs.py trains each).
  A prior config (`is_prior_config`) gets `prior_smoke` instead.
  """
  if is_prior_config(config):
    return prior_smoke(config)
  m, t = config.model, config.train
  if m.kind == SEMANTICIST:
    m.image_size, m.width, m.depth, m.num_heads, m.num_tokens = 32, 32, 1, 2, 4
    m.patch_size = m.decoder.patch_size = 8
    m.decoder.width, m.decoder.depth, m.decoder.num_heads = 32, 1, 2
    m.decoder.sample_steps = 2
    if "first_k_tokens" in config.eval:
      config.eval.first_k_tokens = ()
  elif m.kind in HQVAE_KINDS:
    m.channels, m.code_dim = 8, 8
  else:
    m.channels = 16
  if m.kind != SEMANTICIST:
    m.num_res_blocks = 1
  config.data = default_data_config()
  config.data.image_size = 32
  config.data.batch_size = config.eval.batch_size = 8
  t.num_steps, t.log_every, t.checkpoint_every, t.eval_every = 2, 1, 2, 0
  t.num_epochs = t.eval_every_epochs = 0
  if t.get("lr_schedule", "exponential") == "plateau":
    t.eval_every = 1  # the plateau rule needs validation rounds
  t.steps_per_epoch = 0
  if m.quantizer.kind == "stochastic":
    m.quantizer.tau_rate = HQVAE_TAU_EXPONENT / t.num_steps
  config.eval.num_grid_images = 4
  if "loss" in config:
    config.loss.disc_channels = 8
  return config


QUANTIZER_OPTION = "quantizer="


def config_options(arg: str | None, allowed: tuple[str, ...], path: str) -> list[str]:
  """'a,b' -> ['a', 'b'] for `get_config(arg)`, the one option parser of configs/.

  Every config also takes 'smoke' (`smoke`) and 'quantizer=KIND' (the model's
  quantizer replaced by KIND's defaults); `apply_options` applies those two.
  Unknown options are an error that lists the allowed ones.
  """
  options = [o.strip() for o in (arg or "").split(",") if o.strip()]
  allowed = tuple(dict.fromkeys((*allowed, "smoke")))
  unknown = sorted(o for o in set(options) - set(allowed)
                   if not o.startswith(QUANTIZER_OPTION))
  if unknown:
    raise ValueError(f"{path}: unknown option(s) {unknown}; choose from {allowed} or "
                     f"quantizer=KIND, e.g. --config={path}:{allowed[0]}.")
  for o in options:
    if o.startswith(QUANTIZER_OPTION) and o[len(QUANTIZER_OPTION):] not in registry.KINDS:
      raise ValueError(f"{path}: option {o!r}; the quantizer kinds are "
                       f"{tuple(registry.KINDS)}, e.g. --config={path}:quantizer=fsq.")
  return options


def apply_options(config: ml_collections.ConfigDict,
                  options: list[str]) -> ml_collections.ConfigDict:
  """The options every config takes, in place: 'quantizer=KIND', then 'smoke'."""
  for o in options:
    if o.startswith(QUANTIZER_OPTION) and is_prior_config(config):
      raise ValueError(f"option {o!r} sets a tokenizer's quantizer; a prior config has "
                       "none (its codes come from --config.prior.codes).")
    if o.startswith(QUANTIZER_OPTION):
      kind = o[len(QUANTIZER_OPTION):]
      config.model.quantizer = quantizer_config(kind)
      if kind == "fsq":
        config.model.code_dim = len(config.model.quantizer.levels)
      if kind == "stochastic":  # the temperature's end point of HQ-VAE's runs
        config.model.quantizer.tau_rate = HQVAE_TAU_EXPONENT / config.train.num_steps
  if "smoke" in options:
    smoke(config)
  return config


# Where a mode of vqjax.main writes its config: training writes the run's own
# (WORKDIR/config.json, which vqjax.load and resumption read); every other mode
# writes beside its outputs and leaves the run's as it was trained.
CONFIG_FILES = {"train": "config.json", "eval": "eval/config.json",
                "sample": "samples/config.json"}


def write_config(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes `config` as JSON to `path` (its directory made)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def validate(config: ml_collections.ConfigDict) -> None:
  """Clear errors for config values that cannot work (before anything compiles).

  A quantizer's own settings are checked by the quantizer (`registry.check`),
  run here with the config keys in the messages. A prior config
  (`is_prior_config`) is checked by `validate_prior`.
  """
  if is_prior_config(config):
    return validate_prior(config)
  m, d, t = config.model, config.data, config.train

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config: {msg}")

  check_buildable(m)
  if m.kind == SEMANTICIST:
    _validate_semanticist(m, d, need)
    ks = tuple(config.eval.get("first_k_tokens", ()))
    need(all(1 <= int(k) <= m.num_tokens for k in ks),
         f"eval.first_k_tokens={ks} must lie in [1, model.num_tokens={m.num_tokens}] "
         "(() = every k).")
  elif m.kind in HQVAE_KINDS:
    _validate_hqvae(m, d, need)
  else:
    need(d.image_size > 0 and d.image_size % 8 == 0,
         f"data.image_size={d.image_size} must be a positive multiple of 8 "
         "(the hierarchical top level is at 1/8 resolution).")
    need(isinstance(m.num_codes, int),
         f"model.num_codes={m.num_codes!r} must be one int for kind {m.kind!r}.")
  need(m.code_dim >= 1, f"model.code_dim={m.code_dim} must be >= 1.")
  if m.kind != SEMANTICIST:
    need(m.channels >= 2 and m.channels % 2 == 0,
         f"model.channels={m.channels} must be an even number >= 2.")
  if not is_continuous(m):
    _validate_quantizer(m, need)
  recon = t.get("reconstruction_loss", "mse")
  need(recon in losses.RECONSTRUCTION_LOSSES,
       f"train.reconstruction_loss={recon!r}; use one of {losses.RECONSTRUCTION_LOSSES}.")
  need((recon == "none") == (m.kind == SEMANTICIST),
       f"train.reconstruction_loss={recon!r} with model.kind={m.kind!r}: 'none' (no "
       "reconstruction term, the model's own losses are the objective) is the "
       f"{SEMANTICIST!r} kind's, whose diffusion loss replaces it; the others need one.")
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
  if "eval" in config:
    _validate_perceptual(config.eval, need)
  _validate_loss(config, need)


# The model kinds whose decoder's last layer (vqvae.LAST_LAYER) the adaptive weight reads.
PERCEPTUAL_LOSS_KINDS = ("single", "hierarchical")


def _validate_loss(config, need) -> None:
  """config.loss: weights, names, the discriminator's size against the image size."""
  l, m = loss_config(config), config.model
  need(l.lpips_weight >= 0 and l.gan_weight >= 0,
       f"loss.lpips_weight={l.lpips_weight} and loss.gan_weight={l.gan_weight} must be "
       ">= 0 (0 = off).")
  if not (l.lpips_weight or l.gan_weight):
    return
  need(m.kind in PERCEPTUAL_LOSS_KINDS,
       f"loss.lpips_weight / loss.gan_weight with model.kind={m.kind!r}: the perceptual "
       f"and adversarial losses are for the kinds {PERCEPTUAL_LOSS_KINDS}.")
  need(config.train.get("reconstruction_loss", "mse") != "gaussian_nll",
       "loss.lpips_weight / loss.gan_weight with train.reconstruction_loss='gaussian_nll' "
       "(a learned decoder variance) is not supported.")
  if l.lpips_weight:
    need(l.lpips_network in LPIPS_NETWORKS and l.lpips_network,
         f"loss.lpips_network={l.lpips_network!r}; use one of {LPIPS_NETWORKS[1:]}.")
  if not l.gan_weight:
    return
  need(l.gan_loss in losses.GAN_LOSSES,
       f"loss.gan_loss={l.gan_loss!r}; use one of {losses.GAN_LOSSES}.")
  need(l.gan_start_step >= 0, f"loss.gan_start_step={l.gan_start_step} must be >= 0.")
  need(isinstance(l.adaptive_weight, bool),
       f"loss.adaptive_weight={l.adaptive_weight!r} must be True or False.")
  need(l.disc_norm in discriminator.NORMS,
       f"loss.disc_norm={l.disc_norm!r}; use one of {discriminator.NORMS} (BatchNorm is "
       "not offered: its batch statistics would make the step depend on the device count).")
  need(l.disc_channels >= 1 and l.disc_layers >= 1,
       f"loss.disc_channels={l.disc_channels} and loss.disc_layers={l.disc_layers} "
       "must be >= 1.")
  size, layers = config.data.image_size, l.disc_layers
  need(size % 2 ** layers == 0 and discriminator.logits_size(size, layers) >= 1,
       f"loss.disc_layers={layers} at data.image_size={size}: the discriminator halves the "
       f"image {layers} times (the side must divide by 2^{layers}) and ends 2 smaller, "
       f"leaving {discriminator.logits_size(size, layers)} logits per side; use fewer layers.")
  need(l.disc_learning_rate > 0,
       f"loss.disc_learning_rate={l.disc_learning_rate} must be > 0.")
  need(0 <= l.disc_b1 < 1 and 0 <= l.disc_b2 < 1,
       f"loss.disc_b1={l.disc_b1} and loss.disc_b2={l.disc_b2} must be in [0, 1).")


def _validate_perceptual(e, need) -> None:
  """config.eval's LPIPS network and Fréchet-distance features (vqjax/perceptual)."""
  lp, fid, weights = e.get("lpips", ""), e.get("fid", ""), e.get("inception_weights", "")
  need(lp in LPIPS_NETWORKS, f"eval.lpips={lp!r}; use one of {LPIPS_NETWORKS} ('' = off).")
  need(fid in FID_NETWORKS, f"eval.fid={fid!r}; use one of {FID_NETWORKS} ('' = off).")
  if fid == "inception_v3":
    need(bool(weights) and os.path.isfile(os.path.expanduser(weights)),
         f"eval.fid='inception_v3' needs eval.inception_weights, the .npz of pytorch-fid's "
         f"Inception-v3 (got {weights!r}; scripts/inception_npz.py makes it, "
         "docs/EVALUATION.md says where the weights come from).")


def _model_key(name: str) -> str:
  return f"model.{name}"


def _checked(check, *args, **kwargs) -> None:
  """Runs a library module's check of its settings; its ValueError as a config error."""
  try:
    check(*args, **kwargs)
  except ValueError as e:
    raise ValueError(f"bad config: {e}") from None


def _validate_semanticist(m, d, need) -> None:
  dec = m.decoder
  need(m.image_size == d.image_size,
       f"model.image_size={m.image_size} must equal data.image_size={d.image_size} (the "
       "encoder's position embedding and the decoder's canvas have that size).")
  for key, p in (("model.patch_size", m.patch_size), ("model.decoder.patch_size", dec.patch_size)):
    need(p >= 1 and d.image_size % p == 0,
         f"{key}={p} must divide data.image_size={d.image_size}.")
  need(dec.width % 4 == 0, f"model.decoder.width={dec.width} must be divisible by 4 "
       "(the 2D sin-cos position embedding).")
  for key, width, heads in (("model", m.width, m.num_heads),
                            ("model.decoder", dec.width, dec.num_heads)):
    need(heads >= 1 and width % heads == 0,
         f"{key}.width={width} must be divisible by {key}.num_heads={heads}.")
  need(m.num_tokens >= 1 and m.depth >= 1 and dec.depth >= 1,
       f"model.num_tokens={m.num_tokens}, model.depth={m.depth} and model.decoder.depth="
       f"{dec.depth} must be >= 1.")
  need(1 <= dec.sample_steps <= dec.num_timesteps,
       f"model.decoder.sample_steps={dec.sample_steps} must be in [1, "
       f"model.decoder.num_timesteps={dec.num_timesteps}].")
  need(0 < dec.beta_start < dec.beta_end < 1,
       f"model.decoder.beta_start={dec.beta_start} and beta_end={dec.beta_end} must "
       "satisfy 0 < beta_start < beta_end < 1.")
  need(dec.prediction in ("eps", "v"),
       f"model.decoder.prediction={dec.prediction!r}; use 'eps' (the released code's) or 'v'.")
  need(dec.guidance_scale >= 0, f"model.decoder.guidance_scale={dec.guidance_scale} "
       "must be >= 0 (1: no guidance).")
  need(0 <= m.nested.null_prob < 1 and m.nested.start_step >= 0,
       f"model.nested.null_prob={m.nested.null_prob} must be in [0, 1) and "
       f"model.nested.start_step={m.nested.start_step} >= 0.")


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
    _checked(hqvae.check_shared_codebook, layer_codebook_sizes(m), key=_model_key)


def _validate_quantizer(m, need) -> None:
  """The quantizer's own check (registry.check, once per distinct K), then
  how it fits the model: input width, histogram size, grouped projections."""
  for k in sorted(set(layer_codebook_sizes(m))):
    need(k >= 2, f"model.num_codes={m.num_codes} must be >= 2 (every level).")
    _checked(registry.check, m.quantizer, k, m.code_dim)
  kind = m.quantizer.kind
  for level, q in level_quantizers(m).items():
    need(q.code_dim == m.code_dim,
         f"model.code_dim={m.code_dim} with model.quantizer.kind={kind!r}, which quantizes "
         f"{q.code_dim} channels: set model.code_dim={q.code_dim}.")
    need(q.histogram_size <= MAX_HISTOGRAM_CODES,
         f"model.quantizer.kind={kind!r} has an index space of {q.histogram_size} codes at "
         f"level {level!r}; evaluation's dense histogram holds at most "
         f"{MAX_HISTOGRAM_CODES} (2^24, 64 MiB): use fewer codes (bits, levels).")
  g = num_groups(m)
  if g > 1:
    need(m.channels % g == 0,
         f"model.channels={m.channels} is not divisible by model.quantizer.num_groups={g}: "
         "the grouped projections around the quantizer keep the groups apart.")
    need(not m.factorized_codes,
         "model.factorized_codes=True with model.quantizer.kind='grouped': the factorized "
         "Dense projections would mix the groups; set model.factorized_codes=False.")


MODES = ("train", "eval", "encode", "decode", "reconstruct", "sample")
PRIOR_MODES = ("train", "eval", "sample")


def validate_mode(config: ml_collections.ConfigDict, mode: str) -> None:
  """Clear errors for the settings a --mode needs (after `validate`)."""
  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config for --mode={mode}: {msg}")

  need(mode in MODES, f"unknown mode; use one of {MODES}.")
  if is_prior_config(config):
    need(mode in PRIOR_MODES, f"a prior config (configs/prior.py) runs the modes "
         f"{PRIOR_MODES}; --mode={mode} is for a tokenizer's config.")
    validate_prior_files(config, mode)
    return
  need(mode != "sample", "--mode=sample samples a prior on the codes: "
       "--config=configs/prior.py (docs/PRIOR.md).")
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


# -- the prior on the codes (vqjax.prior, docs/PRIOR.md) ------------------------------

ENCODE_HINT = ("python -m vqjax.main --config=CONFIG --workdir=TOKENIZER --mode=encode "
               "--config.encode.split={split} (written to "
               "TOKENIZER/codes/{split}.array_record)")
PRIOR_LR_SCHEDULES = ("cosine", "constant")


def prior_config() -> ml_collections.ConfigDict:
  """Everything a prior run needs: the codes, the transformer, its optimizer, sampling.

  No `model` or `data` section: the data are the codes files a tokenizer's
  --mode=encode wrote; `is_prior_config` tells the two kinds of config apart.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.compilation_cache_dir = "~/.cache/vqjax/jax_cache"
  c.prior = ml_collections.ConfigDict(dict(
      codes="",               # training codes: ArrayRecord of --mode=encode --config.encode.split=train
      validation_codes="",    # '' = validation.array_record in prior.codes' folder
      tokenizer="",           # the tokenizer's workdir: codebook sizes (config.json), samples decoded
      num_layers=4,           # pre-LN decoder blocks
      num_heads=4,
      width=128,              # token / position embedding and residual width
      mlp_ratio=4,            # MLP hidden width = mlp_ratio * width
      dropout=0.1,            # on embeddings, attention weights, attention and MLP outputs
  ))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=2000,
      batch_size=32,          # global, sharded over the devices
      learning_rate=3e-4,     # AdamW
      lr_schedule="cosine",   # 'cosine' (linear warm-up, then cosine to 0) | 'constant' (after warm-up)
      warmup_steps=100,
      weight_decay=0.01,      # AdamW, on the matrices only
      grad_clip=1.0,          # global norm; 0 = off
      log_every=50,
      eval_every=500,         # validation NLL every this many steps; 0 = only at the end
      checkpoint_every=500,
      keep_checkpoints=3,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=32,
      checkpoint_step=-1,     # --mode=eval / sample: -1 = latest
  ))
  c.sample = ml_collections.ConfigDict(dict(
      num_samples=16,         # after training and with --mode=sample; 0 = none
      temperature=1.0,        # 0 = greedy (argmax)
      top_k=0,                # > 0: sample among the k most likely codes; 1 = greedy
      seed=0,
      batch_size=16,          # samples drawn per compiled call
      output="",              # '' = <workdir>/samples
      fid="",                 # with a tokenizer: Fréchet distance of the decoded samples to
                              #   its validation images ('lpips_alex' stand-in | 'lpips_vgg'
                              #   | 'inception_v3' with eval.inception_weights); '' = off
  ))
  return c


def is_prior_config(config) -> bool:
  """A config of vqjax.prior (a `prior` section, no `model`)."""
  return "prior" in config and "model" not in config


def prior_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A prior config at smoke size, in place: a 2-layer, 32-wide transformer,
  3 steps at batch 8 (evaluation at 32), 2 samples; the codes stay those of prior.codes (any small
  codes file: a smoke tokenizer's --mode=encode writes one in seconds)."""
  p, t = config.prior, config.train
  p.num_layers, p.num_heads, p.width, p.mlp_ratio, p.dropout = 2, 2, 32, 2, 0.0
  t.num_steps, t.batch_size, t.warmup_steps = 3, 8, 1
  t.log_every, t.eval_every, t.checkpoint_every = 1, 0, 3
  config.eval.batch_size = 32
  config.sample.num_samples = config.sample.batch_size = 2
  return config


def prior_validation_codes(config: ml_collections.ConfigDict) -> str:
  """prior.validation_codes, or validation.array_record in prior.codes' folder."""
  p = config.prior
  if p.validation_codes:
    return p.validation_codes
  return os.path.join(os.path.dirname(p.codes), "validation.array_record")


def validate_prior_files(config: ml_collections.ConfigDict, mode: str = "train") -> None:
  """The codes files a prior's --mode=train / eval reads must exist (errors
  that say how to write them); --mode=sample reads only its workdir."""
  if mode == "sample":
    return
  p = config.prior

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config for --mode={mode}: {msg}")

  need(bool(p.codes), "pass the training codes: --config.prior.codes=PATH; write them "
       "with " + ENCODE_HINT.format(split="train") + ".")
  need(os.path.isfile(p.codes), f"prior.codes={p.codes!r}: no such file; write it with "
       + ENCODE_HINT.format(split="train") + ".")
  val = prior_validation_codes(config)
  need(os.path.isfile(val), f"prior.validation_codes={val!r}: no such file; pass "
       "--config.prior.validation_codes=PATH or write it with "
       + ENCODE_HINT.format(split="validation") + ".")


def validate_prior(config: ml_collections.ConfigDict) -> None:
  """Clear errors for a prior config's values, each naming its key (before
  anything compiles); `validate_mode` checks the codes files a mode reads."""
  p, t, e, s = config.prior, config.train, config.eval, config.sample

  def need(ok: bool, msg: str):
    if not ok:
      raise ValueError(f"bad config: {msg}")

  need(not p.tokenizer or os.path.isfile(os.path.join(p.tokenizer, "config.json")),
       f"prior.tokenizer={p.tokenizer!r} holds no config.json: pass the --workdir of "
       "the tokenizer run that wrote the codes (or '' to train without decoding).")
  need(p.num_layers >= 1, f"prior.num_layers={p.num_layers} must be >= 1.")
  need(p.num_heads >= 1 and p.width >= 1 and p.width % p.num_heads == 0,
       f"prior.width={p.width} must be a positive multiple of prior.num_heads={p.num_heads}.")
  need(p.mlp_ratio >= 1, f"prior.mlp_ratio={p.mlp_ratio} must be >= 1.")
  need(0 <= p.dropout < 1, f"prior.dropout={p.dropout} must be in [0, 1).")
  need(t.num_steps >= 1, f"train.num_steps={t.num_steps} must be >= 1.")
  need(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1.")
  need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0.")
  need(t.lr_schedule in PRIOR_LR_SCHEDULES,
       f"train.lr_schedule={t.lr_schedule!r}; use one of {PRIOR_LR_SCHEDULES}.")
  need(t.warmup_steps >= 0 and t.weight_decay >= 0 and t.grad_clip >= 0,
       f"train.warmup_steps={t.warmup_steps}, weight_decay={t.weight_decay} and "
       f"grad_clip={t.grad_clip} must be >= 0.")
  need(t.log_every >= 1 and t.checkpoint_every >= 1 and t.eval_every >= 0,
       "train.log_every and train.checkpoint_every must be >= 1, train.eval_every >= 0.")
  need(e.batch_size >= 1, f"eval.batch_size={e.batch_size} must be >= 1.")
  need(s.num_samples >= 0 and s.batch_size >= 1,
       f"sample.num_samples={s.num_samples} must be >= 0 and sample.batch_size="
       f"{s.batch_size} >= 1.")
  need(s.temperature >= 0, f"sample.temperature={s.temperature} must be >= 0 (0: greedy).")
  need(s.top_k >= 0, f"sample.top_k={s.top_k} must be >= 0 (0: off, 1: greedy).")
  fid_network = s.get("fid", "")
  need(fid_network in FID_NETWORKS, f"sample.fid={fid_network!r}; use one of {FID_NETWORKS}.")
  need(not fid_network or (p.tokenizer and s.num_samples != 1),
       f"sample.fid={fid_network!r} compares decoded samples with the tokenizer's validation "
       "images: set prior.tokenizer and sample.num_samples >= 2 (0: no samples), or "
       "sample.fid=''.")
