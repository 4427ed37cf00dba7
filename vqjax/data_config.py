"""The data section of a config: its fields, defaults and checks.

`default_data_config()` is the one place the data fields are defined (the
loaders fill a partial data config from it, `vqjax.data.sources.resolve`) and
`validate_data` the one place they are checked (by `config_lib.validate` and
by the loaders). docs/DATA.md says how to point vqjax at your images.
"""

from __future__ import annotations

import ml_collections


DATA_NAMES = ('builtin', 'folder', 'tfds')
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
  c.name = "builtin"           # "builtin" | "folder" | "tfds"
  c.image_size = 64            # S: square crop side, pixels
  c.resize_size = 0            # folder/tfds: shorter side first resized to this; 0 = off
  c.batch_size = 32            # global batch (all processes together)
  c.num_workers = 0            # grain worker processes; 0 = in-process
  c.prefetch = 2               # training batches prepared ahead in a background thread; 0 = off
  c.decode_cache_mb = 512      # folder: decoded images kept in memory per process (MiB); 0 = off
  c.train_dir = ""             # folder: root of training images
  c.val_dir = ""               # folder: root of validation images ("" = split train_dir)
  c.val_fraction = 0.1         # folder without val_dir: held-out fraction
  c.tfds_name = ""             # tfds: e.g. "imagenet2012"
  c.tfds_data_dir = ""         # tfds: "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.train_split = "train"      # tfds split names (tfds slicing syntax allowed)
  c.val_split = "validation"
  c.builtin_val_images = ("chelsea", "coffee")
  # folder: an undecodable file: "skip" (training: next decodable file instead;
  # eval: left out, mask False; logged and counted) | "error" (ValueError
  # naming it) | "" = auto: skip in training, error in evaluation.
  c.on_bad_image = ""
  # Training-time colour augmentation (vqjax.data.augment): "auto" = on for builtin
  # (its photos hold almost no green), off for folder/tfds | "on" | "off".
  c.color_augment = "auto"
  c.color_hue_degrees = 180.0  # hue rotated by U[-this, this] degrees (HSV)
  c.color_permute = True       # and the RGB channels put in a random order
  c.color_prob = 1.0           # fraction of training crops augmented
  return c


def validate_data(d) -> None:
  """Clear errors for data fields that cannot work (ConfigDict or attributes)."""
  if d.name not in DATA_NAMES:
    raise ValueError(f"bad config: data.name={d.name!r}; use one of {list(DATA_NAMES)}.")
  if int(d.image_size) <= 0:
    raise ValueError(f"bad config: data.image_size={d.image_size} must be positive.")
  if d.resize_size and int(d.resize_size) < int(d.image_size):
    raise ValueError(f"bad config: data.resize_size={d.resize_size} must be 0 (off) or "
                     f">= data.image_size={d.image_size}.")
  if (d.on_bad_image or "") not in ON_BAD_IMAGE_CHOICES:
    raise ValueError(
        f"bad config: data.on_bad_image={d.on_bad_image!r}; use one of "
        f"{list(ON_BAD_IMAGE_CHOICES)} ('' or 'auto': skip undecodable files in "
        "training, raise in evaluation).")
  if d.color_augment not in COLOR_AUGMENT_CHOICES:
    raise ValueError(
        f"bad config: data.color_augment={d.color_augment!r}; use one of "
        f"{list(COLOR_AUGMENT_CHOICES)} (auto: on for builtin, off otherwise).")
  for field in ("num_workers", "prefetch", "decode_cache_mb"):
    if int(getattr(d, field, 0)) < 0:
      raise ValueError(f"bad config: data.{field}={getattr(d, field)} must be >= 0 (0 = off).")
  if not 0.0 <= float(d.color_prob) <= 1.0 or not 0.0 <= float(d.color_hue_degrees) <= 180.0:
    raise ValueError(
        f"bad config: data.color_prob={d.color_prob} must be in [0, 1] and "
        f"data.color_hue_degrees={d.color_hue_degrees} in [0, 180].")
