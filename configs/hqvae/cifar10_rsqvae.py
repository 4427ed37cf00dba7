"""RSQ-VAE on CIFAR-10 (HQ-VAE Table 5): two residual layers (8x8, 32), (8x8, 32), d_b = 64.

Residual top-down at 32 -> stem conv 16 -> one pool 8 (App. F: "2 Resblocks +
avg-pool once"); Eq. 14 loss (final residual over the sum of the layer
variances, one entropy per layer). Optimisation as configs/hqvae/cifar10_sqvae2.py.

  python -m vqjax.main --config=configs/hqvae/cifar10_rsqvae.py --workdir=runs/rsqvae
  --config=configs/hqvae/cifar10_rsqvae.py:shared        one codebook for both layers
  --config=configs/hqvae/cifar10_rsqvae.py:ema           RQ-VAE (EMA, reset) on the same network
  --config=configs/hqvae/cifar10_rsqvae.py:ema,noreset   RQ-VAE without dead-code reset
  --config=configs/hqvae/cifar10_rsqvae.py:smoke         2 steps at tiny width
"""

from vqjax.experiments import hqvae_configs


def get_config(arg=None):
  config = hqvae_configs.cifar10_config("residual_topdown", num_codes=32, num_pools=1)
  return hqvae_configs.apply_hqvae_options(config, arg, "configs/hqvae/cifar10_rsqvae.py")
