"""SQ-VAE-2 on ImageNet 256x256 (HQ-VAE Table 1): layers (32x32, 512), (64x64, 512).

Injected top-down, 256 -> stem conv 128 -> pools 64, 32; d_b = 64. Adam 5e-4
betas (0.9, 0.9), global batch 512, 50 epochs (2502 steps each), LR halved
after 3 epochs without improvement, tau = exp(-1e-5 t) (ends at 0.29). The
network width (128) is not in the paper's text [our choice]. Needs ImageNet
prepared for tfds (docs/DATA.md, "ImageNet and other tfds datasets").

  python -m vqjax.main --config=configs/hqvae/imagenet_sqvae2.py --workdir=runs/in_sqvae2
  --config=configs/hqvae/imagenet_sqvae2.py:ema     VQ-VAE-2 on the same network
  --config=configs/hqvae/imagenet_sqvae2.py:smoke   2 steps at tiny width
"""

from vqjax import config_lib
from vqjax.experiments import hqvae_configs


def get_config(arg=None):
  paper = config_lib.paper_config()     # ImageNet 256x256 data and cadences
  steps_per_epoch = 1_281_167 // 512
  config = hqvae_configs.hqvae_config("injected_topdown", num_codes=512, num_pools=2,
                                      num_steps=50 * steps_per_epoch,
                                      steps_per_epoch=steps_per_epoch)
  config.data = paper.data
  config.data.batch_size = 512
  config.eval.batch_size = 256
  config.model.channels = 128
  config.model.code_dim = 64
  config.model.quantizer.tau_rate = 1e-5
  config.train.learning_rate = 5e-4
  config.train.log_every = 100
  config.train.eval_every = steps_per_epoch
  config.train.checkpoint_every = 2000
  return hqvae_configs.apply_hqvae_options(config, arg, "configs/hqvae/imagenet_sqvae2.py")
