"""Perceptual and adversarial training losses at CPU size (docs/PERCEPTUAL.md).

A small single-level VQ-VAE (C = 64, K = 1024, D = 8) on random 64x64 crops of
the built-in photos (offline; validation on chelsea and coffee), trained with
the MSE, LPIPS (AlexNet, weight 0.1) and, from step 200, a PatchGAN
discriminator (2 layers, 32 channels, hinge loss) weighted by VQGAN's adaptive
weight times 0.5. 600 steps of batch 16:

  python -m vqjax.main --config=configs/perceptual.py --workdir=runs/perceptual

Options: 'nogan' (LPIPS only), 'plain' (MSE only: the comparison's baseline,
the same model and seed), 'smoke'.
"""

from vqjax import config_lib


def get_config(arg=None):
  options = config_lib.config_options(arg, ("nogan", "plain", "smoke"),
                                      "configs/perceptual.py")
  config = config_lib.base_config()
  config.data.batch_size = 16
  config.eval.batch_size = 32
  config.model = config_lib.single_model(hier_num_codes=4096, hier_code_dim=8,
                                         image_size=config.data.image_size)
  # CPU size: a quarter of the paper's width and an eighth of its codes, so the
  # three variants train in minutes each.
  config.model.channels = 64
  config.model.num_codes = 1024
  config.model.quantizer.reset_rule = "sample"   # as configs/default.py
  config.data.color_augment = "auto"
  l = config.loss
  l.lpips_weight = 0.1
  l.gan_weight = 0.5             # VQGAN: 0.8 (with L1 + LPIPS as L_rec)
  l.gan_loss = "hinge"
  l.gan_start_step = 200         # VQGAN's disc_start: the autoencoder first learns to reconstruct
  l.adaptive_weight = True
  l.disc_channels = 32
  l.disc_layers = 2              # 64x64 crops -> 14x14 logits, each of a 34x34 patch
  l.disc_learning_rate = 3e-4
  if "nogan" in options or "plain" in options:
    l.gan_weight = 0.0
  if "plain" in options:
    l.lpips_weight = 0.0
  config.train.num_steps = 600
  config.train.log_every = 25
  config.train.checkpoint_every = 200
  config.train.eval_every = 200
  config.eval.num_grid_images = 8
  config = config_lib.apply_options(config, options)
  if "smoke" in options:       # 2 steps: the second one with the adversarial term
    l.gan_start_step = 1
  return config
