"""The paper's single-level VQ-VAE on ImageNet 256x256 (Table 1, single column).

Derived from the hierarchical model of configs/paper_hierarchical.py by Eq. 4
(C_s = 160) and Eq. 5 (K_s = 2 K_h D_h / D_s = 8192 for D_s = 8).
"""

from vqjax import config_lib


def get_config(arg=None):
  options = config_lib.config_options(arg, ("smoke",), "configs/paper_single.py")
  config = config_lib.paper_config()
  config.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8,
                                         image_size=config.data.image_size)
  return config_lib.apply_options(config, options)
