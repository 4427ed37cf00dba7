"""SEMANTICIST at CPU scale: 32x32 random crops of the photo corpus.

The notes' tiny configuration (section 7; docs/SEMANTICIST.md): a causal ViT
(patch 4: 64 patches, width 64, 4 blocks) to T = 32 continuous tokens of D = 8
(256 numbers for 3072 pixels), a DiT decoder on pixels (patch 4, width 64, 4
blocks), v-prediction on the linear schedule (T = 1000), DDIM with 25 steps
for the reconstructions, nested CFG with 10% all-null images. Validation: the
centre 32x32 of each of the corpus's 400 validation crops; the final evaluation
adds the PSNR and the share of variance explained from the first k tokens for
the ladder eval.first_k_tokens (() = every k = 1..T).

  python -m vqjax.main --config=configs/semanticist/cpu.py --workdir=runs/semanticist
  --config=configs/semanticist/cpu.py:quantizer=fsq    FSQ (8, 5, 5, 5) tokens, D = 4
  --config=configs/semanticist/cpu.py:smoke             2 steps at tiny width
"""

from vqjax import config_lib

CORPUS = "data/photo_corpus"   # relative to the repository root
TRAIN_CROPS_32 = 6416          # ~ non-overlapping 32x32 crops of the training photos (4 x 1604)


def get_config(arg: str | None = None):
  options = config_lib.config_options(arg, ("smoke",), "configs/semanticist/cpu.py")
  config = config_lib.base_config()
  config.data.name = "folder"
  config.data.train_dir = f"{CORPUS}/train"
  config.data.val_dir = f"{CORPUS}/val"
  config.data.image_size = 32
  config.data.batch_size = 32
  config.model = config_lib.semanticist_model(image_size=32)
  config.train.reconstruction_loss = "none"   # the diffusion loss is the objective
  config.train.num_steps = 2000
  config.train.learning_rate = 5e-4
  config.train.lr_decay_rate = 1.0            # constant rate (Adam)
  config.train.steps_per_epoch = -(-TRAIN_CROPS_32 // config.data.batch_size)
  config.train.log_every = 50
  config.train.checkpoint_every = 250
  config.eval.batch_size = 80
  config.eval.first_k_tokens = (1, 2, 4, 8, 16, 32)   # () = every k = 1..T
  return config_lib.apply_options(config, options)
