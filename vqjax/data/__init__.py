"""Data: sources (builtin photos, image folders, tfds) -> grain loaders of uint8
NHWC images, with the pixel transforms and colour augmentation between.

  sources.py     builtin / tfds sources, create_sources, num_train_examples
  folder.py      the image-folder source and its bad-file handling
  transforms.py  resize / crop / flip (pure functions and grain transforms)
  augment.py     training-time colour augmentation (hue rotation, channel order)
  loaders.py     create_train_loader, create_eval_batches, iterator state, prefetch

The data config's defaults and checks live in `vqjax.data_config`
(`default_data_config`, `validate_data`); docs/DATA.md says how to point vqjax
at your images.
"""

from vqjax.data_config import BUILTIN_PHOTOS, IMAGE_EXTENSIONS, default_data_config
from vqjax.data.folder import (ImageFolderSource, bad_image_files, list_image_files,
                               load_image_file, split_by_hash)
from vqjax.data.loaders import (PrefetchIterator, create_eval_batches, create_train_loader,
                                iterator_state, per_process_batch_size, prefetch,
                                restore_iterator_state)
from vqjax.data.sources import (BuiltinGridCropSource, BuiltinPhotoSource, Source,
                                TfdsImageSource, builtin_photo, color_augment_on,
                                create_sources, num_train_examples, resolve, tfds_builder,
                                tfds_data_dir)
from vqjax.data.transforms import (as_rgb, center_crop, fit_image, fitted_shape,
                                   random_crop_flip, random_fitted_crop_flip,
                                   resize_shorter_side, shorter_side_shape, to_model_range)
