"""Multi-group quantization (MGVQ; Jia et al. 2025, "Could VQ-VAE Beat VAE?").

z [..., G*d] is split into G contiguous channel groups (group i: channels
i*d .. (i+1)*d - 1), each quantized by its own sub-quantizer with K/G codes of
dimension d, so one position carries G indices and G log2(K/G) bits. The
projections around the quantizer must keep the groups apart too:
`GroupedProjection` is the grouped 1x1 convolution for that.

Nested group dropout (MGVQ's first training stage): in training, one
u ~ U(0, 1) is drawn per call (`dropout_scope='batch'`, the released code) or
per example of the leading axis ('example'), and group i is replaced by zeros
when u < drop_probs[i]. drop_probs must be non-decreasing with drop_probs[0] = 0,
so what is dropped is always a suffix and group 0 always stays. The released
(0, 0.2, 0.3, 0.4) keeps 1/2/3/4 of 4 groups with probabilities 0.2/0.1/0.1/0.6.
Groups beyond len(drop_probs) take its last entry, so they go with the last
listed group and the mask stays nested (the released code never drops them,
which for G = 8 drops groups 1-3 while keeping 4-7: not a suffix). group_dropout=False is
the fine-tuning stage. The draw uses the 'sample' PRNG stream
(`rngs={'sample': key}`) with the global batch shape, so 8 devices draw what 1
device draws.

Every group is quantized in every call (a dropped group's sub-quantizer still
sees its encoder output, reports its indices and losses and, for the EMA
quantizer, updates its codebook); only its output is zeroed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.quantizers.base import Quantizer, check_codes
from vqjax.quantizers.ema_vq import VectorQuantizerEMA

SAMPLE_RNG = "sample"
DROPOUT_SCOPES = ("batch", "example")
RELEASED_DROP_PROBS = (0.0, 0.2, 0.3, 0.4)


def check_settings(*, num_groups: int, num_codes: int, code_dim: int,
                   drop_probs: Sequence[float], dropout_scope: str,
                   key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError for settings that cannot work (`GroupedQuantizer` runs it;
  `config_lib.validate` too, `key` mapping each name to its config key)."""
  g = num_groups
  if g < 1:
    raise ValueError(f"{key('num_groups')}={g} must be >= 1.")
  for name, size in (("num_codes", num_codes), ("code_dim", code_dim)):
    if size % g:
      raise ValueError(
          f"{key(name)}={size} is not divisible by {key('num_groups')}={g}: num_groups must "
          f"divide {key('num_codes')}={num_codes} and {key('code_dim')}={code_dim}; each "
          "group takes num_codes / num_groups codes of code_dim / num_groups channels "
          "(e.g. num_codes=128, num_groups=2: 2 codebooks of 64).")
  p = [float(x) for x in drop_probs]
  if p and (p[0] != 0.0 or any(b < a for a, b in zip(p, p[1:]))
            or not all(0.0 <= x <= 1.0 for x in p)):
    raise ValueError(f"{key('drop_probs')}={tuple(drop_probs)} must be non-decreasing in "
                     "[0, 1] with the first 0 (only suffixes of groups are dropped, group 0 "
                     "never), e.g. (0, 0.2, 0.3, 0.4).")
  if dropout_scope not in DROPOUT_SCOPES:
    raise ValueError(f"{key('dropout_scope')}={dropout_scope!r}; choose one of "
                     f"{DROPOUT_SCOPES}.")


def keep_probabilities(drop_probs: Sequence[float], num_groups: int) -> list[float]:
  """[P(exactly the first k groups are kept) for k = 1..G] (drop_probs valid, see module doc).

  Group i is kept iff u >= p_i, so exactly k are kept iff p_{k-1} <= u < p_k
  (p_G = 1).
  """
  p = _padded_probs(drop_probs, num_groups) + [1.0]
  return [p[k] - p[k - 1] for k in range(1, num_groups + 1)]


def _padded_probs(drop_probs: Sequence[float], num_groups: int) -> list[float]:
  """drop_probs cut, or padded with its last entry, to num_groups entries."""
  p = [float(x) for x in drop_probs] or [0.0]
  return (p + [p[-1]] * num_groups)[:num_groups]


class GroupedProjection(nn.Module):
  """1x1 convolution whose output group j reads only input group j.

  x [B, ..., C_in] -> [B, ..., features]; C_in and features divisible by
  num_groups (nn.Conv with feature_group_count=num_groups, contiguous groups
  as in `GroupedQuantizer`).
  """

  features: int
  num_groups: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    g = self.num_groups
    if x.shape[-1] % g or self.features % g:
      raise ValueError(f"GroupedProjection: input channels {x.shape[-1]} and features="
                       f"{self.features} must both be divisible by num_groups={g}.")
    kernel = (1,) * max(1, x.ndim - 2)
    return nn.Conv(self.features, kernel, feature_group_count=g, use_bias=self.use_bias,
                   dtype=self.dtype, name="conv")(x)


class GroupedQuantizer(Quantizer):
  """G independent sub-quantizers over channel groups (module docstring).

  Fields:
    num_groups: G.
    num_codes: total codes K; each group gets K / G.
    code_dim: total input channels G*d; each group gets d = code_dim / G.
    group_quantizer: factory of a sub-quantizer, called as
      group_quantizer(num_codes=K/G, code_dim=d) and named 'group_<i>'; None:
      VectorQuantizerEMA (e.g. functools.partial(LearnedCodebookQuantizer,
      l2_normalize=True) for MGVQ's learned cosine-similarity codebook; its
      gradient estimator is its own).
    group_dropout, drop_probs, dropout_scope: nested group dropout.
    active_groups: decode with only the first k groups (zeros for the rest) in
      every call, train or eval; None: all. The call argument overrides it.

  Call with z_e [..., G*d]. Returns (z_q [..., G*d], aux) with aux['indices']
  [..., G] int32 (group i's index in [0, K/G)); aux['losses']: each term the
  mean over the groups (so G = 1 is the plain quantizer and the scale matches
  one quantizer over all channels); aux['metrics']: 'group_<i>/<name>' for
  every sub-quantizer metric, '<name>' aggregated (perplexity: mean over
  groups; counts such as codes used or reset: sum), and 'groups_kept' (mean
  number of groups the decoder sees in this call). Codes: code_shape (G,),
  codebook_size K/G, histogram_size K (group i at offset i K/G).
  """

  num_groups: int
  num_codes: int
  code_dim: int
  group_quantizer: Callable[..., nn.Module] | None = None
  group_dropout: bool = True
  drop_probs: Sequence[float] = RELEASED_DROP_PROBS
  dropout_scope: str = "batch"
  active_groups: int | None = None

  @property
  def codebook_size(self) -> int:
    """K / G: the size of each entry's index space in `aux['indices']`."""
    return self.num_codes // self.num_groups

  @property
  def code_shape(self) -> tuple[int, ...]:
    return (self.num_groups,)

  @property
  def entries(self) -> tuple[str, tuple[str, ...]]:
    return "groups", tuple(f"group_{i}" for i in range(self.num_groups))

  def sub_quantizer(self, **kwargs) -> nn.Module:
    """Group i's quantizer (unbound when kwargs has no name; for checks and sizes)."""
    factory = self.group_quantizer or VectorQuantizerEMA
    return factory(num_codes=self.codebook_size, code_dim=self.code_dim // self.num_groups,
                   **kwargs)

  def check(self, key: Callable[[str], str] = lambda name: name) -> None:
    """ValueError for settings that cannot work, the sub-quantizer's included
    (`key`: argument name -> config key; the sub-quantizer's under 'group_quantizer.')."""
    check_settings(num_groups=self.num_groups, num_codes=self.num_codes,
                   code_dim=self.code_dim, drop_probs=self.drop_probs,
                   dropout_scope=self.dropout_scope, key=key)
    if self.codebook_size < 2:
      raise ValueError(f"{key('num_codes')}={self.num_codes} / {key('num_groups')}="
                       f"{self.num_groups} must be >= 2 codes per group.")
    sub_key = lambda name: (f"{key('num_codes')} / {key('num_groups')}" if name == "num_codes"
                            else key(f"group_quantizer.{name}"))
    self.sub_quantizer(parent=None).check(key=sub_key)

  def setup(self):
    self.check()
    for i in range(self.num_groups):
      setattr(self, f"group_{i}", self.sub_quantizer())

  def _groups(self) -> list[nn.Module]:
    return [getattr(self, f"group_{i}") for i in range(self.num_groups)]

  def _active(self, active_groups: int | None) -> int:
    g = self.num_groups
    active = active_groups if active_groups is not None else self.active_groups
    active = g if active is None else int(active)
    if not 1 <= active <= g:
      raise ValueError(f"active_groups={active} must be in [1, num_groups={g}].")
    return active

  def _keep_masks(self, z_e: jax.Array, train: bool, active: int) -> list:
    """Per group: None (always kept), False (never) or a traced bool [B, 1, ..] / []."""
    g = self.num_groups
    probs = _padded_probs(self.drop_probs, g)
    dropout = train and self.group_dropout and any(p > 0 for p in probs)
    u = None
    if dropout and not self.is_initializing():
      if not self.has_rng(SAMPLE_RNG):
        raise ValueError("GroupedQuantizer with group_dropout in training needs the "
                         f"'{SAMPLE_RNG}' PRNG stream: apply(..., rngs={{'{SAMPLE_RNG}': key}}), "
                         "or set group_dropout=False.")
      key = self.make_rng(SAMPLE_RNG)
      if self.dropout_scope == "batch":
        u = jax.random.uniform(key, ())
      elif z_e.ndim < 2:
        raise ValueError(f"dropout_scope='example' needs z_e [B, ..., C]; got shape {z_e.shape}.")
      else:
        u = jax.random.uniform(key, (z_e.shape[0],) + (1,) * (z_e.ndim - 1))
    masks = []
    for i, p in enumerate(probs):
      if i >= active:
        masks.append(False)
      elif u is None or p <= 0:
        masks.append(None)
      else:
        masks.append(u >= p)
    return masks

  def __call__(self, z_e: jax.Array, *, train: bool, step: jax.Array | None = None,
               active_groups: int | None = None) -> tuple[jax.Array, dict[str, Any]]:
    g = self.num_groups
    if z_e.shape[-1] != self.code_dim:
      raise ValueError(f"grouped quantizer input has {z_e.shape[-1]} channels, expected "
                       f"code_dim={self.code_dim} (= num_groups x group dim).")
    active = self._active(active_groups)
    d = self.code_dim // g
    masks = self._keep_masks(z_e, train, active)
    outputs, indices, auxes, kept = [], [], [], []
    for i, sub in enumerate(self._groups()):
      z_q, aux = sub(z_e[..., i * d:(i + 1) * d], train=train, step=step)
      if masks[i] is False:
        z_q = jnp.zeros_like(z_q)
        kept.append(jnp.zeros(()))
      elif masks[i] is not None:
        z_q = jnp.where(masks[i], z_q, jnp.zeros_like(z_q))
        kept.append(jnp.mean(masks[i].astype(jnp.float32)))
      else:
        kept.append(jnp.ones(()))
      outputs.append(z_q)
      indices.append(aux["indices"])
      auxes.append(aux)
    losses = {name: sum(a["losses"][name] for a in auxes) / g for name in auxes[0]["losses"]}
    stats = {f"group_{i}/{name}": value for i, a in enumerate(auxes)
             for name, value in a["metrics"].items()}
    for name in auxes[0]["metrics"]:
      values = [jnp.asarray(a["metrics"][name], jnp.float32) for a in auxes]
      stats[name] = sum(values) / g if "perplexity" in name else sum(values)
    stats["groups_kept"] = sum(kept)
    z_q = outputs[0] if g == 1 else jnp.concatenate(outputs, axis=-1)
    aux = dict(indices=jnp.stack(indices, axis=-1), losses=losses, metrics=stats)
    return z_q, aux

  def decode(self, codes: jax.Array, active_groups: int | None = None) -> jax.Array:
    """codes int32 [..., G] -> z_q [..., G*d] float32 (groups from the active_groups-th on zero)."""
    check_codes(codes, self)
    active = self._active(active_groups)
    parts = [sub.decode(codes[..., i]).astype(jnp.float32) for i, sub in enumerate(self._groups())]
    parts = [p if i < active else jnp.zeros_like(p) for i, p in enumerate(parts)]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
