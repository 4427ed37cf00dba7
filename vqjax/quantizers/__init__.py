"""Quantizers; one module per family."""

from vqjax.quantizers.ema_vq import COLLECTION, VectorQuantizerEMA, nearest_code
