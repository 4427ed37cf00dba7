"""Quantizers: one module per family, all on one interface (`base.Quantizer`).

    z_q, aux = quantizer(z_e, train=train, step=step)   # training and evaluation
    codes = quantizer.encode(z_e)                       # int32 [..., *code_shape]
    z_q = quantizer.decode(codes)                       # bit-identical to eval z_q

with the code space (code_shape, codebook_size, histogram_size, flat_codes,
bits_per_position) static on the module; vqjax/quantizers/base.py documents
the interface, registry.py maps config kinds to these classes.

  VectorQuantizerEMA        'ema'         EMA codebook in the `codebook` collection
  LearnedCodebookQuantizer  'learned'     codebook in params (VQ-VAE loss)
  StochasticQuantizer       'stochastic'  SQ-VAE / HQ-VAE (Gumbel-softmax)
  GroupedQuantizer          'grouped'     MGVQ: G sub-quantizers over channel groups
  FiniteScalarQuantizer     'fsq'         FSQ, implicit product grid
  LookupFreeQuantizer       'lfq'         LFQ, sign bits
  ResidualQuantizer         'residual'    RQ: L stages on the remaining residual
"""

from vqjax.quantizers.base import Quantizer
from vqjax.quantizers.code_search import nearest_code
from vqjax.quantizers.ema_vq import COLLECTION, VectorQuantizerEMA
from vqjax.quantizers.fsq import FiniteScalarQuantizer
from vqjax.quantizers.grouped import GroupedQuantizer
from vqjax.quantizers.learned_vq import LearnedCodebookQuantizer
from vqjax.quantizers.lfq import LookupFreeQuantizer
from vqjax.quantizers.residual import ResidualQuantizer
from vqjax.quantizers.stochastic import StochasticQuantizer

__all__ = ["COLLECTION", "FiniteScalarQuantizer", "GroupedQuantizer", "LearnedCodebookQuantizer",
           "LookupFreeQuantizer", "Quantizer", "ResidualQuantizer", "StochasticQuantizer",
           "VectorQuantizerEMA", "nearest_code"]
