"""vqjax: reconstruction-first vector-quantized autoencoders in JAX/Flax.

`vqjax.load(workdir)` restores a trained model (vqjax.inference); it is
imported on first use, so `import vqjax` stays light.
"""

__version__ = "0.1.0"
__all__ = ["load"]


def __getattr__(name):
  if name == "load":
    from vqjax.inference import load  # pylint: disable=import-outside-toplevel
    return load
  raise AttributeError(f"module 'vqjax' has no attribute {name!r}")
