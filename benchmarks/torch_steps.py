"""PyTorch equivalents of vqjax's newer train and eval steps, for benchmarks/new_steps.py.

The same layers, sizes and objectives as vqjax's (NCHW here, NHWC there); the
parameter counts equal vqjax's (new_steps.py prints both). Random weights
everywhere (the cost of a step does not depend on them; nothing is downloaded):

- `AlexNetLPIPS`: LPIPS v0.1 on AlexNet (vqjax/perceptual/lpips.py): ScalingLayer,
  torchvision's AlexNet features up to relu5 (conv11/4 64, pool, conv5 192, pool,
  conv3 384, conv3 256, conv3 256), each of the five ReLU maps unit-normalised
  over channels, squared difference, a 1x1 linear layer to one channel (the
  `lpips` package's NetLinLayer, no bias, no dropout), mean over positions, sum
  over layers; frozen (no gradients to its weights), as in training with it.
- `PatchDiscriminator`: vqjax/models/discriminator.py (pix2pix / VQGAN's
  NLayerDiscriminator with GroupNorm(gcd(32, C)) instead of BatchNorm, no bias
  before a norm).
- `perceptual_train_step`: torch_reference.py's VQ-VAE (vector-quantize-pytorch
  EMA quantizer) trained on MSE + commitment [+ w LPIPS] [+ lambda w_G L_G], the
  adaptive weight lambda from the gradients of both terms at the decoder's last
  layer (VQGAN's Eq. 7, `torch.autograd.grad`), then the discriminator's Adam
  step on real x vs. the detached reconstruction (hinge), as vqjax/train.py's
  one step does; the discriminator's weights take no gradient from the
  generator's loss (pix2pix's `set_requires_grad`), as in vqjax.
- `Semanticist`: vqjax/models/semanticist.py + diffusion.py with continuous
  tokens: a causal ViT (patch embedding, cls, concept queries, learned positions,
  pre-LN blocks under the concept mask) to T standardised tokens, nested
  cutoffs (null tokens), and a DiT (patch tokens + fixed 2D sin-cos positions,
  the tokens in-context with learned positions, adaLN-Zero on the timestep)
  trained on the v-prediction MSE of the linear schedule; Adam.
- `PriorTransformer`: vqjax/prior/model.py: token + learned position embeddings,
  pre-LN blocks of causal self-attention (no biases) and a GELU MLP, dropout on
  the embeddings, attention weights and both branches, a final LayerNorm and a
  head to the code tokens; the loss is the NLL of each position's own segment
  (log-softmax of the masked logits); AdamW (b2 0.95, weight decay on matrices
  only), global-norm clipping and the warm-up + cosine schedule.

Attention is `F.scaled_dot_product_attention` (PyTorch's own fused kernel; on CPU
the flash/math kernels) with the same boolean masks; GELU is the tanh form
(flax's default). LayerNorm eps 1e-6 (vqjax's transformer) and 1e-6 in the
prior's (flax's default).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -- LPIPS (AlexNet) ----------------------------------------------------------------

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEX_CHANNELS = (64, 192, 384, 256, 256)


class AlexNetLPIPS(nn.Module):
  """LPIPS on AlexNet: (x, y) [B, 3, H, W] in [-1, 1] -> [B] (module docstring)."""

  def __init__(self):
    super().__init__()
    self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
    self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
    self.convs = nn.ModuleList([
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.Conv2d(64, 192, 5, padding=2),
        nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1),
        nn.Conv2d(256, 256, 3, padding=1)])
    self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in ALEX_CHANNELS])

  def features(self, x):
    x = (x - self.shift) / self.scale
    feats = []
    for i, conv in enumerate(self.convs):
      if i in (1, 2):
        x = F.max_pool2d(x, 3, 2)
      x = F.relu(conv(x))
      feats.append(x)
    return feats

  def forward(self, x, y):
    n = x.shape[0]
    total = 0.0
    for f, lin in zip(self.features(torch.cat([x, y])), self.lins):
      f = f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + 1e-10)
      total = total + lin((f[:n] - f[n:]) ** 2).mean(dim=(1, 2, 3))
    return total


def frozen_lpips() -> AlexNetLPIPS:
  net = AlexNetLPIPS().eval()
  for p in net.parameters():
    p.requires_grad_(False)
  return net


@torch.inference_mode()
def lpips_eval_step(net: AlexNetLPIPS, x, x_hat):
  """The evaluation's LPIPS: per image, the reconstruction clipped to [-1, 1]."""
  return net(x, x_hat.clamp(-1.0, 1.0))


# -- PatchGAN -----------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
  """Images [B, 3, H, W] -> logits [B, 1, h, w] (vqjax/models/discriminator.py)."""

  def __init__(self, channels: int = 64, num_layers: int = 3):
    super().__init__()
    layers = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
    width = channels
    for n in range(1, num_layers):
      prev, width = width, channels * min(2 ** n, 8)
      layers += [nn.Conv2d(prev, width, 4, 2, 1, bias=False),
                 nn.GroupNorm(math.gcd(32, width), width), nn.LeakyReLU(0.2)]
    prev, width = width, channels * min(2 ** num_layers, 8)
    layers += [nn.Conv2d(prev, width, 4, 1, 1, bias=False),
               nn.GroupNorm(math.gcd(32, width), width), nn.LeakyReLU(0.2),
               nn.Conv2d(width, 1, 4, 1, 1)]
    self.layers = nn.Sequential(*layers)
    for m in self.modules():  # pix2pix's weights_init
      if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
          nn.init.zeros_(m.bias)

  def forward(self, x):
    return self.layers(x)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
  for p in module.parameters():
    p.requires_grad_(flag)


class PerceptualStep:
  """vqjax/train.py's one step with config.loss's terms (module docstring).

  model: torch_reference's SingleLevelVQVAE; lpips_weight / gan_weight 0 = off.
  """

  def __init__(self, model, lpips_weight: float, gan_weight: float,
               disc_channels: int, disc_layers: int, lr: float = 3e-4,
               disc_lr: float = 3e-4, disc_betas=(0.5, 0.9)):
    self.model = model
    self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    self.lpips_weight, self.gan_weight = lpips_weight, gan_weight
    self.lpips = frozen_lpips() if lpips_weight else None
    self.disc = PatchDiscriminator(disc_channels, disc_layers) if gan_weight else None
    self.disc_optimizer = (torch.optim.Adam(self.disc.parameters(), lr=disc_lr,
                                            betas=disc_betas) if self.disc else None)

  def last_layer(self) -> torch.Tensor:
    return self.model.decoder.blocks[-1].weight

  def __call__(self, x) -> torch.Tensor:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    x_hat, commitment = self.model(x)
    rec = F.mse_loss(x_hat, x)
    if self.lpips is not None:
      rec = rec + self.lpips_weight * self.lpips(x, x_hat).mean()
    loss = rec + commitment
    if self.disc is not None:
      set_requires_grad(self.disc, False)
      g_loss = -self.disc(x_hat).mean()  # hinge
      last = self.last_layer()
      rec_grad, = torch.autograd.grad(rec, last, retain_graph=True)
      g_grad, = torch.autograd.grad(g_loss, last, retain_graph=True)
      weight = (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()
      loss = loss + self.gan_weight * weight * g_loss
      set_requires_grad(self.disc, True)
    loss.backward()
    self.optimizer.step()
    if self.disc is not None:
      self.disc_optimizer.zero_grad(set_to_none=True)
      logits = self.disc(torch.cat([x, x_hat.detach()]))
      real, fake = logits[:x.shape[0]], logits[x.shape[0]:]
      d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
      d_loss.backward()
      self.disc_optimizer.step()
    return loss.detach()


# -- transformers ---------------------------------------------------------------------

LN_EPS = 1e-6


class Attention(nn.Module):
  """Multi-head self-attention: qkv and output projections, SDPA in between."""

  def __init__(self, width: int, num_heads: int, bias: bool = True, dropout: float = 0.0):
    super().__init__()
    self.num_heads, self.dropout = num_heads, dropout
    self.qkv = nn.Linear(width, 3 * width, bias=bias)
    self.proj = nn.Linear(width, width, bias=bias)

  def forward(self, x, mask=None, is_causal: bool = False):
    b, l, w = x.shape
    q, k, v = self.qkv(x).view(b, l, 3, self.num_heads, w // self.num_heads).permute(
        2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                       dropout_p=self.dropout if self.training else 0.0)
    return self.proj(y.transpose(1, 2).reshape(b, l, w))


class Mlp(nn.Module):
  def __init__(self, width: int, hidden: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
  """Pre-LN ViT block (vqjax/models/transformer.py's Block)."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int = 4):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(width, eps=LN_EPS), nn.LayerNorm(width, eps=LN_EPS)
    self.attn, self.mlp = Attention(width, num_heads), Mlp(width, mlp_ratio * width)

  def forward(self, x, mask=None):
    x = x + self.attn(self.norm1(x), mask)
    return x + self.mlp(self.norm2(x))


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class AdaLNBlock(nn.Module):
  """DiT's adaLN-Zero block (vqjax/models/transformer.py's AdaLNBlock)."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: int = 4):
    super().__init__()
    self.modulation = nn.Linear(width, 6 * width)
    nn.init.zeros_(self.modulation.weight)
    nn.init.zeros_(self.modulation.bias)
    self.norm1 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
    self.norm2 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
    self.attn, self.mlp = Attention(width, num_heads), Mlp(width, mlp_ratio * width)

  def forward(self, x, c):
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(F.silu(c)).chunk(6, -1)
    x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
    return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
  """vqjax/models/transformer.py's sincos_2d: [grid * grid, dim] float32."""
  def one(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    a = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(a), np.cos(a)], axis=1)
  rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64),
                           np.arange(grid, dtype=np.float64), indexing="ij")
  return torch.from_numpy(np.concatenate([one(dim // 2, cols), one(dim // 2, rows)],
                                         axis=1).astype(np.float32))


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t.float()[:, None] * freqs[None]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def patchify(x, p: int):
  """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C] (row-major patches, (py, px, c) inside)."""
  b, c, h, w = x.shape
  x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x, p: int, h: int, w: int):
  b, _, d = x.shape
  c = d // (p * p)
  x = x.view(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
  return x.reshape(b, c, h, w)


def trunc_normal(*shape):
  return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02, a=-0.04, b=0.04))


def concept_mask(num_image: int, num_tokens: int) -> torch.Tensor:
  idx = np.arange(num_image + num_tokens)
  image = idx < num_image
  causal = idx[None, :] <= idx[:, None]
  return torch.from_numpy(image[None, :] | (~image[:, None] & ~image[None, :] & causal))


class Semanticist(nn.Module):
  """Causal ViT encoder -> T tokens -> nested cutoff -> DiT v-prediction loss."""

  TIME_FREQ_DIM = 256

  def __init__(self, image_size: int, patch_size: int, width: int, depth: int,
               num_heads: int, num_tokens: int, code_dim: int, mlp_ratio: int,
               decoder_patch_size: int, decoder_width: int, decoder_depth: int,
               decoder_heads: int, num_timesteps: int, beta_start: float,
               beta_end: float, null_prob: float):
    super().__init__()
    p, w, t = patch_size, width, num_tokens
    n = (image_size // p) ** 2
    self.num_tokens, self.null_prob, self.num_timesteps = t, null_prob, num_timesteps
    self.patch_embed = nn.Conv2d(3, w, p, stride=p)
    self.cls, self.queries = trunc_normal(1, 1, w), trunc_normal(1, t, w)
    self.pos_embed = trunc_normal(1, 1 + n + t, w)
    self.register_buffer("mask", concept_mask(1 + n, t))
    self.blocks = nn.ModuleList([Block(w, num_heads, mlp_ratio) for _ in range(depth)])
    self.norm = nn.LayerNorm(w, eps=LN_EPS)
    self.to_tokens = nn.Linear(w, code_dim)
    self.null = trunc_normal(t, code_dim)
    # DiT
    dp, dw = decoder_patch_size, decoder_width
    self.dp = dp
    self.x_embed = nn.Linear(dp * dp * 3, dw)
    self.register_buffer("x_pos", sincos_2d(image_size // dp, dw)[None])
    self.t_embed_1, self.t_embed_2 = nn.Linear(self.TIME_FREQ_DIM, dw), nn.Linear(dw, dw)
    self.token_embed = nn.Linear(code_dim, dw)
    self.token_pos = trunc_normal(1, t, dw)
    self.dit_blocks = nn.ModuleList([AdaLNBlock(dw, decoder_heads, mlp_ratio)
                                     for _ in range(decoder_depth)])
    self.final_modulation = nn.Linear(dw, 2 * dw)
    self.final_norm = nn.LayerNorm(dw, eps=LN_EPS, elementwise_affine=False)
    self.final = nn.Linear(dw, dp * dp * 3)
    for layer in (self.final_modulation, self.final):
      nn.init.zeros_(layer.weight)
      nn.init.zeros_(layer.bias)
    abar = np.cumprod(1.0 - np.linspace(beta_start, beta_end, num_timesteps))
    self.register_buffer("abar", torch.from_numpy(abar.astype(np.float32)))

  def encode(self, x):
    b, t = x.shape[0], self.num_tokens
    h = self.patch_embed(x).flatten(2).transpose(1, 2)
    seq = torch.cat([self.cls.expand(b, -1, -1), h, self.queries.expand(b, -1, -1)], 1)
    seq = seq + self.pos_embed
    for block in self.blocks:
      seq = block(seq, self.mask)
    z = self.to_tokens(self.norm(seq)[:, -t:])
    return (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True)
                                                       + 1e-6)

  def dit(self, x_t, t, tokens):
    _, _, h, w = x_t.shape
    x = self.x_embed(patchify(x_t, self.dp)) + self.x_pos
    n = x.shape[1]
    cond = self.t_embed_2(F.silu(self.t_embed_1(timestep_embedding(t, self.TIME_FREQ_DIM))))
    x = torch.cat([x, self.token_embed(tokens) + self.token_pos], 1)
    for block in self.dit_blocks:
      x = block(x, cond)
    shift, scale = self.final_modulation(F.silu(cond)).chunk(2, -1)
    x = self.final(modulate(self.final_norm(x[:, :n]), shift, scale))
    return unpatchify(x, self.dp, h, w)

  def forward(self, x):
    """The v-prediction MSE of one training step (random cutoffs, timesteps, noise)."""
    b, t = x.shape[0], self.num_tokens
    tokens = self.encode(x)
    k = torch.randint(1, t + 1, (b,))
    k = torch.where(torch.rand(b) < self.null_prob, torch.zeros_like(k), k)
    keep = torch.arange(t)[None, :] < k[:, None]
    tokens = torch.where(keep[..., None], tokens, self.null[None])
    steps = torch.randint(0, self.num_timesteps, (b,))
    noise = torch.randn_like(x)
    a = self.abar[steps].view(b, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    target = a.sqrt() * noise - (1 - a).sqrt() * x
    return F.mse_loss(self.dit(x_t, steps, tokens), target)


@torch.inference_mode()
def semanticist_reconstruct(model: Semanticist, x, sample_steps: int):
  """vqjax's decode_codes(encode_codes(x)) with guidance 1: DDIM (eta 0) over the
  round(linspace(T - 1, 0, S)) timesteps from Gaussian noise, v -> eps, x0 clipped to
  [-1, 1] and eps recomputed from it (vqjax/models/diffusion.py)."""
  tokens = model.encode(x)
  steps = np.round(np.linspace(model.num_timesteps - 1, 0, sample_steps)).astype(np.int64)
  x_t = torch.randn_like(x)
  for i, t in enumerate(steps):
    a = model.abar[int(t)]
    a_prev = model.abar[int(steps[i + 1])] if i + 1 < len(steps) else torch.ones(())
    v = model.dit(x_t, torch.full((x.shape[0],), int(t)), tokens)
    eps = a.sqrt() * v + (1 - a).sqrt() * x_t
    x0 = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
    eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    x_t = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
  return x_t


def semanticist_from_config(m: dict) -> Semanticist:
  """The torch model of a vqjax SEMANTICIST config.model (as a dict; continuous tokens)."""
  d = m["decoder"]
  return Semanticist(m["image_size"], m["patch_size"], m["width"], m["depth"],
                     m["num_heads"], m["num_tokens"], m["code_dim"], m["mlp_ratio"],
                     d["patch_size"], d["width"], d["depth"], d["num_heads"],
                     d["num_timesteps"], d["beta_start"], d["beta_end"],
                     m["nested"]["null_prob"])


class PriorBlock(nn.Module):
  def __init__(self, width: int, num_heads: int, mlp_ratio: int, dropout: float):
    super().__init__()
    self.ln_attention, self.ln_mlp = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
    self.attention = Attention(width, num_heads, bias=False, dropout=dropout)
    self.mlp = Mlp(width, mlp_ratio * width)
    self.drop = nn.Dropout(dropout)

  def forward(self, x):
    x = x + self.drop(self.attention(self.ln_attention(x), is_causal=True))
    return x + self.drop(self.mlp(self.ln_mlp(x)))


class PriorTransformer(nn.Module):
  """inputs [B, T] int64 -> logits [B, T, num_code_tokens] (vqjax/prior/model.py)."""

  def __init__(self, vocab_size: int, num_code_tokens: int, seq_len: int, num_layers: int,
               num_heads: int, width: int, mlp_ratio: int, dropout: float):
    super().__init__()
    self.token_embedding = nn.Embedding(vocab_size, width)
    self.position_embedding = nn.Parameter(torch.randn(seq_len, width) * 0.02)
    self.drop = nn.Dropout(dropout)
    self.blocks = nn.ModuleList([PriorBlock(width, num_heads, mlp_ratio, dropout)
                                 for _ in range(num_layers)])
    self.ln_final = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, num_code_tokens)

  def forward(self, inputs):
    x = self.drop(self.token_embedding(inputs) + self.position_embedding[:inputs.shape[1]])
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln_final(x))


@torch.inference_mode()
def prior_sample(model: PriorTransformer, lo, hi, bos: int, batch: int) -> torch.Tensor:
  """vqjax.prior.sample.sample_tokens at temperature 1, no top-k: one step per position
  with a key/value cache per layer, each position drawn from its own segment [lo, hi)
  of the vocabulary. int64 [batch, T]."""
  model.eval()
  seq_len = len(lo)
  v = torch.arange(model.head.out_features)
  masks = (v[None] >= torch.as_tensor(lo)[:, None]) & (v[None] < torch.as_tensor(hi)[:, None])
  caches = [([], []) for _ in model.blocks]
  previous = torch.full((batch, 1), bos, dtype=torch.int64)
  out = []
  for t in range(seq_len):
    x = model.token_embedding(previous) + model.position_embedding[t:t + 1]
    for block, (keys, values) in zip(model.blocks, caches):
      attention = block.attention
      h = block.ln_attention(x)
      b, _, w = h.shape
      q, k, val = attention.qkv(h).view(b, 1, 3, attention.num_heads,
                                        w // attention.num_heads).permute(2, 0, 3, 1, 4)
      keys.append(k)
      values.append(val)
      y = F.scaled_dot_product_attention(q, torch.cat(keys, 2), torch.cat(values, 2))
      x = x + attention.proj(y.transpose(1, 2).reshape(b, 1, w))
      x = x + block.mlp(block.ln_mlp(x))
    logits = model.head(model.ln_final(x[:, 0])).masked_fill(~masks[t], float("-inf"))
    previous = torch.multinomial(F.softmax(logits, -1), 1)
    out.append(previous)
  return torch.cat(out, 1)


class PriorStep:
  """vqjax/prior/train.py's step: segment NLL, clipping, AdamW, the lr schedule."""

  def __init__(self, model: PriorTransformer, lo, hi, bos: int, train_config: dict):
    t = train_config
    self.model, self.bos, self.clip = model, bos, float(t["grad_clip"])
    v = torch.arange(model.head.out_features)
    self.mask = (v[None] >= torch.as_tensor(lo)[:, None]) & (v[None] < torch.as_tensor(hi)[:, None])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    self.optimizer = torch.optim.AdamW(
        [dict(params=decay, weight_decay=t["weight_decay"]), dict(params=rest, weight_decay=0.0)],
        lr=t["learning_rate"], betas=(0.9, 0.95))
    warm, total = int(t["warmup_steps"]), int(t["num_steps"])

    def factor(step):
      rate = min(1.0, (step + 1) / warm) if warm else 1.0
      progress = min(max((step - warm) / max(total - warm, 1), 0.0), 1.0)
      return rate * (0.5 * (1.0 + math.cos(math.pi * progress))
                     if t["lr_schedule"] == "cosine" else 1.0)

    self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

  def __call__(self, tokens) -> torch.Tensor:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    inputs = torch.cat([torch.full_like(tokens[:, :1], self.bos), tokens[:, :-1]], 1)
    logits = self.model(inputs).masked_fill(~self.mask, float("-inf"))
    nll = -torch.gather(F.log_softmax(logits, -1), -1, tokens[..., None])[..., 0]
    loss = nll.mean()
    loss.backward()
    if self.clip:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.optimizer.step()
    self.scheduler.step()
    return loss.detach()


def count_params(*modules: nn.Module) -> int:
  """Trainable parameters (frozen LPIPS weights and codebook buffers not counted)."""
  return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
