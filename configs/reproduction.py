"""The paper's experiments at CPU scale on the offline photo corpus.

64x64 random crops of 75 photographs (shorter side 256) from Debian packages
(docs/PHOTO_CORPUS.md; build it once with `scripts/photo_corpus.sh`);
validation on the fixed grid of 400 64x64 crops of 19 other photographs. The
model is the paper's (C_h = 128, C_s = 160 by Eq. 4; K, D set by the sweeps),
with the paper's dead-code rule (average of 4 encoder outputs). Every member
trains 300 steps at batch 32 (docs/REPRODUCTION.md gives the wall time).

  python -m vqjax.experiments.sweep --config=configs/reproduction.py:hierarchical \\
      --sweep=configs/sweeps/figure1.py --workdir=runs/reproduction/figure1 --seeds=0,1,2

get_config('single' | 'hierarchical' [,smoke]) picks the base model (default
single: K_s = 8192, D = 8, matched to 2 x 4096).
"""

from vqjax import config_lib

CORPUS = "data/photo_corpus"   # relative to the repository root
TRAIN_CROPS = 1604             # non-overlapping 64x64 crops of the training photos


def get_config(arg: str | None = None):
  options = config_lib.config_options(arg, ("single", "hierarchical", "smoke"),
                                      "configs/reproduction.py")
  config = config_lib.base_config()
  config.data.name = "folder"
  config.data.train_dir = f"{CORPUS}/train"
  config.data.val_dir = f"{CORPUS}/val"
  config.data.image_size = 64
  if "hierarchical" in options:
    config.model = config_lib.hierarchical_model(num_codes=4096, code_dim=8)
  else:
    config.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8,
                                           image_size=config.data.image_size)
  # An epoch of the crop stream: as many 64x64 crops as the photos hold
  # without overlap (the folder source counts files, 75 photos).
  config.train.steps_per_epoch = -(-TRAIN_CROPS // config.data.batch_size)
  config.train.num_steps = 300
  config.train.log_every = 50
  config.train.checkpoint_every = 100
  config.eval.batch_size = 80
  return config_lib.apply_options(config, options)
