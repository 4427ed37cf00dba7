"""The 2D VQ-VAEs beside SEMANTICIST at CPU scale (docs/SEMANTICIST.md, "Measured").

The single-level model of configs/quantizers.py (encoder stride 4: 8x8 latent
positions, C = 64, two residual blocks) on the data and steps of
configs/semanticist/cpu.py: 32x32 random crops of the photo corpus, batch 32,
2,000 steps, validated on the same 400 centre crops. Its own optimizer (Adam 3e-4
decayed 0.99 per epoch of 201 steps), as every 2D run of vqjax. Bits per image
against SEMANTICIST with FSQ (8, 5, 5, 5) tokens (32 x log2 1000 = 318.9 bits):

  vq_k32   EMA VQ, K = 32, D = 8: 64 x 5 = 320 bits (the same budget)
  mgvq_g2  MGVQ: 2 groups x 32 EMA codes of dim 4, nested group dropout (the
           released probabilities): 640 bits; its first group alone 320
  mgvq_g4  MGVQ: 4 groups x 4 codes of dim 2: 512 bits, 128 per group (first k
           groups: 128, 256, 384, 512 bits, across the tokens' 10-319)

  python -m vqjax.main --config=configs/semanticist/baselines.py:mgvq_g4 --workdir=runs/x
  (no member: vq_k32)
  --config=configs/semanticist/baselines.py:vq_k32,smoke     2 steps at tiny width
"""

from vqjax import config_lib

CORPUS = "data/photo_corpus"   # relative to the repository root
TRAIN_CROPS_32 = 6416          # as configs/semanticist/cpu.py
NUM_STEPS = 2000


def grouped(num_groups: int, codes_per_group: int) -> dict:
  return dict(quantizer=config_lib.quantizer_config("grouped", num_groups=num_groups),
              num_codes=num_groups * codes_per_group, code_dim=8)


MEMBERS = {
    "vq_k32": dict(quantizer=config_lib.quantizer_config("ema"), num_codes=32, code_dim=8),
    "mgvq_g2": grouped(2, 32),
    "mgvq_g4": grouped(4, 4),
}


def get_config(arg: str | None = None):
  options = config_lib.config_options(arg, ("smoke", *MEMBERS),
                                      "configs/semanticist/baselines.py")
  members = [o for o in options if o in MEMBERS] or ["vq_k32"]
  if len(members) != 1:
    raise ValueError(f"configs/semanticist/baselines.py takes one member of {list(MEMBERS)} "
                     f"(e.g. --config=configs/semanticist/baselines.py:mgvq_g4), got {members}.")
  config = config_lib.base_config()
  config.data.name = "folder"
  config.data.train_dir = f"{CORPUS}/train"
  config.data.val_dir = f"{CORPUS}/val"
  config.data.image_size = 32
  config.data.batch_size = config.eval.batch_size = 32
  config.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8,
                                         image_size=config.data.image_size)
  config.model.channels = 64
  for field, value in MEMBERS[members[0]].items():   # assigned: a new quantizer, not merged
    config.model[field] = value
  t = config.train
  t.num_steps, t.log_every, t.checkpoint_every = NUM_STEPS, 50, 250
  t.steps_per_epoch = -(-TRAIN_CROPS_32 // config.data.batch_size)
  return config_lib.apply_options(config, options)
