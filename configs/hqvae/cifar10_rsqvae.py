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

from vqjax import hqvae_configs


def get_config(arg=None):
  config = hqvae_configs.hqvae_config("residual_topdown", num_codes=32, num_pools=1,
                                      num_steps=125_000, steps_per_epoch=1250)
  config.data.name = "tfds"
  config.data.tfds_name = "cifar10"
  config.data.train_split = "train[:40000]"
  config.data.val_split = "train[40000:]"
  config.model.sq_tau_rate = 1e-5       # the paper's r (125k steps: tau ends at 0.29)
  config.train.log_every = 250
  config.train.eval_every = 1250        # one validation per epoch
  config.train.checkpoint_every = 12_500
  return hqvae_configs.apply_hqvae_options(config, arg)
