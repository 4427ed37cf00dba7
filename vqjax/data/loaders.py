"""Loaders: the endless, shuffled, augmented training loader and the
deterministic, padded evaluation batches, for this process's shard.

Every loader yields {'image': uint8 [b, S, S, 3]} (pixels in [0, 255]); the
jitted steps map them to [-1, 1] on the device (`to_model_range`).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import grain
import numpy as np

from vqjax.data import augment
from vqjax.data.folder import new_tally_dir
from vqjax.data.sources import color_augment_on, create_sources, resolve
from vqjax.data.transforms import EvalTransform, TrainTransform

def per_process_batch_size(global_batch_size: int, shard_count: int) -> int:
  """global batch // shard_count; ValueError unless it divides exactly."""
  if global_batch_size <= 0 or global_batch_size % shard_count:
    raise ValueError(
        f'data.batch_size={global_batch_size} (global) must be a positive '
        f'multiple of the number of processes shard_count={shard_count}.')
  return global_batch_size // shard_count


def create_train_loader(data_config, *, seed: int, shard_index: int = 0,
                        shard_count: int = 1) -> grain.DataLoader:
  """Endless, shuffled, augmented training loader for this process.

  Yields {'image': uint8 [b, S, S, 3]} with
  b = batch_size // shard_count. Random crop (after optional resize for
  folder/tfds), random horizontal flip, colour augmentation if
  `color_augment_on` (random hue rotation and channel order,
  `vqjax.data.augment.ColorAugment`); order, crops and colours are a pure function
  of `seed` (0 <= seed < 2**32) and the position in the stream. Iterate with
  `it = iter(loader)`; `it` supports get_state/set_state (see module doc).
  """
  c = resolve(data_config)
  local_batch = per_process_batch_size(int(c.batch_size), shard_count)
  train_source, _ = create_sources(c.__dict__)
  shard_options = grain.sharding.ShardOptions(
      shard_index=shard_index, shard_count=shard_count, drop_remainder=True)
  if len(train_source) < shard_count:
    raise ValueError(f'Only {len(train_source)} training examples for '
                     f'{shard_count} shards.')
  sampler = grain.samplers.IndexSampler(
      num_records=len(train_source), shard_options=shard_options,
      shuffle=True, num_epochs=None, seed=int(seed))
  if int(c.num_workers) and getattr(train_source, 'on_bad_image', '') == 'skip':
    train_source.tally_dir = new_tally_dir()  # workers report skipped files
  transform = TrainTransform(image_size=c.image_size,
                              resize_size=c.resize_size,
                              fit=c.name != 'builtin')
  operations = [transform]
  if color_augment_on(c.__dict__):
    operations.append(augment.ColorAugment(
        max_hue_degrees=float(c.color_hue_degrees), permute=bool(c.color_permute),
        prob=float(c.color_prob)))
  return grain.DataLoader(
      data_source=train_source,
      sampler=sampler,
      operations=operations + [
          grain.transforms.Batch(local_batch, drop_remainder=True)],
      worker_count=int(c.num_workers),
      shard_options=shard_options,
  )


def create_eval_batches(data_config, *, batch_size: int, shard_index: int = 0,
                        shard_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over this process's part of the validation split.

  `batch_size` is per process. The validation records are split into
  shard_count contiguous parts of ceil(n / shard_count); every process yields
  the same number of batches, ceil(ceil(n / shard_count) / batch_size), so
  multi-host eval steps stay in lockstep. Yields
  {'image': uint8 [batch_size, S, S, 3], 'mask': bool [batch_size]};
  padding rows are zeros with mask False. Over all processes every validation
  image appears exactly once with mask True.
  """
  c = resolve(data_config)
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index={shard_index} not in [0, {shard_count}).')
  _, val_source = create_sources(c.__dict__)
  return _eval_batches(c, val_source, batch_size, shard_index, shard_count)


def _eval_batches(c, val_source, batch_size, shard_index, shard_count):
  n = len(val_source)
  per_shard = -(-n // shard_count)
  start = min(n, shard_index * per_shard)
  end = min(n, start + per_shard)
  num_batches = -(-per_shard // batch_size)
  s = c.image_size
  crops = iter(())
  skip = getattr(val_source, 'on_bad_image', '') == 'skip'
  if end > start:
    if skip:  # bad files become None, which grain drops: mask False rows
      if c.num_workers:
        val_source.tally_dir = new_tally_dir()
      ds = grain.MapDataset.range(start, end).map(val_source.load)
    else:
      ds = grain.MapDataset.source(val_source)[start:end]
    ds = ds.map(EvalTransform(s, c.resize_size if c.name != 'builtin' else 0))
    ds = ds.to_iter_dataset().batch(batch_size, drop_remainder=False)
    if c.num_workers:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=int(c.num_workers)))
    crops = iter(ds)
  num_valid = 0
  for _ in range(num_batches):
    images = np.zeros((batch_size, s, s, 3), np.uint8)
    mask = np.zeros((batch_size,), bool)
    batch = next(crops, None)
    if batch is not None:
      k = batch.shape[0]
      images[:k] = batch
      mask[:k] = True
      num_valid += k
    elif skip and end > start and not num_valid:
      raise ValueError(
          f'None of the {end - start} validation image files of '
          f'{val_source!r} (records {start}..{end - 1}) can be decoded, e.g. '
          f'{val_source.paths[start]!r}; see the warnings above. Point '
          'data.val_dir at a folder of valid images.')
    yield {'image': images, 'mask': mask}


# ----------------------------------------------------------------------------
# Background preparation of training batches.


class PrefetchIterator:
  """Wraps a training iterator: a background thread prepares the next `depth`
  batches while the train step runs, so the loop does not wait for the
  loader's host work (decoding, crops, colour augmentation, batching).

  The batches and their order are the wrapped iterator's. get_state() is the
  position after the last batch handed out (not after those prepared ahead),
  set_state() drops the prepared batches and restarts from the given state, so
  checkpoints resume exactly as without prefetching (grain's checkpoint
  handler uses get_state/set_state/start_prefetch). An error in the loader is
  raised by the next() that would have returned its batch.
  """

  def __init__(self, iterator, depth: int = 2):
    if depth < 1:
      raise ValueError(f'depth={depth} must be >= 1.')
    self._it = iterator
    self._depth = depth
    # An iterator without positions (a plain generator) is prefetched all the same.
    self._stateful = hasattr(iterator, 'get_state')
    self._state = iterator.get_state() if self._stateful else None
    self._thread = None
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self.start_prefetch()

  def _fill(self, stop: threading.Event, out: queue.Queue):
    while not stop.is_set():
      try:
        batch = next(self._it)
        item = (batch, self._it.get_state() if self._stateful else None, None)
      except BaseException as e:  # pylint: disable=broad-except
        item = (None, None, e)
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[2] is not None:
        return

  def start_prefetch(self) -> None:
    """Starts the background thread (a no-op while it runs)."""
    if self._thread is not None and self._thread.is_alive():
      return
    self._stop = threading.Event()
    self._queue = queue.Queue(maxsize=self._depth)
    self._thread = threading.Thread(target=self._fill, args=(self._stop, self._queue),
                                    name='vqjax-prefetch', daemon=True)
    self._thread.start()

  def close(self) -> None:
    """Stops the background thread; prepared batches are dropped."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None

  def __iter__(self):
    return self

  def __next__(self):
    if self._thread is None:
      self.start_prefetch()
    batch, state, error = self._queue.get()
    if error is not None:
      self._thread = None
      raise error
    self._state = state
    return batch

  def get_state(self) -> bytes:
    if not self._stateful:
      raise AttributeError(f'{type(self._it).__name__} has no get_state')
    return self._state

  def set_state(self, state: bytes) -> None:
    self.close()
    self._it.set_state(state)
    self._state = self._it.get_state()


def prefetch(iterator, depth: int):
  """`PrefetchIterator(iterator, depth)`, or the iterator itself for depth 0."""
  return PrefetchIterator(iterator, depth) if depth else iterator


# ----------------------------------------------------------------------------
# Checkpointing helpers for the training iterator.


def iterator_state(it: grain.DataLoaderIterator) -> bytes:
  """Serialized position of a training iterator (JSON bytes, small)."""
  return it.get_state()


def restore_iterator_state(it: grain.DataLoaderIterator, state: bytes) -> None:
  """Moves `it` (from an identically configured loader) to saved `state`."""
  if isinstance(state, str):
    state = state.encode()
  it.set_state(state)


__all__ = [
    'create_eval_batches', 'create_sources', 'create_train_loader', 'iterator_state',
    'per_process_batch_size', 'prefetch', 'PrefetchIterator', 'restore_iterator_state',
]
