"""Every quantizer at 12 bits per latent position (docs/QUANTIZERS.md), base
config configs/quantizers.py (its MEMBERS: VQ, VQ + rotation trick, grouped
G = 2 (+- group dropout) and G = 4, FSQ, LFQ (+- entropy penalty), SQ-VAE).

Bits per position (capacity.bits_per_position): VQ and SQ log2 K; grouped
G log2(K / G); FSQ sum_i log2 L_i; LFQ D.

  nice -n 10 python -m vqjax.experiments.sweep --config=configs/quantizers.py \\
      --sweep=configs/sweeps/quantizers.py --workdir=runs/quantizers --seeds=0
"""

import importlib.util
import os

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "quantizers.py")


def members() -> dict:
  """configs/quantizers.py's MEMBERS {name: dotted overrides}."""
  spec = importlib.util.spec_from_file_location("vqjax_quantizers_config", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.MEMBERS


def get_sweep(config):
  del config
  return [{"name": name, **overrides} for name, overrides in members().items()]
