"""HQ-VAE at CPU scale (docs/HQVAE.md): deterministic vs stochastic quantization
on the same networks, base config configs/hqvae/cpu_sqvae2.py.

  VQ-VAE-2 vs SQ-VAE-2 (injected top-down, (4x4, K), (8x8, K)) at K = 16 and 128;
  RQ-VAE (EMA, +-reset, +-shared codebook) vs RSQ-VAE (+-shared), two residual
  layers (8x8, 32).

  nice -n 10 python -m vqjax.experiments.sweep --config=configs/hqvae/cpu_sqvae2.py \\
      --sweep=configs/sweeps/hqvae.py --workdir=runs/hqvae --seeds=0,1,2
"""

from vqjax import config_lib

INJECTED = {"model.kind": "injected_topdown", "model.num_pools": 2}
RESIDUAL = {"model.kind": "residual_topdown", "model.num_pools": 1, "model.num_codes": 32}
INJECTED_K = (16, 128)


def get_sweep(config):
  # SQ: the base config's stochastic quantizer (its temperature rescaled to the run).
  sq = {"model.quantizer": config.model.quantizer.to_dict(),
        "train.reconstruction_loss": "arelbo"}
  ema = lambda threshold=2.0: {
      "model.quantizer": config_lib.quantizer_config("ema", reset_threshold=threshold).to_dict(),
      "train.reconstruction_loss": "mse"}
  members = []
  for k in INJECTED_K:
    members.append({"name": f"sqvae2_K{k}", **INJECTED, **sq, "model.num_codes": k})
    members.append({"name": f"vqvae2_K{k}", **INJECTED, **ema(), "model.num_codes": k})
  for shared in (False, True):
    suffix = "_shared" if shared else ""
    members.append({"name": f"rsqvae{suffix}", **RESIDUAL, **sq,
                    "model.shared_codebook": shared})
    for reset in (True, False):
      members.append({"name": f"rqvae_{'reset' if reset else 'noreset'}{suffix}",
                      **RESIDUAL, **ema(2.0 if reset else 0.0), "model.shared_codebook": shared})
  return members
