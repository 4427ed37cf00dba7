"""SQ-VAE-2 at CPU scale: Table 5's network on 32x32 crops of the built-in photos.

Layers (4x4, K), (8x8, K) with K = 64, d_b = 64 at width 32 [the paper: 64],
batch 32, 300 steps, no colour augmentation. The 3890 built-in training crops
give 122 steps per "epoch": validation rounds at steps 122, 244 and 300, too
few for the plateau rule (patience 3) to halve the rate within 300 steps.
The temperature rate is rescaled so tau ends where the
paper's CIFAR-10 run ends: r = 1.25 / 300 -> tau(300) = exp(-1.25) = 0.29.
Trains in a few minutes on CPU:

  python -m vqjax.main --config=configs/hqvae/cpu_sqvae2.py --workdir=runs/cpu_sqvae2
  --config=configs/hqvae/cpu_sqvae2.py:ema      VQ-VAE-2 on the same network
  --config=configs/hqvae/cpu_sqvae2.py:smoke    2 steps at tiny width
"""

from vqjax.experiments import hqvae_configs


def get_config(arg=None):
  config = hqvae_configs.cpu_config("injected_topdown", num_codes=64, num_pools=2)
  return hqvae_configs.apply_hqvae_options(config, arg, "configs/hqvae/cpu_sqvae2.py")
