"""Residual vector quantization (RQ; Zeghidour et al. 2021, SoundStream; Lee et
al. 2022, RQ-VAE): L stages, stage l quantizing what the stages before it left.

  r_1 = z,   q_l = Q_l(r_l),   r_{l+1} = r_l - sg(q_l),   z_q = q_1 + ... + q_L

Each stage is a quantizer of the interface (EMA VQ by default, or a learned
codebook) with K codes of dimension D: its own codebook, dead-code reset and
commitment beta |r_l - sg(q_l)|^2 = beta |z - sg(q_1 + ... + q_l)|^2 (RQ-VAE's
Eq. 15, each stage's terms summed), or, with shared_codebook=True, one
quantizer for every stage (for EMA: L sequential updates per step, as
vector-quantize-pytorch's `shared_codebook`). The sum is passed to the decoder
with one straight-through gradient to z (the stages' own estimators do not
apply). One position carries L codes: L log2 K bits.

Codes: [..., L] int32, stage l's index in [0, K); code_shape (L,),
codebook_size K, histogram_size L K (stage l at offset l K), or K with the
shared codebook (every stage indexes the same codes).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.quantizers.base import Quantizer, check_codes
from vqjax.quantizers.ema_vq import VectorQuantizerEMA


class ResidualQuantizer(Quantizer):
  """L residual stages over z [..., D] (module docstring).

  Fields:
    num_codes: K per stage.
    code_dim: D.
    num_stages: L >= 1.
    shared_codebook: one quantizer ('stage_shared') for every stage instead of
      one per stage ('stage_<l>', l = 0..L-1).
    stage_quantizer: factory of a stage, called as stage_quantizer(num_codes=K,
      code_dim=D); None: VectorQuantizerEMA.

  Returns (z_q [..., D], aux): aux['indices'] [..., L]; aux['losses']: every
  stage term summed over the stages; aux['metrics']: 'stage_<l>/<name>' per
  stage, '<name>' aggregated (perplexity: mean; counts: sum).
  """

  num_codes: int
  code_dim: int
  num_stages: int = 2
  shared_codebook: bool = False
  stage_quantizer: Callable[..., nn.Module] | None = None

  @property
  def codebook_size(self) -> int:
    return self.num_codes

  @property
  def code_shape(self) -> tuple[int, ...]:
    return (self.num_stages,)

  @property
  def histogram_size(self) -> int:
    return self.num_codes * (1 if self.shared_codebook else self.num_stages)

  @property
  def entries(self) -> tuple[str, tuple[str, ...]]:
    if self.shared_codebook:
      return "", ()
    return "stages", tuple(f"stage_{l}" for l in range(self.num_stages))

  def flat_codes(self, codes: jax.Array) -> jax.Array:
    return codes if self.shared_codebook else super().flat_codes(codes)

  def make_stage(self, **kwargs) -> nn.Module:
    """A stage quantizer (unbound with parent=None; for checks)."""
    factory = self.stage_quantizer or VectorQuantizerEMA
    return factory(num_codes=self.num_codes, code_dim=self.code_dim, **kwargs)

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work, the stage quantizer's included."""
    if self.num_stages < 1:
      raise ValueError(f"{key('num_stages')}={self.num_stages} must be >= 1.")
    sub_key = lambda name: (key(name) if name in ("num_codes", "code_dim")
                            else key(f"stage_quantizer.{name}"))
    self.make_stage(parent=None).check(key=sub_key)

  def setup(self):
    self.check()
    if self.shared_codebook:
      self.stage_shared = self.make_stage()
    else:
      for l in range(self.num_stages):
        setattr(self, f"stage_{l}", self.make_stage())

  def _stages(self) -> list[nn.Module]:
    if self.shared_codebook:
      return [self.stage_shared] * self.num_stages
    return [getattr(self, f"stage_{l}") for l in range(self.num_stages)]

  def __call__(self, z_e: jax.Array, *, train: bool,
               step: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    z = z_e.astype(jnp.float32)
    total = jnp.zeros(z.shape, jnp.float32)
    auxes = []
    for stage in self._stages():
      q, aux = stage(z - total, train=train, step=step)
      total = total + jax.lax.stop_gradient(q.astype(jnp.float32))
      auxes.append(aux)
    losses = {name: sum(a["losses"][name] for a in auxes) for name in auxes[0]["losses"]}
    stats = {f"stage_{l}/{name}": value for l, a in enumerate(auxes)
             for name, value in a["metrics"].items()}
    for name in auxes[0]["metrics"]:
      values = [jnp.asarray(a["metrics"][name], jnp.float32) for a in auxes]
      stats[name] = sum(values) / len(values) if "perplexity" in name else sum(values)
    aux = dict(indices=jnp.stack([a["indices"] for a in auxes], axis=-1),
               losses=losses, metrics=stats)
    # Value: the sum exactly (z - sg(z) is 0); gradient: the identity to z.
    z_q = total + (z - jax.lax.stop_gradient(z))
    return z_q.astype(z_e.dtype), aux

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes int32 [..., L] -> z_q [..., D] float32 (the stages' codes summed in order)."""
    check_codes(codes, self)
    total = None
    for l, stage in enumerate(self._stages()):
      q = stage.decode(codes[..., l]).astype(jnp.float32)
      total = q if total is None else total + q
    return total
