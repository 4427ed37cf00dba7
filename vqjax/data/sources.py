"""Data sources: `builtin` (scikit-image's photos), `folder` (data/folder.py)
and `tfds` (an array_record dataset on disk), as grain random-access sources
of uint8 H x W x 3 images. See docs/DATA.md.
"""

from __future__ import annotations

import functools
import pathlib
import os
import types
from typing import Sequence

import grain
import numpy as np

from vqjax.data.folder import folder_sources
from vqjax.data.transforms import as_rgb
from vqjax.data_config import BUILTIN_PHOTOS, default_data_config, validate_data

Source = grain.sources.RandomAccessDataSource


def resolve(data_config) -> types.SimpleNamespace:
  """A data config (ConfigDict or dict, possibly partial: the fields not given
  take vqjax.data_config's defaults, the one place they are defined) as
  attributes, checked by its validate_data."""
  merged = default_data_config().to_dict()
  if data_config is not None:
    merged.update(data_config.to_dict() if hasattr(data_config, 'to_dict')
                  else dict(data_config))
  c = types.SimpleNamespace(**merged)
  validate_data(c)
  c.image_size = int(c.image_size)
  c.resize_size = int(c.resize_size or 0)
  c.on_bad_image = '' if c.on_bad_image is None else c.on_bad_image
  return c


def color_augment_on(data_config) -> bool:
  """Whether the training loader applies colour augmentation (resolves 'auto')."""
  c = resolve(data_config)
  return c.color_augment == 'on' or (c.color_augment == 'auto' and c.name == 'builtin')



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
  photo = np.ascontiguousarray(as_rgb(photo))
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
      '(see docs/DATA.md, "ImageNet and other tfds datasets"), or set '
      'data.tfds_data_dir to where it is prepared.')


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
    return as_rgb(record['image'])

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
  c = resolve(data_config)
  if c.name == 'builtin':
    return _builtin_sources(c)
  if c.name == 'folder':
    return folder_sources(c)
  builder = tfds_builder(c)
  return _tfds_source(builder, c, c.train_split), _tfds_source(
      builder, c, c.val_split)


def num_train_examples(data_config) -> int:
  """Global examples per "epoch" of the training stream.

  builtin: number of non-overlapping S x S crops the training photos hold;
  folder: training files; tfds: examples in train_split.
  """
  c = resolve(data_config)
  if c.name == 'builtin':
    return len(_builtin_sources(c)[0])
  if c.name == 'folder':
    return len(folder_sources(c)[0])
  return int(tfds_builder(c).info.splits[c.train_split].num_examples)

