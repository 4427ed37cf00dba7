"""Quantizers; one module per family, all with one interface.

A quantizer is a flax.linen Module called as

    z_q, aux = quantizer(z_e, train=train, step=step)

z_e: [..., D] (any leading shape); z_q: the same shape and dtype, what the
decoder reads. `step` ([] int32 train step, traced; None outside training) is
for quantizers with schedules (e.g. a Gumbel-softmax temperature); others
ignore it. aux is a dict:

  indices  int32 [...] (or [..., G] for grouped quantizers): the discrete codes
  losses   {name: [] float32}: terms already weighted, added to the training loss
  metrics  {name: [] scalar}: logged per level (perplexity, codes used, ...)
  posterior  (optional) float32 [..., K]: P(k | z) of a stochastic quantizer;
             evaluation sums it over the data set (soft perplexity, entropy)

`quantizer.codebook_size` (a Python int) is the size of the index space.
Where a quantizer keeps its state is its own business: the EMA codebook lives
in the `codebook` collection (mutable in training), a learned codebook in
`params`.
"""

from vqjax.quantizers.code_search import nearest_code
from vqjax.quantizers.ema_vq import COLLECTION, VectorQuantizerEMA
