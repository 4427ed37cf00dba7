"""Codes files -> token batches with grain, and the scans that size the vocabulary.

Training: one chained grain dataset over the codes file
(`export.codes_dataset`: ArrayRecord source, records parsed), this process's
shard of the records, shuffled anew every epoch (`shuffle(seed).repeat()`),
each record mapped to its tokens (`Layout.tokens`), read ahead by
READ_THREADS threads, batched; its iterator saves and restores its position
(checkpointed with the state). Evaluation: one deterministic pass over a
file, in this thread, padded to whole batches with a mask, every process the
same number of batches.
"""

from __future__ import annotations

import os
from typing import Iterator

import grain
import numpy as np
from absl import logging

from vqjax import export, inference
from vqjax.models import level_quantizers
from vqjax.prior.layout import CodeCounts, Layout, Level, record_levels


# Threads that read and parse training records ahead of the step (grain
# ReadOptions); parsing is Python-bound, so a few overlap it with the step.
READ_THREADS = 2


class ToTokens(grain.transforms.Map):
  """A parsed codes record -> int32 [seq_len] tokens."""

  def __init__(self, layout: Layout):
    self.layout = layout

  def map(self, record):
    return self.layout.tokens({n: record[n] for n in self.layout.level_names})[0]


def check_file(path: str, what: str = "prior.codes") -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what}={path!r}: no such codes file (write one with "
                            "python -m vqjax.main --mode=encode; docs/PRIOR.md).")


def scan(path: str, levels=None) -> tuple[list, CodeCounts]:
  """(levels of the first record, the code counts of every record) of a codes file.

  levels: (name, (h, w), code_shape) as `layout.record_levels`; every record
  must have them (the first record's when None).
  """
  check_file(path)
  dataset = export.codes_dataset(path)
  if not len(dataset):
    raise ValueError(f"the codes file {path} holds no records.")
  levels = levels or record_levels(dataset[0])
  counts = CodeCounts()
  for i in range(len(dataset)):  # in this thread: parsing is Python-bound
    counts.add(dataset[i], levels)
  return levels, counts


def tokenizer_codebooks(tokenizer: str) -> dict[str, tuple[tuple[int, ...], int]]:
  """{level: (code_shape, codebook_size)} of the quantizers in a tokenizer
  run's config.json, coarsest level first (no checkpoint read)."""
  config = inference.load_config(tokenizer)
  return {name: (tuple(q.code_shape), int(q.codebook_size))
          for name, q in level_quantizers(config.model).items()}


def make_layout(levels, counts: list[CodeCounts], tokenizer: str = "") -> tuple[Layout, str]:
  """The Layout of `levels`: codebook sizes from the tokenizer's config.json, or
  (no tokenizer) the largest code in `counts` + 1. Returns (layout, where the
  codebook sizes came from)."""
  if tokenizer:
    quantizers = tokenizer_codebooks(tokenizer)
    names = [n for n, _, _ in levels]
    if sorted(names) != sorted(quantizers):
      raise ValueError(f"the codes file's levels {names} are not those of the tokenizer "
                       f"{tokenizer} ({list(quantizers)}): pass the tokenizer that wrote "
                       "these codes.")
    by_name = {n: (s, cs) for n, s, cs in levels}
    out = []
    for name, (code_shape, k) in quantizers.items():  # the tokenizer's order: coarsest first
      shape, file_code_shape = by_name[name]
      if tuple(file_code_shape) != code_shape:
        raise ValueError(f"level {name!r} has codes of shape {file_code_shape} in the file "
                         f"and {code_shape} in the tokenizer {tokenizer}.")
      out.append(Level(name, tuple(shape), code_shape, k))
    return Layout(tuple(out)), f"tokenizer {os.path.abspath(tokenizer)}"
  out = [Level(name, tuple(shape), tuple(code_shape),
               max(c.max_code(name) for c in counts) + 1)
         for name, shape, code_shape in levels]
  logging.warning("No prior.tokenizer: the codebook sizes are the largest codes seen + 1 "
                  "(%s); pass --config.prior.tokenizer=WORKDIR for the tokenizer's own.",
                  ", ".join(f"{l.name} {l.codebook_size}" for l in out))
  return Layout(tuple(out)), "the largest code in the codes files + 1"


def train_iterator(path: str, layout: Layout, *, batch_size: int, seed: int,
                   shard_index: int = 0, shard_count: int = 1):
  """Endless iterator of {'tokens': int32 [batch_size, seq_len]} (batch_size per
  process), shuffled anew each epoch, a pure function of seed and position; it
  has get_state/set_state (grain.checkpoint)."""
  dataset = export.codes_dataset(path)
  dataset = dataset[shard_index::shard_count]
  if len(dataset) < 1:
    raise ValueError(f"the codes file {path} has no records for process {shard_index} "
                     f"of {shard_count}.")
  dataset = (dataset.shuffle(seed=seed).repeat().map(ToTokens(layout))
             .to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS,
                                                prefetch_buffer_size=2 * batch_size))
             .batch(batch_size, drop_remainder=True).map(lambda t: {"tokens": t}))
  return iter(dataset)


def eval_batches(path: str, layout: Layout, *, batch_size: int, shard_index: int = 0,
                 shard_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's contiguous part of a codes file:
  {'tokens': int32 [batch_size, seq_len], 'mask': bool [batch_size]}, padding
  rows zeros with mask False. Every process yields the same number of batches;
  over all of them every record appears once with mask True."""
  dataset = export.codes_dataset(path).map(ToTokens(layout))
  n = len(dataset)
  per_shard = -(-n // shard_count)
  start = min(n, shard_index * per_shard)
  end = min(n, start + per_shard)
  for first in range(start, start + per_shard, batch_size):
    tokens = np.broadcast_to(layout.lo, (batch_size, layout.seq_len)).copy()  # padding: valid
    mask = np.zeros((batch_size,), bool)
    for row, i in enumerate(range(first, min(end, first + batch_size))):
      tokens[row], mask[row] = dataset[i], True
    yield {"tokens": tokens, "mask": mask}
