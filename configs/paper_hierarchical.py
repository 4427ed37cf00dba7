"""The paper's two-level VQ-VAE on ImageNet 256x256 (Table 1, hierarchical column).

K_h = 4096 codes of D_h = 8 per level, C_h = 128; bottom 64x64, top 32x32.
Needs ImageNet prepared for tfds as array_record (docs/DATA.md, "ImageNet and
other tfds datasets").
Variants by override, e.g. `--config.model.code_dim=64 --config.model.num_codes=...`
or the VQ-VAE-2 conditioned bottom: `--config.model.conditioned=True`.
"""

from vqjax import config_lib


def get_config(arg=None):
  options = config_lib.config_options(arg, ("smoke",), "configs/paper_hierarchical.py")
  config = config_lib.paper_config()
  config.model = config_lib.hierarchical_model(num_codes=4096, code_dim=8)
  return config_lib.apply_options(config, options)
