"""Shared fixtures: tiny configs that train in seconds on CPU."""

import types

import numpy as np
import pytest
from absl import flags
from PIL import Image

from vqjax import config_lib


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long or fault-injection tests, off by default; run them with -m slow")
  # Many tests compile the same tiny models: JAX's persistent compilation
  # cache (as `python -m vqjax.main` uses it) compiles each program once.
  import os
  import tempfile
  from vqjax import parallel
  parallel.configure_compilation_cache(os.path.join(tempfile.gettempdir(), "vqjax-tests-jax-cache"))


@pytest.fixture(autouse=True, scope="session")
def _absl_flags_parsed():
  # grain (and absl logging) want parsed flags; pytest never parses them.
  flags.FLAGS.mark_as_parsed()


def tiny_config(kind: str = "single", image_size: int = 32, batch_size: int = 8):
  """The paper's model family at toy width: trains in seconds on one CPU core."""
  config = config_lib.base_config()
  config.data.image_size = image_size
  config.data.batch_size = batch_size
  config.eval.batch_size = batch_size
  if kind == "single":
    config.model = config_lib.single_model(32, 8, image_size)
  else:
    config.model = config_lib.hierarchical_model(32, 8, conditioned=kind == "conditioned")
  config.model.channels = 16
  config.model.quantizer.reset_window = 3
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 3
  config.train.steps_per_epoch = 10
  config.eval.num_grid_images = 4
  config.eval.lpips = ""  # LPIPS compiles AlexNet into every eval step: tests/test_lpips.py has it
  return config


def main_flags(config, workdir: str, mode: str) -> dict:
  """vqjax.main's flag holders, for main.main(argv, flags) in this process."""
  value = lambda v: types.SimpleNamespace(value=v)
  return dict(config=value(config), workdir=value(workdir), mode=value(mode),
              coordinator=value(""), num_processes=value(0), process_id=value(-1),
              cpu_devices=value(0))


def write_image_folder(root, num_images: int, size: int = 40, seed: int = 0):
  """Smooth random RGB PNGs (gradients + blobs), nested one level deep."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  for i in range(num_images):
    sub = root / f"class_{i % 2}"
    sub.mkdir(parents=True, exist_ok=True)
    a, b, c = rng.uniform(0.2, 1.0, 3)
    img = np.stack([a * xx, b * yy, c * (1 - xx * yy)], -1)
    img += 0.1 * rng.normal(size=(1, 1, 3))
    Image.fromarray(np.uint8(np.clip(img, 0, 1) * 255)).save(sub / f"img_{i}.png")
  return root


def write_tiny_tfds(data_dir, train_imgs, val_imgs, name: str = "vqjax_tiny_images") -> str:
  """Prepares an array_record tfds dataset `name` of the given uint8 images in
  data_dir (splits 'train' and 'validation'); returns the name."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class VqjaxTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict(
              {"image": tfds.features.Image(shape=(None, None, 3))}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(train_imgs),
              "validation": self._generate_examples(val_imgs)}

    def _generate_examples(self, images):
      for k, x in enumerate(images):
        yield k, {"image": Image.fromarray(x)}  # PIL: encoding without TF

  assert VqjaxTinyImages.name == name
  VqjaxTinyImages(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return name


SMALL_CROP = 32  # the data tests' crop size: small crops keep them fast


def small_data_config(**overrides):
  """A data config for loader tests: SMALL_CROP crops, batch 8, then `overrides`."""
  from vqjax import data  # pylint: disable=import-outside-toplevel
  config = data.default_data_config()
  config.image_size = SMALL_CROP
  config.batch_size = 8
  config.update(overrides)
  return config


def take_images(loader, n: int) -> list:
  """The 'image' arrays of a loader's first n batches."""
  it = iter(loader)
  return [next(it)['image'] for _ in range(n)]


def as_uint8(x) -> np.ndarray:
  """The loaders' pixels as numpy: uint8 (asserted)."""
  x = np.asarray(x)
  assert x.dtype == np.uint8, x.dtype
  return x


def colour_of(image) -> tuple:
  """The single uint8 colour of a constant image (asserts it is constant)."""
  u = as_uint8(image).reshape(-1, 3)
  assert (u == u[0]).all()
  return tuple(int(v) for v in u[0])
