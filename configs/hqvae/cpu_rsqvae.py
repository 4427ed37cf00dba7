"""RSQ-VAE at CPU scale: Table 5's residual network on 32x32 built-in photo crops.

Two residual layers (8x8, 32), d_b = 64 at width 32 [the paper: 64], batch 32,
300 steps, tau rescaled as configs/hqvae/cpu_sqvae2.py (r = 1.25 / 300).

  python -m vqjax.main --config=configs/hqvae/cpu_rsqvae.py --workdir=runs/cpu_rsqvae
  --config=configs/hqvae/cpu_rsqvae.py:shared        one codebook for both layers
  --config=configs/hqvae/cpu_rsqvae.py:ema           RQ-VAE (EMA + reset), same network
  --config=configs/hqvae/cpu_rsqvae.py:ema,noreset   RQ-VAE without reset
  --config=configs/hqvae/cpu_rsqvae.py:smoke         2 steps at tiny width
"""

from vqjax.experiments import hqvae_configs


def get_config(arg=None):
  config = hqvae_configs.cpu_config("residual_topdown", num_codes=32, num_pools=1)
  return hqvae_configs.apply_hqvae_options(config, arg, "configs/hqvae/cpu_rsqvae.py")
