"""SQ-VAE-2 on CIFAR-10 (HQ-VAE Table 5): layers (4x4, 512), (8x8, 512), d_b = 64.

Injected top-down, 32 -> stem conv 16 -> pools 8, 4 (Table 5's resolutions;
App. F.1.1's "w = 8, 16" would be num_pools=1 with 8x8/16x16 layers). ARELBO,
Adam 1e-3 betas (0.9, 0.9), batch 32, 100 epochs of 1250 steps, LR halved
after 3 epochs without improvement, tau = exp(-1e-5 t) (ends at 0.29).
CIFAR-10 must be prepared for tfds (docs/DATA.md, "ImageNet and other tfds
datasets"); split as the paper: the first 40k training images train, the last
10k validate.

  python -m vqjax.main --config=configs/hqvae/cifar10_sqvae2.py --workdir=runs/sqvae2
  --config=configs/hqvae/cifar10_sqvae2.py:ema     VQ-VAE-2 on the same network
  --config=configs/hqvae/cifar10_sqvae2.py:smoke   2 steps at tiny width
"""

from vqjax.experiments import hqvae_configs


def get_config(arg=None):
  config = hqvae_configs.cifar10_config("injected_topdown", num_codes=512, num_pools=2)
  return hqvae_configs.apply_hqvae_options(config, arg, "configs/hqvae/cifar10_sqvae2.py")
