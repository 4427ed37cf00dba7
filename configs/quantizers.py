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
TAU_RATE = config_lib.HQVAE_TAU_EXPONENT / NUM_STEPS  # SQ: tau ends at exp(-1.25)


def quantizer(kind: str, **fields) -> dict:
  """The override of config.model.quantizer: `kind` with its defaults and `fields`."""
  return config_lib.quantizer_config(kind, **fields).to_dict()


def grouped(num_groups: int, **fields) -> dict:
  return {"model.quantizer": quantizer("grouped", num_groups=num_groups, **fields),
          "model.num_codes": 128 if num_groups == 2 else 32, "model.code_dim": 8}


VQ = {"model.quantizer": quantizer("ema"), "model.num_codes": 4096, "model.code_dim": 8}
SQ = {**VQ, "train.reconstruction_loss": "arelbo"}
MEMBERS = {
    "vq": VQ,
    "vq_rotation": {**VQ, "model.quantizer": quantizer("ema", gradient_estimator="rotation")},
    "grouped_g2": grouped(2),
    "grouped_g2_nodrop": grouped(2, group_dropout=False),
    "grouped_g4": grouped(4),
    "fsq": {"model.quantizer": quantizer("fsq", levels=(7, 5, 5, 5, 5)), "model.code_dim": 5},
    "lfq": {"model.quantizer": quantizer("lfq"), "model.code_dim": BITS},
    "lfq_noentropy": {"model.quantizer": quantizer("lfq", entropy_weight=0.0),
                      "model.code_dim": BITS},
    "sq": {**SQ, "model.quantizer": quantizer("stochastic", tau_rate=TAU_RATE)},
    "sq_var1": {**SQ, "model.quantizer": quantizer("stochastic", tau_rate=TAU_RATE,
                                                   log_var_init=0.0)},
}


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
  t = config.train
  t.num_steps, t.log_every, t.checkpoint_every, t.eval_every = NUM_STEPS, 50, NUM_STEPS, 0
  options = config_lib.config_options(arg, tuple(MEMBERS), "configs/quantizers.py")
  for name in options:
    if name in MEMBERS:
      set_dotted(config, MEMBERS[name])
  return config_lib.apply_options(config, options)
