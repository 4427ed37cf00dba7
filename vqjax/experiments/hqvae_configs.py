"""HQ-VAE configs (Takida et al., TMLR 2024): the top-down networks of
vqjax/models/hqvae.py with their optimisation (App. F), for configs/hqvae/*.py.

The model fields beyond `hierarchical_model`'s are documented in
`hqvae_model`; docs/HQVAE.md describes the models and the sweep.
"""

from __future__ import annotations

import ml_collections

from vqjax.config_lib import (HQVAE_TAU_EXPONENT, apply_options, base_config, config_options,
                              quantizer_config)

HQVAE_OPTIONS = ("smoke", "ema", "shared", "noreset")


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
      quantizer=quantizer_config(quantizer)))


def hqvae_config(kind: str, num_codes, num_pools: int, num_steps: int,
                 steps_per_epoch: int = 0) -> ml_collections.ConfigDict:
  """HQ-VAE's optimisation (App. F) around an SQ model of `hqvae_model`.

  ARELBO reconstruction, no colour augmentation, Adam 1e-3 with betas (0.9,
  0.9), batch 32, the learning rate halved after 3 validation rounds without
  improvement of the validation MSE (`lr_schedule='plateau'`:
  state.plateau_rule, train.plateau_value), validation once per epoch (every
  steps_per_epoch steps, or eval_every_epochs=1), the temperature rate
  rescaled to num_steps.
  """
  c = base_config()
  c.model = hqvae_model(kind, "stochastic", num_codes, num_pools=num_pools)
  c.model.quantizer.tau_rate = HQVAE_TAU_EXPONENT / num_steps
  c.data.image_size = 32
  c.data.batch_size = 32
  c.data.color_augment = "off"  # the paper has none ('auto' turns it on for builtin)
  c.eval.batch_size = 32
  t = c.train
  t.num_steps, t.steps_per_epoch = num_steps, steps_per_epoch
  t.learning_rate, t.lr_decay_rate, t.adam_b2 = 1e-3, 1.0, 0.9
  t.reconstruction_loss, t.lr_schedule = "arelbo", "plateau"
  t.plateau_factor, t.plateau_patience, t.plateau_rtol = 0.5, 3, 1e-4
  if steps_per_epoch:
    t.eval_every = steps_per_epoch
  else:
    t.eval_every_epochs = 1
  return c


def cifar10_config(kind: str, num_codes, num_pools: int) -> ml_collections.ConfigDict:
  """HQ-VAE's CIFAR-10 runs (App. F, Table 5): `hqvae_config` for 100 epochs of
  1250 steps, the first 40k training images train and the last 10k validate,
  the paper's tau rate r = 1e-5 (ends at 0.29), one validation per epoch."""
  config = hqvae_config(kind, num_codes, num_pools=num_pools, num_steps=125_000,
                        steps_per_epoch=1250)
  config.data.name = "tfds"
  config.data.tfds_name = "cifar10"
  config.data.train_split = "train[:40000]"
  config.data.val_split = "train[40000:]"
  config.model.quantizer.tau_rate = 1e-5
  config.train.log_every = 250
  config.train.eval_every = 1250
  config.train.checkpoint_every = 12_500
  return config


def cpu_config(kind: str, num_codes, num_pools: int,
               num_steps: int = 300) -> ml_collections.ConfigDict:
  """A CIFAR-10 network at CPU scale: `hqvae_config` on 32x32 crops of the
  built-in photos at width 32 (the paper: 64), tau rescaled to num_steps. The
  3890 training crops give 122 steps per "epoch": 300 steps have validation
  rounds at 122, 244 and 300, too few for the plateau rule (patience 3) to
  halve the rate."""
  config = hqvae_config(kind, num_codes, num_pools=num_pools, num_steps=num_steps)
  config.data.name = "builtin"
  config.model.channels = 32
  config.train.log_every = 20
  config.train.checkpoint_every = 300
  return config


def apply_hqvae_options(config: ml_collections.ConfigDict, arg: str | None,
                        path: str = "configs/hqvae/*.py") -> ml_collections.ConfigDict:
  """Options of configs/hqvae/*.py, e.g. `--config=configs/hqvae/cpu_rsqvae.py:ema,shared`.

    ema      the deterministic baseline on the same network: EMA VQ (beta 0.25,
             decay 0.99, data init, dead-code reset), MSE reconstruction
             (VQ-VAE-2 for injected_topdown, RQ-VAE for residual_topdown)
    shared   one codebook for every residual layer
    noreset  no dead-code reset (reset_threshold = 0; for 'ema': the stochastic
             quantizer has none)
    smoke    2 steps at tiny width on 32x32 built-in photo crops (tests, CI; any
             data set of the config is replaced, so it runs offline)
  """
  options = config_options(arg, HQVAE_OPTIONS, path)
  m, t = config.model, config.train
  if "ema" in options:
    m.quantizer = quantizer_config("ema")
    t.reconstruction_loss = "mse"
  if "shared" in options:
    m.shared_codebook = True
  if "noreset" in options and "reset_threshold" in m.quantizer:  # SQ has no reset
    m.quantizer.reset_threshold = 0.0
  return apply_options(config, options)
