"""The `folder` source: a directory tree of image files, decoded with PIL,
with undecodable files skipped or reported (`data.on_bad_image`)."""

from __future__ import annotations

import atexit
import hashlib
import os
import pathlib
import shutil
import tempfile
import threading
from typing import Sequence

import numpy as np
from absl import logging
from PIL import Image
from PIL import ImageOps

from vqjax.data_config import IMAGE_EXTENSIONS

def on_bad_image(c, train: bool) -> str:
  """'skip' or 'error' for the training (train=True) or evaluation source."""
  if c.on_bad_image in ('skip', 'error'):
    return c.on_bad_image
  return 'skip' if train else 'error'


# ----------------------------------------------------------------------------
# folder: a directory tree of image files.


def _accepted_types() -> str:
  return ', '.join(IMAGE_EXTENSIONS) + ' (case-insensitive)'


def list_image_files(root: str) -> list[str]:
  """Sorted paths of all image files under `root` (recursive, skips dot-names)."""
  root = os.path.expanduser(str(root))
  if not root or not os.path.isdir(root):
    raise ValueError(
        f'Image folder {root!r} does not exist or is not a directory. Point '
        f'data.train_dir / data.val_dir at a folder (nested subfolders are '
        f'fine) of image files: {_accepted_types()}.')
  paths = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for f in filenames:
      if not f.startswith('.') and f.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.join(dirpath, f))
  if not paths:
    raise ValueError(
        f'No image files found under {root!r} (searched recursively for '
        f'{_accepted_types()}).')
  return sorted(paths)


def _decode_image_file(path: str) -> np.ndarray:
  """PIL decode -> uint8 HxWx3 RGB; raises whatever PIL raises."""
  with Image.open(path) as img:
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith('I;16'):
      grey = (np.asarray(img, np.uint16) >> 8).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == 'P' and 'transparency' in img.info:
      img = img.convert('RGBA')
    image = np.asarray(img.convert('RGB'))
  if image.ndim != 3 or image.shape[-1] != 3 or not min(image.shape[:2]):
    raise ValueError(f'decoded to shape {image.shape}, not H x W x 3')
  return image


def _undecodable_message(path: str, error: BaseException) -> str:
  return (f'Could not decode image file {path!r} ({type(error).__name__}: '
          f'{error}). The file is corrupt or not an image: delete it or '
          'replace it with a valid image, or set data.on_bad_image=\'skip\' '
          'to leave such files out.')


def load_image_file(path: str) -> np.ndarray:
  """Decodes an image file with PIL -> uint8 HxWx3 RGB.

  Greyscale is replicated, alpha dropped (palette transparency too), 16-bit
  greyscale scaled to 8 bits (>> 8), CMYK converted, EXIF orientation
  applied. Raises ValueError naming the file if it cannot be decoded.
  """
  try:
    return _decode_image_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(_undecodable_message(path, e)) from e


# Undecodable files met while skipping (data.on_bad_image='skip').
_bad_files: dict[str, str] = {}  # path -> reason, met in this process
_tally_dirs: list[str] = []       # one marker file per bad file, from workers
_bad_files_lock = threading.Lock()  # grain reads records in several threads


def new_tally_dir() -> str:
  """A temporary folder grain workers record bad files in (removed at exit)."""
  d = tempfile.mkdtemp(prefix='vqjax_bad_images_')
  atexit.register(shutil.rmtree, d, True)
  _tally_dirs.append(d)
  return d


def _read_tally(tally_dir: str) -> set[str]:
  paths = set()
  try:
    names = os.listdir(tally_dir)
  except OSError:
    return paths
  for name in names:
    try:
      with open(os.path.join(tally_dir, name), encoding='utf-8') as f:
        path = f.read()
    except OSError:
      continue
    if path:  # empty: a worker is still writing it
      paths.add(path)
  return paths


def bad_image_files() -> list[str]:
  """Sorted paths of the undecodable files skipped so far.

  Covers this process and the grain worker processes of the loaders it made.
  `len(bad_image_files())` is the running count the training log reports.
  """
  paths = set(_bad_files)
  for d in _tally_dirs:
    paths |= _read_tally(d)
  return sorted(paths)


def _record_bad_file(path: str, reason: str, tally_dir: str, action: str):
  """Counts `path` once and warns the first time it is met (over workers too)."""
  with _bad_files_lock:
    if path in _bad_files:
      return
    _bad_files[path] = reason
    count = len(_bad_files)
  first = True
  if tally_dir:
    marker = os.path.join(tally_dir, hashlib.sha1(path.encode()).hexdigest())
    try:
      with open(marker, 'x', encoding='utf-8') as f:  # exclusive: one writer
        f.write(path)
    except FileExistsError:
      first = False  # another worker met it first and warned
    except OSError:
      pass
    count = max(count, len(_read_tally(tally_dir)))
  if first:
    logging.warning(
        'Skipping undecodable image file %r (%s): %s. %d bad image file(s) '
        'skipped so far. Delete or replace it, or set '
        "data.on_bad_image='error' to stop at such files.",
        path, reason, action, count)


class ImageFolderSource:
  """Records: uint8 HxWx3 RGB images decoded from a list of files.

  on_bad_image='error': reading an undecodable file raises a ValueError
  naming it. 'skip': record i of an undecodable file i is the next decodable
  file (i + 1, i + 2, ... cyclically), so the stream stays a pure function of
  the indices; the file is logged and counted (`bad_image_files()`). If no
  file decodes, ValueError. `load(i)` returns None for a skipped file.

  cache_bytes > 0: decoded images are kept (read-only) until they fill that
  many bytes, so a folder that fits is decoded once per process instead of on
  every visit (the photo corpus: 75 PNGs, about 22 MiB decoded, was decoded
  32 times a step). Images past the budget are decoded each time, as without
  the cache. The same arrays either way.
  """

  def __init__(self, paths: Sequence[str], root: str,
               on_bad_image: str = 'error', cache_bytes: int = 0):
    if on_bad_image not in ('skip', 'error'):
      raise ValueError(f"on_bad_image={on_bad_image!r}; use 'skip' or 'error'.")
    self.paths = tuple(paths)
    self._root = root
    self.on_bad_image = on_bad_image
    self.tally_dir = ''  # set by loaders with worker processes
    self._bad: set[int] = set()  # known-bad indices (this process)
    self.cache_bytes = int(cache_bytes)
    self._cache: dict[int, np.ndarray] = {}
    self._cached_bytes = 0

  def __getstate__(self):  # worker processes start with an empty cache of their own
    state = dict(self.__dict__)
    state['_cache'], state['_cached_bytes'] = {}, 0
    return state

  def __len__(self) -> int:
    return len(self.paths)

  def load(self, index: int, action: str = 'left out') -> np.ndarray | None:
    """Decoded record `index`; None if undecodable and skipping (counted)."""
    index = int(index)
    if index in self._bad:
      return None
    cached = self._cache.get(index)
    if cached is not None:
      return cached
    path = self.paths[index]
    try:
      image = _decode_image_file(path)
      if self._cached_bytes + image.nbytes <= self.cache_bytes:
        image.setflags(write=False)  # shared by every later visit: never changed in place
        self._cache[index] = image
        self._cached_bytes += image.nbytes
      return image
    except Exception as e:  # pylint: disable=broad-except
      if self.on_bad_image == 'error':
        raise ValueError(_undecodable_message(path, e)) from e
      self._bad.add(index)
      _record_bad_file(path, f'{type(e).__name__}: {e}', self.tally_dir, action)
      return None

  def __getitem__(self, index: int) -> np.ndarray:
    n = len(self)
    index = int(index)
    for k in range(n):
      image = self.load((index + k) % n,
                        'its records use the next decodable file instead')
      if image is not None:
        return image
    raise ValueError(
        f'None of the {n} image files of {self._root!r} can be decoded (e.g. '
        f'{self.paths[0]!r}: {_bad_files.get(self.paths[0], "undecodable")}). '
        'Point data.train_dir / data.val_dir at a folder of valid images.')

  def __repr__(self) -> str:
    return (f'ImageFolderSource(root={self._root!r}, num_files={len(self)}, '
            f'on_bad_image={self.on_bad_image!r})')


def split_by_hash(paths: Sequence[str], root: str,
                  val_fraction: float) -> tuple[list[str], list[str]]:
  """Deterministic (train, val) split of `paths`.

  The round(val_fraction * n) files (at least 1 if val_fraction > 0) with the
  smallest sha1 of their path relative to `root` go to validation; both
  lists keep sorted order.
  """
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'data.val_fraction must be in [0, 1), got {val_fraction}.')
  n = len(paths)
  n_val = round(val_fraction * n)
  if val_fraction > 0:
    n_val = max(n_val, 1)
  if n - n_val < 1:
    raise ValueError(
        f'Only {n} image(s) under {root!r}: too few to hold out '
        f'val_fraction={val_fraction} for validation. Add images or set '
        'data.val_dir.')
  def key(p):
    rel = pathlib.PurePath(os.path.relpath(p, root)).as_posix()
    return hashlib.sha1(rel.encode('utf-8')).hexdigest()
  val = set(sorted(paths, key=key)[:n_val])
  return sorted(p for p in paths if p not in val), sorted(val)


def folder_sources(c) -> tuple[ImageFolderSource, ImageFolderSource]:
  if not c.train_dir:
    raise ValueError("data.name='folder' needs data.train_dir (and optionally "
                     'data.val_dir).')
  train_root = os.path.expanduser(str(c.train_dir))
  train_paths = list_image_files(train_root)
  if c.val_dir:
    val_root = os.path.expanduser(str(c.val_dir))
    val_paths = list_image_files(val_root)
  else:
    val_root = train_root + f'[val_fraction={c.val_fraction}]'
    train_paths, val_paths = split_by_hash(
        train_paths, train_root, float(c.val_fraction))
    train_root += f'[train,val_fraction={c.val_fraction}]'
  cache = int(getattr(c, 'decode_cache_mb', 0)) * 2**20
  return (ImageFolderSource(train_paths, train_root, on_bad_image(c, True), cache),
          ImageFolderSource(val_paths, val_root, on_bad_image(c, False), cache))

