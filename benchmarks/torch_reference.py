"""PyTorch reference of vqjax's models, for benchmarks/benchmark.py.

The same architecture as `vqjax/models/` (rosinality's VQ-VAE-2 blocks, NCHW
here, NHWC in vqjax), with the authors' quantizer: vector-quantize-pytorch's
`VectorQuantize` (EMA codebook, decay 0.99, commitment 0.25, dead codes =
EMA cluster size < 2 replaced by random batch vectors every step). See
benchmarks/requirements.txt for the pinned versions.

- Encoder, stride 4: conv4x4/2 (C/2) -> ReLU -> conv4x4/2 (C) -> ReLU ->
  conv3x3 (C); stride 2: conv4x4/2 (C/2) -> ReLU -> conv3x3 (C); then ResBlocks
  (ReLU, conv3x3 C->C/2, ReLU, conv1x1 C/2->C, + input) and a final ReLU.
  (The authors' *flat* encoder has one more ReLU after the conv3x3; it has no
  parameters, vqjax and this file follow their hierarchical encoder.)
- Decoder: conv3x3 (C) -> ResBlocks -> ReLU -> convT4x4/2 (C/2) -> ReLU ->
  convT4x4/2 (3).
- Single level: 1x1 conv C->D, VQ in D dimensions, the decoder reads D channels.
- Hierarchical (unconditioned): top encoder (stride 2) on the bottom encoder
  output, 1x1 convs to D at each level, top codes upsampled by convT4x4/2 D->D
  and concatenated with the bottom codes (2D channels) into the decoder.

The codebook is a buffer (`learnable_codebook=False`), so `parameters()` holds
exactly what vqjax keeps in `params` and the counts must match.

Quantizer settings and why:
- `rotation_trick=False`: vector-quantize-pytorch >= 1.20 turns the rotation
  trick on by default for dim > 1; vqjax (and the authors' default) use the
  plain straight-through estimator.
- `kmeans_init=True, kmeans_iters=1`: the closest to vqjax's data init (codes
  <- K random encoder outputs of the first training batch). The library needs
  at least one Lloyd iteration after sampling (0 is not supported), so one is
  run. `kmeans_init=False` would be a uniform init, i.e. vqjax's
  `codebook_init='uniform'`. This only changes the first (warm-up) step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from vector_quantize_pytorch import VectorQuantize


class ResBlock(nn.Module):
  def __init__(self, channels: int, res_channels: int):
    super().__init__()
    self.conv = nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(channels, res_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(res_channels, channels, 1),
    )

  def forward(self, x):
    return x + self.conv(x)


class Encoder(nn.Module):
  def __init__(self, in_channels: int, channels: int, res_channels: int,
               num_res_blocks: int, stride: int):
    super().__init__()
    c = channels
    if stride == 4:
      blocks = [nn.Conv2d(in_channels, c // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1)]
    elif stride == 2:
      blocks = [nn.Conv2d(in_channels, c // 2, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, padding=1)]
    else:
      raise ValueError(f"Encoder stride must be 2 or 4, got {stride}.")
    blocks += [ResBlock(c, res_channels) for _ in range(num_res_blocks)]
    blocks.append(nn.ReLU(inplace=True))
    self.blocks = nn.Sequential(*blocks)

  def forward(self, x):
    return self.blocks(x)


class Decoder(nn.Module):
  def __init__(self, in_channels: int, out_channels: int, channels: int,
               res_channels: int, num_res_blocks: int, stride: int = 4):
    super().__init__()
    c = channels
    blocks = [nn.Conv2d(in_channels, c, 3, padding=1)]
    blocks += [ResBlock(c, res_channels) for _ in range(num_res_blocks)]
    blocks.append(nn.ReLU(inplace=True))
    if stride == 4:
      blocks += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1),
                 nn.ReLU(inplace=True),
                 nn.ConvTranspose2d(c // 2, out_channels, 4, stride=2, padding=1)]
    elif stride == 2:
      blocks.append(nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1))
    else:
      raise ValueError(f"Decoder stride must be 2 or 4, got {stride}.")
    self.blocks = nn.Sequential(*blocks)

  def forward(self, x):
    return self.blocks(x)


def make_quantizer(code_dim: int, num_codes: int, *, decay: float = 0.99,
                   beta: float = 0.25, eps: float = 1e-5,
                   dead_code_threshold: float = 2.0) -> VectorQuantize:
  """The authors' quantizer with vqjax's hyper-parameters (see the module doc)."""
  return VectorQuantize(
      dim=code_dim, codebook_size=num_codes, decay=decay, eps=eps,
      commitment_weight=beta, threshold_ema_dead_code=dead_code_threshold,
      kmeans_init=True, kmeans_iters=1, ema_update=True,
      learnable_codebook=False, rotation_trick=False)


def quantize(vq: VectorQuantize, z: torch.Tensor):
  """[B, D, H, W] -> (z_q [B, D, H, W] straight-through, indices [B, H*W], commitment)."""
  b, d, h, w = z.shape
  flat = z.permute(0, 2, 3, 1).reshape(b, h * w, d)
  z_q, indices, commitment = vq(flat)
  return z_q.reshape(b, h, w, d).permute(0, 3, 1, 2), indices, commitment


class SingleLevelVQVAE(nn.Module):
  def __init__(self, channels: int, code_dim: int, num_codes: int,
               res_channels: int | None = None, num_res_blocks: int = 2,
               in_channels: int = 3, **quantizer_kwargs):
    super().__init__()
    res = res_channels or channels // 2
    self.encoder = Encoder(in_channels, channels, res, num_res_blocks, 4)
    self.pre_quant = nn.Conv2d(channels, code_dim, 1)
    self.quantizer = make_quantizer(code_dim, num_codes, **quantizer_kwargs)
    self.decoder = Decoder(code_dim, in_channels, channels, res, num_res_blocks, 4)

  def forward(self, x):
    z_q, _, commitment = quantize(self.quantizer, self.pre_quant(self.encoder(x)))
    return self.decoder(z_q), commitment


class HierarchicalVQVAE(nn.Module):
  """Unconditioned two-level model (the paper's)."""

  def __init__(self, channels: int, code_dim: int, num_codes: int,
               res_channels: int | None = None, num_res_blocks: int = 2,
               in_channels: int = 3, **quantizer_kwargs):
    super().__init__()
    c, d = channels, code_dim
    res = res_channels or c // 2
    self.encoder_bottom = Encoder(in_channels, c, res, num_res_blocks, 4)
    self.encoder_top = Encoder(c, c, res, num_res_blocks, 2)
    self.pre_quant_top = nn.Conv2d(c, d, 1)
    self.pre_quant_bottom = nn.Conv2d(c, d, 1)
    self.quantizer_top = make_quantizer(d, num_codes, **quantizer_kwargs)
    self.quantizer_bottom = make_quantizer(d, num_codes, **quantizer_kwargs)
    self.upsample_top = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)
    self.decoder = Decoder(2 * d, in_channels, c, res, num_res_blocks, 4)

  def forward(self, x):
    enc_b = self.encoder_bottom(x)
    enc_t = self.encoder_top(enc_b)
    q_t, _, commit_t = quantize(self.quantizer_top, self.pre_quant_top(enc_t))
    q_b, _, commit_b = quantize(self.quantizer_bottom, self.pre_quant_bottom(enc_b))
    x_hat = self.decoder(torch.cat([self.upsample_top(q_t), q_b], dim=1))
    return x_hat, commit_t + commit_b


def create_model(model_config: dict[str, Any]) -> nn.Module:
  """The reference of a vqjax `config.model` (as a dict)."""
  m = model_config
  q = m.get("quantizer") if isinstance(m.get("quantizer"), dict) else m  # nested or flat (old)
  if m.get("conditioned"):
    raise NotImplementedError("the reference covers the unconditioned hierarchy only")
  kwargs = dict(channels=m["channels"], code_dim=m["code_dim"],
                num_codes=m["num_codes"], res_channels=m.get("res_channels") or None,
                num_res_blocks=m.get("num_res_blocks", 2),
                decay=q.get("decay", 0.99), beta=q.get("beta", 0.25),
                eps=q.get("eps", 1e-5),
                dead_code_threshold=q.get("reset_threshold", 2.0))
  if m["kind"] == "single":
    return SingleLevelVQVAE(**kwargs)
  if m["kind"] == "hierarchical":
    return HierarchicalVQVAE(**kwargs)
  raise ValueError(f"unknown model kind {m['kind']!r}")


def count_params(model: nn.Module) -> int:
  """Trainable parameters (the codebooks are buffers and not counted)."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


def create_optimizer(model: nn.Module, learning_rate: float = 3e-4):
  return torch.optim.Adam(model.parameters(), lr=learning_rate)


def train_step(model: nn.Module, optimizer, x: torch.Tensor) -> torch.Tensor:
  """loss = MSE(x, x_hat) + commitment; one Adam step; EMA codebook update inside."""
  optimizer.zero_grad(set_to_none=True)
  x_hat, commitment = model(x)
  loss = F.mse_loss(x_hat, x) + commitment
  loss.backward()
  optimizer.step()
  return loss.detach()


@torch.inference_mode()
def eval_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
  """Frozen-codebook forward pass (eval mode: no EMA, no dead-code reset)."""
  x_hat, _ = model(x)
  return x_hat
