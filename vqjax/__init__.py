"""vqjax: reconstruction-first vector-quantized autoencoders in JAX/Flax."""

__version__ = "0.1.0"
