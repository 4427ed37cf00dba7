"""The token sequence of one image's codes, and the codes' unigram statistics.

One sequence per image, levels coarsest first (`top` then `bottom`; HQ-VAE
`layer_1`..`layer_L`), each level in raster order (row by row), and each entry
of a multi-entry code (grouped: G, residual: L; the quantizer's code_shape)
as its own token, entries innermost:

  [top (0,0), top (0,1), ..., top (h-1,w-1), bottom (0,0), ..., bottom (H-1,W-1)]
  residual codes of L stages: [(0,0) stage 1, (0,0) stage 2, ..., (0,1) stage 1, ...]

This is the VQ-VAE-2 order (the top level first, the bottom one conditioned on
all of it) written as one sequence for one decoder-only transformer, not an
interleaving. One vocabulary covers every level: entry e of level l (K_l codes,
E_l entries) is a *segment* of K_l tokens at offset sum of the K E of the levels
before it plus e K_l; code c is token offset + c. Every position of the
sequence belongs to one segment, so the prior's distribution at a position is
over that segment's K_l tokens only (`Layout.lo`, `Layout.hi`): bits per code
are those of a K_l-way choice. The token `bos` (= num_code_tokens) starts every
sequence and is never predicted.

Where a layout comes from: the level names, code-map shapes and code shapes
from the codes file's first record (`export.read_record`); the codebook sizes
from the tokenizer's config.json when known (`vqjax.prior` with
prior.tokenizer), else the largest code seen in the files + 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable, Mapping

import numpy as np

from vqjax.quantizers.base import check_code_range

META_KEYS = ("source", "index")


@dataclasses.dataclass(frozen=True)
class Level:
  """One quantizer level: code map [h, w, *code_shape], codes in [0, codebook_size)."""

  name: str
  shape: tuple[int, int]
  code_shape: tuple[int, ...]
  codebook_size: int

  @property
  def entries(self) -> int:
    return math.prod(self.code_shape)

  @property
  def num_tokens(self) -> int:
    return self.shape[0] * self.shape[1] * self.entries

  @property
  def uniform_bits(self) -> float:
    """Bits per code of a uniform choice among the K codes: log2 K."""
    return math.log2(self.codebook_size)


@dataclasses.dataclass(frozen=True)
class Layout:
  """The sequence layout of the module docstring. Levels coarsest first."""

  levels: tuple[Level, ...]

  def __post_init__(self):
    if not self.levels:
      raise ValueError("a layout needs at least one level.")
    object.__setattr__(self, "levels", tuple(self.levels))

  # -- sizes ---------------------------------------------------------------------

  @property
  def level_names(self) -> tuple[str, ...]:
    return tuple(l.name for l in self.levels)

  @property
  def seq_len(self) -> int:
    """Tokens per image (BOS not counted)."""
    return sum(l.num_tokens for l in self.levels)

  @property
  def num_code_tokens(self) -> int:
    """Tokens a position can be: sum over levels of K E (the logits' width)."""
    return sum(l.codebook_size * l.entries for l in self.levels)

  @property
  def bos(self) -> int:
    return self.num_code_tokens

  @property
  def vocab_size(self) -> int:
    """Embedding rows: every code token and BOS."""
    return self.num_code_tokens + 1

  def level_offsets(self) -> list[int]:
    """Token offset of each level's first segment."""
    offsets, start = [], 0
    for l in self.levels:
      offsets.append(start)
      start += l.codebook_size * l.entries
    return offsets

  def level_slices(self) -> dict[str, slice]:
    """{level: the slice of the sequence it fills}."""
    out, start = {}, 0
    for l in self.levels:
      out[l.name] = slice(start, start + l.num_tokens)
      start += l.num_tokens
    return out

  @functools.cached_property
  def _per_position(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi, level = [], [], []
    for i, (l, offset) in enumerate(zip(self.levels, self.level_offsets())):
      entry = np.arange(l.num_tokens) % l.entries
      start = offset + entry * l.codebook_size
      lo.append(start)
      hi.append(start + l.codebook_size)
      level.append(np.full(l.num_tokens, i))
    return tuple(np.concatenate(a).astype(np.int32) for a in (lo, hi, level))

  @property
  def lo(self) -> np.ndarray:
    """int32 [seq_len]: the first token of each position's segment."""
    return self._per_position[0]

  @property
  def hi(self) -> np.ndarray:
    """int32 [seq_len]: one past the last token of each position's segment."""
    return self._per_position[1]

  @property
  def level_index(self) -> np.ndarray:
    """int32 [seq_len]: which level (index into `levels`) each position holds."""
    return self._per_position[2]

  # -- codes <-> tokens ------------------------------------------------------------

  def tokens(self, codes: Mapping[str, np.ndarray]) -> np.ndarray:
    """{level: int [N, h, w, *code_shape]} (or one image, without N) -> int32 [N, seq_len]."""
    single = np.asarray(codes[self.levels[0].name]).ndim == 2 + len(self.levels[0].code_shape)
    parts, lo = [], self.lo
    for l, s in zip(self.levels, self.level_slices().values()):
      c = np.asarray(codes[l.name])
      c = c[None] if single else c
      want = tuple(l.shape) + tuple(l.code_shape)
      if tuple(c.shape[1:]) != want:
        raise ValueError(f"codes[{l.name!r}] has shape {c.shape[1:]} per image; this "
                         f"layout has {want}.")
      check_code_range(c, l.codebook_size, l.name)
      parts.append(c.reshape(c.shape[0], -1).astype(np.int64) + lo[s])
    return np.concatenate(parts, axis=1).astype(np.int32)

  def codes(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `tokens`: int [N, seq_len] -> {level: int32 [N, h, w, *code_shape]}."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
      raise ValueError(f"tokens must be [N, {self.seq_len}]; got {tokens.shape}.")
    lo, hi = self.lo, self.hi
    if ((tokens < lo) | (tokens >= hi)).any():
      raise ValueError("a token lies outside its position's segment (not this layout's).")
    out = {}
    for l, s in zip(self.levels, self.level_slices().values()):
      c = tokens[:, s] - lo[s]
      out[l.name] = c.reshape((tokens.shape[0],) + tuple(l.shape) + tuple(l.code_shape)
                              ).astype(np.int32)
    return out

  # -- description -----------------------------------------------------------------

  def to_json(self) -> dict:
    return {"levels": [dict(name=l.name, shape=list(l.shape), code_shape=list(l.code_shape),
                            codebook_size=l.codebook_size) for l in self.levels]}

  @classmethod
  def from_json(cls, d: Mapping) -> "Layout":
    return cls(tuple(Level(l["name"], tuple(l["shape"]), tuple(l["code_shape"]),
                           int(l["codebook_size"])) for l in d["levels"]))

  def describe(self) -> str:
    return ", ".join(f"{l.name} {l.shape[0]}x{l.shape[1]}"
                     f"{'x' + 'x'.join(map(str, l.code_shape)) if l.code_shape else ''}"
                     f" (K={l.codebook_size})" for l in self.levels) + (
                         f": {self.seq_len} tokens, vocabulary {self.vocab_size}")


def record_levels(record: Mapping) -> list[tuple[str, tuple[int, int], tuple[int, ...]]]:
  """(name, (h, w), code_shape) of a parsed record's levels, coarsest (fewest
  positions) first; levels of one size keep the file's order."""
  names = [k for k in record if k not in META_KEYS]
  if not names:
    raise ValueError("a codes record without levels (only source and index).")
  shapes = {}
  for k in names:
    a = np.asarray(record[k])
    if a.ndim < 2 or not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"codes record field {k!r} is {a.dtype} {a.shape}, not an int "
                       "code map [h, w, ...].")
    shapes[k] = (tuple(a.shape[:2]), tuple(a.shape[2:]))
  order = sorted(range(len(names)), key=lambda i: shapes[names[i]][0][0] * shapes[names[i]][0][1])
  return [(names[i], *shapes[names[i]]) for i in order]


class CodeCounts:
  """Per level and entry, how often each code occurs (a growing histogram)."""

  def __init__(self):
    self.counts: dict[str, np.ndarray] = {}   # {level: int64 [E, K_seen]}
    self.num_images = 0

  def add(self, record: Mapping, levels: Iterable[tuple[str, tuple, tuple]]) -> None:
    self.num_images += 1
    for name, shape, code_shape in levels:
      c = np.asarray(record[name])
      if tuple(c.shape) != tuple(shape) + tuple(code_shape):
        raise ValueError(f"codes record {record.get('index', '?')} ({record.get('source', '')}) "
                         f"has {name} of shape {c.shape}; the first record's is "
                         f"{tuple(shape) + tuple(code_shape)}.")
      if c.size and c.min() < 0:
        raise ValueError(f"negative code {c.min()} in level {name!r}.")
      e = math.prod(code_shape)
      flat = c.reshape(-1, e)
      counts = self.counts.get(name, np.zeros((e, 0), np.int64))
      k = int(flat.max()) + 1 if flat.size else 1
      if k > counts.shape[1]:  # grow to the largest code seen (doubling)
        grown = np.zeros((e, max(k, 2 * counts.shape[1])), np.int64)
        grown[:, :counts.shape[1]] = counts
        counts = self.counts[name] = grown
      for i in range(e):
        counts[i, :k] += np.bincount(flat[:, i], minlength=k)

  def max_code(self, name: str) -> int:
    nz = np.nonzero(self.counts[name].sum(0))[0]
    return int(nz[-1]) if nz.size else 0

  def of(self, level: Level) -> np.ndarray:
    """int64 [E, K]: the counts of `level`'s K codes (ValueError for a code >= K)."""
    counts = self.counts[level.name]
    check_code_range(self.max_code(level.name), level.codebook_size, level.name)
    out = np.zeros((level.entries, level.codebook_size), np.int64)
    k = min(counts.shape[1], level.codebook_size)
    out[:, :k] = counts[:, :k]
    return out


def entropy_bits(counts: np.ndarray) -> float:
  """Entropy (bits) of the empirical distribution of a histogram."""
  p = np.asarray(counts, np.float64)
  p = p[p > 0] / p.sum()
  return float(-(p * np.log2(p)).sum())


def cross_entropy_bits(counts: np.ndarray, reference: np.ndarray) -> float:
  """Bits per sample of the codes counted in `counts` under `reference`'s
  empirical distribution with add-one (Laplace) smoothing over its K codes."""
  counts = np.asarray(counts, np.float64)
  q = np.asarray(reference, np.float64) + 1.0
  return float(-(counts * np.log2(q / q.sum())).sum() / counts.sum())


def unigram_summary(layout: Layout, train: CodeCounts, val: CodeCounts | None = None) -> dict:
  """The unigram baselines per level and overall.

  unigram_bits_per_code: entropy of the training codes' empirical unigram, per
  level the mean over its entries (each entry its own distribution);
  unigram_validation_bits_per_code: the validation codes' cross-entropy under
  that unigram (add-one smoothing), the same kind of number as the prior's
  validation NLL; uniform_bits_per_code: log2 K. Overall values are means over
  all tokens of an image (levels weighted by their token counts); *_per_image
  are the sums over an image's tokens.
  """
  out, per_level = {}, {}
  for l in layout.levels:
    counts = train.of(l)
    h = [entropy_bits(counts[e]) for e in range(l.entries)]
    d = dict(unigram_bits_per_code=float(np.mean(h)), uniform_bits_per_code=l.uniform_bits)
    if val is not None:
      v = val.of(l)
      d["unigram_validation_bits_per_code"] = float(np.mean(
          [cross_entropy_bits(v[e], counts[e]) for e in range(l.entries)]))
    per_level[l.name] = d
  for key in ("unigram_bits_per_code", "uniform_bits_per_code",
              "unigram_validation_bits_per_code"):
    if key not in per_level[layout.levels[0].name]:
      continue
    per_image = sum(per_level[l.name][key] * l.num_tokens for l in layout.levels)
    out[key] = per_image / layout.seq_len
    out[key.replace("_per_code", "_per_image")] = per_image
  out["levels"] = per_level
  return out
