"""Input pipeline: image datasets -> grain loaders of uint8 NHWC images.

Every loader yields ``{'image': uint8 [b, S, S, 3]}`` (pixels in [0, 255]),
``S = data_config.image_size``. The jitted steps map them to the model's
``[-1, 1]`` on the device (``to_model_range``: ``uint8 / 127.5 - 1``), so the
host and grain's worker processes move a quarter of the bytes float32 needs.

Data sources (``data_config.name``):

* ``'builtin'`` (offline default): the colour photos that scikit-image ships
  (``skimage.data``). Validation = the non-overlapping ``S x S`` grid crops of
  ``builtin_val_images`` (default chelsea, coffee), anchored at the top-left
  corner, row-major, photo by photo. Training = the other photos; record ``i``
  of the training source is a whole photo (photo ``j`` is repeated
  ``(H_j // S) * (W_j // S)`` times) and the training transform cuts a random
  ``S x S`` crop anywhere inside it, so one "epoch" holds as many crops as the
  training photos hold non-overlapping crops. Photos smaller than ``S`` are not
  used. ``resize_size`` is ignored for builtin.
* ``'folder'``: a directory tree of ``.jpg/.jpeg/.png/.webp/.bmp`` files
  (case-insensitive; files and directories whose name starts with ``.`` are
  skipped), decoded with PIL to RGB (greyscale is replicated, alpha and
  palette transparency are dropped, 16-bit greyscale is scaled to 8 bits,
  CMYK is converted, EXIF orientation applied).
  Use ``train_dir`` + ``val_dir``, or only ``train_dir``: then a fixed fraction
  ``val_fraction`` of the files, chosen by a hash of their path relative to
  ``train_dir``, is held out for validation (deterministic, independent of
  machine and listing order). Files that cannot be decoded (truncated, empty,
  not an image) are handled by ``on_bad_image`` (see "Bad data" below).
* ``'tfds'``: a TensorFlow Datasets dataset already prepared on disk in the
  ``array_record`` format, read with
  ``tfds.builder(tfds_name, data_dir=tfds_data_dir).as_data_source(split)``
  (no TensorFlow needed to read). Records must hold an ``'image'`` (uint8
  ``H x W x C``, C in 1, 3, 4). Nothing is ever downloaded: if the dataset is
  not on disk this fails at once with instructions.

Image geometry for ``folder``/``tfds``: if ``resize_size > 0`` the shorter side
is first resized to ``resize_size`` (bicubic, aspect kept; it must be
``>= image_size``). Images whose shorter side is then still below
``image_size`` get their shorter side resized up to ``image_size``. Training
takes a random ``S x S`` crop, evaluation the centre crop. Training also flips
horizontally with probability 1/2.

Preparing ImageNet (ILSVRC 2012) for ``name='tfds'``, once, offline
----------------------------------------------------------------------
1. Download ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` from
   https://image-net.org (registration needed) into a directory, e.g.
   ``~/imagenet_tars`` (do not extract them).
2. Build the array_record version (preparation, unlike reading, may need
   TensorFlow: ``pip install tensorflow-cpu`` in the environment that builds)::

     tfds build imagenet2012 --manual_dir=~/imagenet_tars \\
         --data_dir=~/tensorflow_datasets --file_format=array_record

3. Train with ``data.name='tfds'``, ``data.tfds_name='imagenet2012'``,
   ``data.tfds_data_dir='~/tensorflow_datasets'`` (``train_split='train'``,
   ``val_split='validation'``), e.g. ``image_size=256, resize_size=256``.
   If ``tfds_data_dir`` is empty, ``$TFDS_DATA_DIR`` or
   ``~/tensorflow_datasets`` is used, as in tfds.

Bad data (``data.on_bad_image``, folder only)
---------------------------------------------
Files are decoded when read, so a bad file is met mid-run, not at start.
``'error'`` raises a ``ValueError`` naming the file. ``'skip'``: in training
the record of a bad file is replaced by the next decodable file (index + 1,
+ 2, ... cyclically), so batch shapes stay fixed and the stream stays a pure
function of seed and position; in evaluation the bad file is left out (its
row is padding with mask False) and every other file still counts once. Each
skipped file is logged (absl warning, with the running count) the first time
it is met and listed by ``bad_image_files()`` (grain worker processes
included). ``''`` (default) = ``'skip'`` for training and ``'error'`` for
evaluation, so metrics never silently cover fewer images. A folder in which
no file decodes fails with a clear error; an empty or missing folder fails
when the loader is created.

Multi-host: pass ``shard_index=jax.process_index()``,
``shard_count=jax.process_count()``. Each process reads its own shard
(grain ``ShardOptions(drop_remainder=True)``) and yields
``batch_size // shard_count`` examples per step.

Saving / restoring the training data position
---------------------------------------------
``create_train_loader`` returns a ``grain.DataLoader``; ``it = iter(loader)``
is a ``grain.DataLoaderIterator`` whose ``get_state() -> bytes`` /
``set_state(bytes)`` capture the exact position (sampler index; the crops are
a pure function of seed and index, so the stream continues identically).
With orbax (grain registers its handler on import)::

  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(it)))
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(it)))   # sets `it` in place

(vqjax/checkpointing.py does exactly this; ``iterator_state(it)`` /
``restore_iterator_state(it, state)`` do the same without orbax.) A state can only be restored into a loader built
from the same config, seed, shard and ``num_workers``: grain checks this.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import os
import pathlib
import shutil
import tempfile
import threading
import types
from typing import Any, Iterator, Sequence

import grain
import ml_collections
import numpy as np
from absl import logging
from PIL import Image
from PIL import ImageOps

from vqjax import augment

Source = grain.sources.RandomAccessDataSource

VALID_NAMES = ('builtin', 'folder', 'tfds')
# Colour photos that scikit-image ships inside its wheel (no download).
BUILTIN_PHOTOS = (
    'astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field',
    'immunohistochemistry', 'retina', 'stereo_motorcycle',
)
IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.webp')
# data.on_bad_image: '' (or 'auto') = 'skip' in training, 'error' in evaluation.
ON_BAD_IMAGE_CHOICES = ('', 'auto', 'skip', 'error')
COLOR_AUGMENT_CHOICES = ('auto', 'on', 'off')


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config with every field at its default."""
  c = ml_collections.ConfigDict()
  c.name = 'builtin'           # 'builtin' | 'folder' | 'tfds'
  c.image_size = 64            # S: square crop side, pixels
  c.resize_size = 0            # folder/tfds: shorter side first resized to this; 0 = off
  c.batch_size = 32            # global batch (all processes together)
  c.num_workers = 0            # grain worker processes; 0 = in-process
  c.train_dir = ''             # folder: root of training images
  c.val_dir = ''               # folder: root of validation images ('' = split train_dir)
  c.val_fraction = 0.1         # folder without val_dir: held-out fraction
  c.tfds_name = ''             # tfds: e.g. 'imagenet2012'
  c.tfds_data_dir = ''         # tfds: '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.train_split = 'train'      # tfds split names (tfds slicing syntax allowed)
  c.val_split = 'validation'
  c.builtin_val_images = ('chelsea', 'coffee')
  # folder: an undecodable file: 'skip' (training: next decodable file instead;
  # eval: left out, mask False; logged and counted) | 'error' (ValueError
  # naming it) | '' = auto: skip in training, error in evaluation.
  c.on_bad_image = ''
  # Training-time colour augmentation (vqjax.augment): 'auto' = on for builtin
  # (its photos hold almost no green), off for folder/tfds | 'on' | 'off'.
  c.color_augment = 'auto'
  c.color_hue_degrees = 180.0  # hue rotated by U[-this, this] degrees (HSV)
  c.color_permute = True       # and the RGB channels put in a random order
  c.color_prob = 1.0           # fraction of training crops augmented
  return c


def _resolve(data_config) -> types.SimpleNamespace:
  """Defaults overlaid with `data_config` (ConfigDict or dict), as attributes."""
  merged = default_data_config().to_dict()
  if data_config is not None:
    given = (data_config.to_dict() if hasattr(data_config, 'to_dict')
             else dict(data_config))
    merged.update(given)
  c = types.SimpleNamespace(**merged)
  if c.name not in VALID_NAMES:
    raise ValueError(
        f'Unknown data.name {c.name!r}; valid names are {list(VALID_NAMES)}.')
  c.image_size = int(c.image_size)
  c.resize_size = int(c.resize_size or 0)
  if c.image_size <= 0:
    raise ValueError(f'data.image_size must be positive, got {c.image_size}.')
  if c.resize_size and c.resize_size < c.image_size:
    raise ValueError(
        f'data.resize_size ({c.resize_size}) must be 0 (off) or >= '
        f'data.image_size ({c.image_size}).')
  c.on_bad_image = '' if c.on_bad_image is None else c.on_bad_image
  if c.on_bad_image not in ON_BAD_IMAGE_CHOICES:
    raise ValueError(
        f'data.on_bad_image={c.on_bad_image!r}; use one of '
        f'{list(ON_BAD_IMAGE_CHOICES)} (\'\' or \'auto\': skip undecodable files '
        'in training, raise in evaluation).')
  if c.color_augment not in COLOR_AUGMENT_CHOICES:
    raise ValueError(
        f'data.color_augment={c.color_augment!r}; use one of '
        f'{list(COLOR_AUGMENT_CHOICES)} (auto: on for builtin, off otherwise).')
  if not 0.0 <= float(c.color_prob) <= 1.0 or not 0.0 <= float(c.color_hue_degrees) <= 180.0:
    raise ValueError(
        f'data.color_prob={c.color_prob} must be in [0, 1] and '
        f'data.color_hue_degrees={c.color_hue_degrees} in [0, 180].')
  return c


def color_augment_on(data_config) -> bool:
  """Whether the training loader applies colour augmentation (resolves 'auto')."""
  c = _resolve(data_config)
  return c.color_augment == 'on' or (c.color_augment == 'auto' and c.name == 'builtin')


def _on_bad_image(c, train: bool) -> str:
  """'skip' or 'error' for the training (train=True) or evaluation source."""
  if c.on_bad_image in ('skip', 'error'):
    return c.on_bad_image
  return 'skip' if train else 'error'


# ----------------------------------------------------------------------------
# Pixel transforms (pure functions on uint8 H x W x 3 arrays).


def to_model_range(images):
  """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1].

  Works on numpy and jax arrays (inside jit too). Floating-point images are
  taken to be in [-1, 1] already and returned unchanged.
  """
  if images.dtype != np.uint8:
    return images
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> uint8 HxWx3 (alpha dropped)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'Expected uint8 image, got dtype {image.dtype}.')
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f'Expected an HxWxC image with C in (1, 3, 4), got shape '
                     f'{image.shape}.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image[..., :3]


def shorter_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(H', W') with min(H', W') == size and the aspect ratio kept (rounded)."""
  if min(height, width) == size:
    return height, width
  if height <= width:
    return size, max(size, round(width * size / height))
  return max(size, round(height * size / width)), size


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """uint8 HxWx3 -> uint8 [shape[0], shape[1], 3] (bicubic); unchanged if equal."""
  if tuple(shape) == image.shape[:2]:
    return image
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(pil.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWx3 -> uint8 H'xW'x3 with min(H', W') == size (bicubic, aspect kept)."""
  return _resize(image, shorter_side_shape(*image.shape[:2], size))


def fitted_shape(height: int, width: int, image_size: int,
                 resize_size: int) -> tuple[int, int]:
  """(H', W') after the optional shorter-side resize to resize_size, with
  min(H', W') >= image_size ensured (aspect kept)."""
  if resize_size:
    height, width = shorter_side_shape(height, width, resize_size)
  if min(height, width) < image_size:
    height, width = shorter_side_shape(height, width, image_size)
  return height, width


def fit_image(image: np.ndarray, image_size: int, resize_size: int) -> np.ndarray:
  """uint8 HxWx3 resized (bicubic, once) to fitted_shape(H, W, image_size, resize_size)."""
  return _resize(image, fitted_shape(*image.shape[:2], image_size, resize_size))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 HxWx3 (H, W >= size) -> the central uint8 size x size x 3 crop."""
  h, w = image.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def random_crop_flip(image: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray:
  """uint8 HxWx3 -> uniformly placed size x size crop, mirrored with p=1/2."""
  h, w = image.shape[:2]
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  crop = image[top:top + size, left:left + size]
  if rng.integers(0, 2):
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def random_fitted_crop_flip(image: np.ndarray, size: int, resize_size: int,
                            rng: np.random.Generator) -> np.ndarray:
  """random_crop_flip(fit_image(image, size, resize_size), size, rng), resampling only the crop.

  The crop is placed in the fitted (H', W') frame with the same random draws,
  and only its box of the original image is resized to size x size (bicubic;
  the filter still reads the pixels around the box), which skips the pixels
  the crop drops: about 1.4x faster for a 500x375 photo and resize_size 256.
  """
  h, w = image.shape[:2]
  fit_h, fit_w = fitted_shape(h, w, size, resize_size)
  top = int(rng.integers(0, fit_h - size + 1))
  left = int(rng.integers(0, fit_w - size + 1))
  if (fit_h, fit_w) == (h, w):
    crop = image[top:top + size, left:left + size]
  else:
    sy, sx = h / fit_h, w / fit_w
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    pil = Image.fromarray(np.ascontiguousarray(image))
    crop = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box))
  if rng.integers(0, 2):
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


@dataclasses.dataclass(frozen=True)
class _TrainTransform(grain.transforms.RandomMap):
  """uint8 HxWx3 record -> {'image': uint8 [S, S, 3]}."""
  image_size: int
  resize_size: int = 0
  fit: bool = True   # False for builtin: photos are used as they are

  def random_map(self, element, rng: np.random.Generator):
    image = _as_rgb(element)
    if self.fit:
      crop = random_fitted_crop_flip(image, self.image_size, self.resize_size, rng)
    else:
      crop = random_crop_flip(image, self.image_size, rng)
    return {'image': crop}


@dataclasses.dataclass(frozen=True)
class _EvalTransform(grain.transforms.Map):
  """uint8 HxWx3 record -> uint8 [S, S, 3] centre crop (after fit_image)."""
  image_size: int
  resize_size: int = 0

  def map(self, element):
    if element is None:  # an undecodable file left out (on_bad_image='skip')
      return None
    image = fit_image(_as_rgb(element), self.image_size, self.resize_size)
    return np.ascontiguousarray(center_crop(image, self.image_size))


# ----------------------------------------------------------------------------
# builtin: scikit-image photos.


@functools.cache
def builtin_photo(name: str) -> np.ndarray:
  """Returns the (cached, read-only) skimage.data photo `name`: uint8 HxWx3."""
  if name not in BUILTIN_PHOTOS:
    raise ValueError(f'Unknown builtin photo {name!r}; valid: {BUILTIN_PHOTOS}.')
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = getattr(skimage.data, name)()
  if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity)
    photo = photo[0]
  photo = np.ascontiguousarray(_as_rgb(photo))
  photo.flags.writeable = False
  return photo


def _grid_counts(shape: Sequence[int], size: int) -> tuple[int, int]:
  """(rows, cols) of non-overlapping size x size crops an HxW image holds."""
  return shape[0] // size, shape[1] // size


class BuiltinPhotoSource:
  """Training records: photo j repeated (H_j // S) * (W_j // S) times.

  Record i is the whole uint8 HxWx3 photo it maps to; the random crop is taken
  by the training transform. Pickles by name (workers reload the photos).
  """

  def __init__(self, names: Sequence[str], image_size: int):
    self._names = tuple(names)
    self._image_size = image_size
    counts = [int(np.prod(_grid_counts(builtin_photo(n).shape, image_size)))
              for n in self._names]
    self.names = tuple(n for n, c in zip(self._names, counts) if c > 0)
    self._ends = np.cumsum([c for c in counts if c > 0]).astype(np.int64)

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def photo_index(self, index: int) -> int:
    """Which of `self.names` record `index` maps to."""
    if not 0 <= index < len(self):
      raise IndexError(f'Record {index} out of range [0, {len(self)}).')
    return int(np.searchsorted(self._ends, index, side='right'))

  def __getitem__(self, index: int) -> np.ndarray:
    return builtin_photo(self.names[self.photo_index(int(index))])

  def __repr__(self) -> str:
    return (f'BuiltinPhotoSource(names={self._names}, '
            f'image_size={self._image_size})')


class BuiltinGridCropSource:
  """Validation records: non-overlapping S x S grid crops, uint8 [S, S, 3].

  Order: photo by photo (as given), then row-major; the grid starts at the
  top-left corner (the remainder at the right/bottom is unused).
  """

  def __init__(self, names: Sequence[str], image_size: int):
    self._names = tuple(names)
    self._image_size = image_size
    self._crops = []
    for name in self._names:
      rows, cols = _grid_counts(builtin_photo(name).shape, image_size)
      self._crops += [(name, r, c) for r in range(rows) for c in range(cols)]

  def __len__(self) -> int:
    return len(self._crops)

  def __getitem__(self, index: int) -> np.ndarray:
    name, r, c = self._crops[index]
    s = self._image_size
    return builtin_photo(name)[r * s:(r + 1) * s, c * s:(c + 1) * s]

  def __repr__(self) -> str:
    return (f'BuiltinGridCropSource(names={self._names}, '
            f'image_size={self._image_size})')


def _builtin_sources(c) -> tuple[BuiltinPhotoSource, BuiltinGridCropSource]:
  val_names = tuple(c.builtin_val_images)
  unknown = [n for n in val_names if n not in BUILTIN_PHOTOS]
  if unknown:
    raise ValueError(f'data.builtin_val_images has unknown photos {unknown}; '
                     f'valid: {list(BUILTIN_PHOTOS)}.')
  train_names = tuple(n for n in BUILTIN_PHOTOS if n not in val_names)
  train = BuiltinPhotoSource(train_names, c.image_size)
  val = BuiltinGridCropSource(val_names, c.image_size)
  if not len(train) or not len(val):
    raise ValueError(
        f'data.image_size={c.image_size} is larger than the builtin photos '
        f'(train crops: {len(train)}, val crops: {len(val)}); use a smaller '
        'image_size (<= 300 keeps every photo).')
  return train, val


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


def _new_tally_dir() -> str:
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
  """

  def __init__(self, paths: Sequence[str], root: str,
               on_bad_image: str = 'error'):
    if on_bad_image not in ('skip', 'error'):
      raise ValueError(f"on_bad_image={on_bad_image!r}; use 'skip' or 'error'.")
    self.paths = tuple(paths)
    self._root = root
    self.on_bad_image = on_bad_image
    self.tally_dir = ''  # set by loaders with worker processes
    self._bad: set[int] = set()  # known-bad indices (this process)

  def __len__(self) -> int:
    return len(self.paths)

  def load(self, index: int, action: str = 'left out') -> np.ndarray | None:
    """Decoded record `index`; None if undecodable and skipping (counted)."""
    index = int(index)
    if index in self._bad:
      return None
    path = self.paths[index]
    try:
      return _decode_image_file(path)
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


def _folder_sources(c) -> tuple[ImageFolderSource, ImageFolderSource]:
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
  return (ImageFolderSource(train_paths, train_root, _on_bad_image(c, True)),
          ImageFolderSource(val_paths, val_root, _on_bad_image(c, False)))


# ----------------------------------------------------------------------------
# tfds: an array_record dataset prepared on disk.


def tfds_data_dir(c) -> str:
  """The tfds data_dir: config, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  d = (c.tfds_data_dir or os.environ.get('TFDS_DATA_DIR')
       or '~/tensorflow_datasets')
  return os.path.expanduser(str(d))


def _not_prepared_message(name: str, data_dir: str, why: str) -> str:
  base = name.split(':')[0].split('/')[0]
  return (
      f'TFDS dataset {name!r} is not prepared in data_dir={data_dir!r} '
      f'({why}). vqjax never downloads datasets; prepare it once with\n'
      f'  tfds build {base} --data_dir={data_dir} --file_format=array_record\n'
      'For datasets that need a manual download such as imagenet2012, put the '
      'original archives (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar) in '
      'a directory and run\n'
      f'  tfds build imagenet2012 --manual_dir=<dir with the tars> '
      f'--data_dir={data_dir} --file_format=array_record\n'
      '(see the vqjax.input_pipeline docstring), or set data.tfds_data_dir to '
      'where it is prepared.')


def _check_tfds_on_disk(name: str, data_dir: str) -> None:
  """Raises quickly (no tfds, no network) unless dataset_info.json is on disk.

  Layout: data_dir/name[/config]/version/dataset_info.json.
  """
  if not name:
    raise ValueError("data.name='tfds' needs data.tfds_name, e.g. "
                     "'imagenet2012'.")
  path_name, _, version = name.partition(':')
  base = pathlib.Path(data_dir, *path_name.split('/'))
  infos = list(base.glob('*/dataset_info.json'))
  infos += list(base.glob('*/*/dataset_info.json'))
  if version:
    infos = [p for p in infos if p.parent.name == version]
  if not infos:
    raise ValueError(_not_prepared_message(
        name, data_dir, f'no {base}/<version>/dataset_info.json'))


def tfds_builder(c):
  """tfds builder for c.tfds_name in tfds_data_dir(c); fails fast if absent."""
  data_dir = tfds_data_dir(c)
  _check_tfds_on_disk(c.tfds_name, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(c.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    raise ValueError(_not_prepared_message(
        c.tfds_name, data_dir, f'{builder.data_dir} is not a prepared dataset'))
  return builder


class TfdsImageSource:
  """Records: uint8 HxWx3 'image' of a tfds array_record data source."""

  def __init__(self, source, name: str, split: str):
    self._source = source
    self._name = name
    self._split = split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    record = self._source[index]
    if not isinstance(record, dict) or 'image' not in record:
      keys = list(record) if isinstance(record, dict) else type(record)
      raise ValueError(f'TFDS dataset {self._name!r} records have no "image" '
                       f'key (got {keys}).')
    return _as_rgb(record['image'])

  def __repr__(self) -> str:
    return f'TfdsImageSource(name={self._name!r}, split={self._split!r})'


def _tfds_source(builder, c, split: str) -> TfdsImageSource:
  try:
    source = builder.as_data_source(split)
  except NotImplementedError as e:
    raise ValueError(
        f'TFDS dataset {c.tfds_name!r} in {builder.data_dir} is not stored as '
        'array_record, which random access needs. Rebuild it with '
        f'--file_format=array_record (e.g. tfds build {c.tfds_name} '
        f'--data_dir={tfds_data_dir(c)} --file_format=array_record).') from e
  return TfdsImageSource(source, c.tfds_name, split)


# ----------------------------------------------------------------------------
# Public API.


def create_sources(data_config) -> tuple[Source, Source]:
  """(train_source, val_source): grain random-access sources (len + __getitem__) of uint8 HxWx3 numpy images.

  builtin: train records are whole photos (see module docstring), val records
  S x S grid crops. folder/tfds: records are the decoded images.
  """
  c = _resolve(data_config)
  if c.name == 'builtin':
    return _builtin_sources(c)
  if c.name == 'folder':
    return _folder_sources(c)
  builder = tfds_builder(c)
  return _tfds_source(builder, c, c.train_split), _tfds_source(
      builder, c, c.val_split)


def num_train_examples(data_config) -> int:
  """Global examples per "epoch" of the training stream.

  builtin: number of non-overlapping S x S crops the training photos hold;
  folder: training files; tfds: examples in train_split.
  """
  c = _resolve(data_config)
  if c.name == 'builtin':
    return len(_builtin_sources(c)[0])
  if c.name == 'folder':
    return len(_folder_sources(c)[0])
  return int(tfds_builder(c).info.splits[c.train_split].num_examples)


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
  `vqjax.augment.ColorAugment`); order, crops and colours are a pure function
  of `seed` (0 <= seed < 2**32) and the position in the stream. Iterate with
  `it = iter(loader)`; `it` supports get_state/set_state (see module doc).
  """
  c = _resolve(data_config)
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
    train_source.tally_dir = _new_tally_dir()  # workers report skipped files
  transform = _TrainTransform(image_size=c.image_size,
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
  c = _resolve(data_config)
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
        val_source.tally_dir = _new_tally_dir()
      ds = grain.MapDataset.range(start, end).map(val_source.load)
    else:
      ds = grain.MapDataset.source(val_source)[start:end]
    ds = ds.map(_EvalTransform(s, c.resize_size if c.name != 'builtin' else 0))
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
    'BUILTIN_PHOTOS', 'IMAGE_EXTENSIONS', 'ON_BAD_IMAGE_CHOICES', 'Source',
    'VALID_NAMES', 'bad_image_files', 'create_eval_batches',
    'create_sources', 'create_train_loader', 'default_data_config',
    'iterator_state', 'num_train_examples', 'per_process_batch_size',
    'restore_iterator_state', 'to_model_range',
]
