"""HQ-VAE at CPU scale (docs/HQVAE.md): deterministic vs stochastic quantization
on the same networks, base config configs/hqvae/cpu_sqvae2.py.

  VQ-VAE-2 vs SQ-VAE-2 (injected top-down, (4x4, K), (8x8, K)) at K = 16 and 128;
  RQ-VAE (EMA, +-reset, +-shared codebook) vs RSQ-VAE (+-shared), two residual
  layers (8x8, 32).

  nice -n 10 python -m vqjax.sweep --config=configs/hqvae/cpu_sqvae2.py \\
      --sweep=configs/sweeps/hqvae.py --workdir=runs/hqvae --seeds=0,1,2
"""

INJECTED = {"model.kind": "injected_topdown", "model.num_pools": 2}
RESIDUAL = {"model.kind": "residual_topdown", "model.num_pools": 1, "model.num_codes": 32}
SQ = {"model.quantizer": "stochastic", "train.reconstruction_loss": "arelbo"}
EMA = {"model.quantizer": "ema", "train.reconstruction_loss": "mse"}
INJECTED_K = (16, 128)


def get_sweep(config):
  del config
  members = []
  for k in INJECTED_K:
    members.append({"name": f"sqvae2_K{k}", **INJECTED, **SQ, "model.num_codes": k})
    members.append({"name": f"vqvae2_K{k}", **INJECTED, **EMA, "model.num_codes": k})
  for shared in (False, True):
    suffix = "_shared" if shared else ""
    members.append({"name": f"rsqvae{suffix}", **RESIDUAL, **SQ,
                    "model.shared_codebook": shared})
    for reset in (True, False):
      members.append({"name": f"rqvae_{'reset' if reset else 'noreset'}{suffix}",
                      **RESIDUAL, **EMA, "model.shared_codebook": shared,
                      "model.reset_threshold": 2.0 if reset else 0.0})
  return members
