"""Every quantizer on one network at one bit budget (docs/QUANTIZERS.md).

The single-level model (encoder stride 4, C = 64, two residual blocks) on 32x32
crops of the built-in photos, batch 32, 600 steps of Adam 3e-4; every member
of configs/sweeps/quantizers.py carries 12 bits per latent position (8x8
positions per image); no colour augmentation (data.color_augment='off'):

  vq        EMA VQ, K = 4096, D = 8, with the paper's interventions (codes
            initialised from encoder outputs, windowed dead-code reset, low D)
  vq_rotation  the same with the rotation-trick gradient
  grouped_g2   MGVQ: 2 groups x 64 EMA codes of dim 4 (2 log2 64 = 12 bits),
               nested group dropout on (stage 1, released probabilities)
  grouped_g2_nodrop  the same without group dropout (the fine-tuning setting)
  grouped_g4   4 groups x 8 codes of dim 2 (4 log2 8 = 12 bits), dropout on
  fsq       levels (7, 5, 5, 5, 5): 4375 codes, 12.09 bits (FSQ's recommended
            levels for a 2^12 codebook)
  lfq       D = 12 sign bits, entropy penalty 0.1, commitment 0.25
  lfq_noentropy  the same without the entropy penalty
  sq        SQ-VAE, K = 4096, D = 8, ARELBO reconstruction, temperature
            exp(-1.25 t / steps) as configs/hqvae, s^2 initialised at 20
  sq_var1   the same with s^2 initialised at 1 (Adam moves log s^2 by at most
            ~lr per step: 600 steps cannot anneal s^2 = 20 by much)

  python -m vqjax.main --config=configs/quantizers.py:grouped_g2 --workdir=runs/q_g2
  --config=configs/quantizers.py:fsq,smoke     2 steps at tiny width (tests, CI)
"""

from vqjax import config_lib

NUM_STEPS = 600
BITS = 12
VQ = {"model.quantizer": "ema", "model.num_codes": 4096, "model.code_dim": 8}
MEMBERS = {
    "vq": VQ,
    "vq_rotation": {**VQ, "model.gradient_estimator": "rotation"},
    "grouped_g2": {"model.quantizer": "grouped", "model.num_groups": 2,
                   "model.num_codes": 128, "model.code_dim": 8},
    "grouped_g2_nodrop": {"model.quantizer": "grouped", "model.num_groups": 2,
                          "model.num_codes": 128, "model.code_dim": 8,
                          "model.group_dropout": False},
    "grouped_g4": {"model.quantizer": "grouped", "model.num_groups": 4,
                   "model.num_codes": 32, "model.code_dim": 8},
    "fsq": {"model.quantizer": "fsq", "model.fsq_levels": (7, 5, 5, 5, 5),
            "model.code_dim": 5},
    "lfq": {"model.quantizer": "lfq", "model.code_dim": BITS},
    "lfq_noentropy": {"model.quantizer": "lfq", "model.code_dim": BITS,
                      "model.lfq_entropy_weight": 0.0},
    "sq": {**VQ, "model.quantizer": "stochastic", "train.reconstruction_loss": "arelbo"},
    "sq_var1": {**VQ, "model.quantizer": "stochastic", "train.reconstruction_loss": "arelbo",
                "model.sq_log_var_init": 0.0},
}
OPTIONS = tuple(MEMBERS) + ("smoke",)


def set_dotted(config, overrides: dict):
  """config with every 'section.field' of overrides set (in place)."""
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def get_config(arg=None):
  config = config_lib.base_config()
  config.data.image_size = 32
  # Set, not 'auto' (which turns colour augmentation on for the built-in photos):
  # the committed runs of docs/QUANTIZERS.md were trained without it.
  config.data.color_augment = "off"
  config.data.batch_size = config.eval.batch_size = 32
  config.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8,
                                         image_size=config.data.image_size)
  config.model.channels = 64
  set_dotted(config, VQ)
  config.model.sq_tau_rate = config_lib.HQVAE_TAU_EXPONENT / NUM_STEPS
  t = config.train
  t.num_steps, t.log_every, t.checkpoint_every, t.eval_every = NUM_STEPS, 50, NUM_STEPS, 0
  options = [o.strip() for o in (arg or "").split(",") if o.strip()]
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f"unknown config option(s) {unknown}; choose from {OPTIONS}.")
  for name in options:
    if name != "smoke":
      set_dotted(config, MEMBERS[name])
  if "smoke" in options:
    config.model.channels, config.model.num_res_blocks = 16, 1
    config.data.batch_size = config.eval.batch_size = 8
    t.num_steps, t.log_every, t.checkpoint_every = 2, 1, 2
    config.model.sq_tau_rate = config_lib.HQVAE_TAU_EXPONENT / t.num_steps
    config.eval.num_grid_images = 4
  return config
