"""An autoregressive transformer prior on a tokenizer's codes (docs/PRIOR.md).

The codes come from the tokenizer's --mode=encode (one ArrayRecord file per
split); the prior reads their levels and shapes from the first record and,
with prior.tokenizer, the codebook sizes from the tokenizer's config.json
(and decodes its samples with it):

  python -m vqjax.main --config=configs/default.py --workdir=runs/default --mode=encode --config.encode.split=train
  python -m vqjax.main --config=configs/default.py --workdir=runs/default --mode=encode --config.encode.split=validation
  python -m vqjax.main --config=configs/prior.py --workdir=runs/default_prior \\
      --config.prior.codes=runs/default/codes/train.array_record --config.prior.tokenizer=runs/default

  --config=configs/prior.py:smoke   a 2-layer, 32-wide model, 3 steps (on any codes file)
"""

from vqjax import config_lib


def get_config(arg=None):
  options = config_lib.config_options(arg, ("smoke",), "configs/prior.py")
  config = config_lib.prior_config()
  return config_lib.apply_options(config, options)
