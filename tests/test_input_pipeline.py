"""Tests for vqjax.data: configs, the builtin photos' loaders, crops and flips,
colour augmentation, prefetching (offline). Folder and tfds sources:
test_data_sources.py."""


import numpy as np
import pytest
import skimage.data
from PIL import Image

from vqjax import data as ip

from conftest import SMALL_CROP as S, as_uint8, small_data_config, take_images

TRAIN_PHOTOS = ('astronaut', 'rocket', 'hubble_deep_field',
                'immunohistochemistry', 'retina', 'stereo_motorcycle')


def _photo(name):
  """Independent load of a skimage photo as uint8 HxWx3."""
  x = getattr(skimage.data, name)()
  if isinstance(x, tuple):
    x = x[0]
  return np.asarray(x)[..., :3]



# --------------------------------------------------------------------------
# config / names


def test_default_config_fields():
  c = ip.default_data_config()
  assert c.name == 'builtin' and c.image_size == 64 and c.resize_size == 0
  assert c.batch_size == 32 and c.num_workers == 0 and c.val_fraction == 0.1
  assert c.train_split == 'train' and c.val_split == 'validation'
  assert tuple(c.builtin_val_images) == ('chelsea', 'coffee')
  for k in ('train_dir', 'val_dir', 'tfds_name', 'tfds_data_dir'):
    assert c[k] == ''


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as e:
    ip.create_sources(small_data_config(name='imagenet'))
  for n in ('builtin', 'folder', 'tfds', 'imagenet'):
    assert n in str(e.value)


# --------------------------------------------------------------------------
# builtin


def test_builtin_train_source_maps_records_to_training_photos():
  train, val = ip.create_sources(small_data_config())
  expected = []
  for n in TRAIN_PHOTOS:
    h, w = _photo(n).shape[:2]
    expected += [n] * ((h // S) * (w // S))
  assert len(train) == len(expected) == ip.num_train_examples(small_data_config())
  # Hand count for S=32 (photo shapes are fixed by the skimage release).
  assert len(expected) == 256 + 13 * 20 + 27 * 31 + 256 + 44 * 44 + 15 * 23
  photos = {n: _photo(n) for n in (*TRAIN_PHOTOS, 'chelsea', 'coffee')}
  # Walk the records photo boundary by photo boundary, checking the pixels.
  starts = [0] + [i for i in range(1, len(expected))
                  if expected[i] != expected[i - 1]]
  for i in starts + [len(expected) - 1]:
    rec = train[i]
    assert rec.dtype == np.uint8 and rec.ndim == 3 and rec.shape[-1] == 3
    np.testing.assert_array_equal(rec, photos[expected[i]])
    for held_out in ('chelsea', 'coffee'):
      assert rec.shape != photos[held_out].shape or not np.array_equal(
          rec, photos[held_out])
  assert len(val) == sum((_photo(n).shape[0] // S) * (_photo(n).shape[1] // S)
                         for n in ('chelsea', 'coffee'))


def _pack(rgb):
  """uint8 [..., 3] -> int32 [...] (one integer per colour)."""
  rgb = rgb.astype(np.int32)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _locate(packed_photo, crop):
  """(y, x) of uint8 `crop` inside a _pack()ed photo, or None."""
  s = crop.shape[0]
  h, w = packed_photo.shape
  c = _pack(crop)
  ys, xs = np.nonzero(packed_photo[:h - s + 1, :w - s + 1] == c[0, 0])
  probes = [(0, s - 1), (s - 1, 0), (s - 1, s - 1), (s // 2, s // 2)]
  probes += [divmod(int(k), s) for k in np.argsort(c, axis=None)[-4:]]
  for dy, dx in probes:
    keep = packed_photo[ys + dy, xs + dx] == c[dy, dx]
    ys, xs = ys[keep], xs[keep]
  for y, x in zip(ys, xs):
    if np.array_equal(packed_photo[y:y + s, x:x + s], c):
      return int(y), int(x)
  return None


def test_builtin_train_batches_are_random_crops_of_training_photos():
  batches = take_images(ip.create_train_loader(small_data_config(color_augment='off'), seed=0), 2)
  for b in batches:
    assert b.shape == (8, S, S, 3) and b.dtype == np.uint8
    assert b.std() > 10
  photos = [_pack(_photo(n)) for n in TRAIN_PHOTOS]
  positions, flips = [], 0
  for crop in as_uint8(np.concatenate(batches)):
    found = None
    for p in photos:
      found = _locate(p, crop)
      if found is None:
        found = _locate(p, crop[:, ::-1])
        flips += found is not None
      if found is not None:
        break
    assert found is not None, 'batch image is not a crop of a training photo'
    positions.append(found)
  # Crops are placed anywhere, not only on the S-grid; some are mirrored.
  assert any(y % S or x % S for y, x in positions)
  assert 0 < flips < len(positions)


def test_to_model_range_numpy_and_under_jit():
  import jax  # pylint: disable=import-outside-toplevel
  pixels = np.array([[0, 51, 255]], np.uint8)
  want = np.array([[-1.0, 51 / 127.5 - 1.0, 1.0]], np.float32)  # -0.6
  np.testing.assert_allclose(ip.to_model_range(pixels), want, atol=1e-7)
  assert ip.to_model_range(pixels).dtype == np.float32
  got = jax.jit(ip.to_model_range)(pixels)
  assert got.dtype == np.float32
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)
  floats = np.array([0.25, -0.5], np.float32)  # already in [-1, 1]: unchanged
  np.testing.assert_array_equal(ip.to_model_range(floats), floats)


def test_random_crop_flip_is_a_window_of_the_input():
  h, w = 50, 70
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
  rng = np.random.default_rng(0)
  tops, lefts, flips = set(), set(), 0
  for _ in range(200):
    c = ip.random_crop_flip(image, 16, rng)
    assert c.shape == (16, 16, 3)
    top, left = int(c[0, 0, 0]), int(c[0, :, 1].min())
    flipped = c[0, 0, 1] > c[0, -1, 1]
    flips += flipped
    ref = image[top:top + 16, left:left + 16]
    np.testing.assert_array_equal(c, ref[:, ::-1] if flipped else ref)
    tops.add(top)
    lefts.add(left)
  assert 0 in tops and h - 16 in tops and 0 in lefts and w - 16 in lefts
  assert 60 < flips < 140


@pytest.mark.parametrize('wh, resize, size, fitted_wh', [
    ((500, 375), 256, 256, (341, 256)),   # ImageNet-like landscape, paper setting
    ((375, 500), 256, 224, (256, 341)),   # portrait, crop smaller than the resize
    ((120, 90), 0, 128, (171, 128)),      # too small: upscaled to the crop size
])
def test_fitted_crop_equals_full_resize_then_crop(wh, resize, size, fitted_wh):
  # Reference: PIL resizes the whole photo to the hand-computed fitted size,
  # then the crop is cut at the offsets the same seeded draws give.
  photo = Image.fromarray(_photo('astronaut')).resize(wh, Image.Resampling.BICUBIC)
  image = np.asarray(photo)
  full = np.asarray(photo.resize(fitted_wh, Image.Resampling.BICUBIC)).astype(int)
  for seed in range(6):
    got = ip.random_fitted_crop_flip(image, size, resize, np.random.default_rng(seed))
    draws = np.random.default_rng(seed)
    top = int(draws.integers(0, fitted_wh[1] - size + 1))
    left = int(draws.integers(0, fitted_wh[0] - size + 1))
    want = full[top:top + size, left:left + size]
    if draws.integers(0, 2):
      want = want[:, ::-1]
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want)
    # Same resampling up to rounding; a crop one pixel off differs by ~9 levels.
    assert diff.mean() < 0.5 and diff.max() <= 8, (seed, diff.mean(), diff.max())


def test_fitted_crop_without_resize_is_an_exact_window():
  image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
  for seed in range(10):
    got = ip.random_fitted_crop_flip(image, 32, 0, np.random.default_rng(seed))
    want = ip.random_crop_flip(image, 32, np.random.default_rng(seed))
    np.testing.assert_array_equal(got, want)


def test_builtin_eval_is_the_numpy_grid_of_chelsea_and_coffee():
  want = []
  for n in ('chelsea', 'coffee'):
    p = _photo(n)
    for r in range(p.shape[0] // S):
      for c in range(p.shape[1] // S):
        want.append(p[r * S:(r + 1) * S, c * S:(c + 1) * S])
  want = np.stack(want)
  batches = list(ip.create_eval_batches(small_data_config(), batch_size=50))
  assert len(batches) == -(-len(want) // 50)
  for b in batches:
    assert b['image'].shape == (50, S, S, 3) and b['image'].dtype == np.uint8
    assert b['mask'].shape == (50,) and b['mask'].dtype == bool
  images = np.concatenate([b['image'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == len(want) and mask[:len(want)].all()
  np.testing.assert_array_equal(images[mask], want)
  assert (images[~mask] == 0).all()
  # Deterministic.
  again = np.concatenate(
      [b['image'] for b in ip.create_eval_batches(small_data_config(), batch_size=50)])
  np.testing.assert_array_equal(images, again)


def test_seed_determinism():
  a = take_images(ip.create_train_loader(small_data_config(), seed=7), 3)
  b = take_images(ip.create_train_loader(small_data_config(), seed=7), 3)
  c = take_images(ip.create_train_loader(small_data_config(), seed=8), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not any(np.array_equal(x, z) for x, z in zip(a, c))


def test_restore_iterator_state_continues_the_stream():
  it = iter(ip.create_train_loader(small_data_config(), seed=1))
  ref = [next(it)['image'] for _ in range(5)]
  it = iter(ip.create_train_loader(small_data_config(), seed=1))
  for _ in range(2):
    next(it)
  state = ip.iterator_state(it)
  assert isinstance(state, bytes)
  fresh = iter(ip.create_train_loader(small_data_config(), seed=1))
  ip.restore_iterator_state(fresh, state)
  for k in (2, 3, 4):
    np.testing.assert_array_equal(next(fresh)['image'], ref[k])
  # A loader with another seed refuses the state instead of silently diverging.
  other = iter(ip.create_train_loader(small_data_config(), seed=2))
  with pytest.raises(ValueError):
    ip.restore_iterator_state(other, state)


def test_worker_process_gives_the_same_stream():
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  a = take_images(ip.create_train_loader(small_data_config(num_workers=1), seed=5), 2)
  b = take_images(ip.create_train_loader(small_data_config(num_workers=0), seed=5), 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_sharding_halves_the_batch_and_checks_divisibility():
  s0 = take_images(ip.create_train_loader(small_data_config(batch_size=8), seed=0,
                                    shard_index=0, shard_count=2), 1)[0]
  s1 = take_images(ip.create_train_loader(small_data_config(batch_size=8), seed=0,
                                    shard_index=1, shard_count=2), 1)[0]
  assert s0.shape == s1.shape == (4, S, S, 3)
  assert not np.array_equal(s0, s1)
  with pytest.raises(ValueError, match='shard_count=2'):
    ip.create_train_loader(small_data_config(batch_size=7), seed=0, shard_count=2)

# ----------------------------------------------------------------------------
# Colour augmentation (vqjax.data.augment).


def _colours():
  """uint8 [4096 + 6, 1, 3]: random colours, greys, primaries and secondaries."""
  rng = np.random.default_rng(0)
  extra = np.array([[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0],
                    [0, 255, 0], [255, 255, 0]], np.uint8)
  return np.concatenate([rng.integers(0, 256, (4096, 3), np.uint8), extra])[:, None]


def test_hue_rotation_by_zero_is_the_identity():
  from vqjax.data import augment  # pylint: disable=import-outside-toplevel
  x = _colours()
  np.testing.assert_array_equal(augment.rotate_hue(x, 0.0), x)
  np.testing.assert_array_equal(augment.rotate_hue(x, 360.0), x)


def test_hue_rotation_matches_colorsys():
  import colorsys  # pylint: disable=import-outside-toplevel
  from vqjax.data import augment  # pylint: disable=import-outside-toplevel
  x = _colours()
  for degrees in (37.0, -100.0, 180.0):
    want = []
    for r, g, b in x[:, 0] / 255.0:
      h, s, v = colorsys.rgb_to_hsv(r, g, b)
      want.append(colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v))
    want = np.rint(np.array(want) * 255).astype(np.uint8)
    got = augment.rotate_hue(x, degrees)[:, 0]
    assert np.abs(got.astype(int) - want).max() <= 1       # rounding ties only
    assert np.mean(got == want) > 0.999
  # 120 degrees turns red into green: the channel cycle (R, G, B) <- (B, R, G).
  np.testing.assert_array_equal(augment.rotate_hue(x, 120.0), x[..., [2, 0, 1]])
  np.testing.assert_array_equal(augment.rotate_hue(np.array([[[255, 0, 0]]], np.uint8), 120.0),
                                [[[0, 255, 0]]])


def test_channel_permutation_matches_numpy():
  from vqjax.data import augment  # pylint: disable=import-outside-toplevel
  x = _colours()
  assert len(augment.PERMUTATIONS) == 6 and augment.PERMUTATIONS[0] == (0, 1, 2)
  for order in augment.PERMUTATIONS:
    want = np.stack([x[..., order[0]], x[..., order[1]], x[..., order[2]]], axis=-1)
    np.testing.assert_array_equal(augment.permute_channels(x, order), want)


def test_color_augment_keeps_pixels_in_range_and_is_deterministic_per_seed():
  on = lambda seed, **kw: np.concatenate(take_images(ip.create_train_loader(
      small_data_config(color_augment='on', **kw), seed=seed), 3))
  off_loader = ip.create_train_loader(small_data_config(color_augment='off'), seed=3)
  off = np.concatenate(take_images(off_loader, 3))
  a, b, c = on(3), on(3), on(4)
  assert a.dtype == np.uint8 and a.shape == off.shape
  np.testing.assert_array_equal(a, b)                       # same seed, same colours
  assert not np.array_equal(a, c)
  # Same crops as without augmentation, only the colours change: hue rotation
  # and channel order keep every pixel's max and min channel (HSV value and
  # value * (1 - saturation)) up to rounding.
  assert np.abs(a.max(-1).astype(int) - off.max(-1)).max() <= 1
  assert np.abs(a.min(-1).astype(int) - off.min(-1)).max() <= 1
  changed = np.mean(np.any(a != off, axis=(1, 2, 3)))
  assert changed > 0.8
  # Brightness statistics stay in range: mean value per crop as before (+-1).
  np.testing.assert_allclose(a.max(-1).mean((1, 2)), off.max(-1).mean((1, 2)), atol=1.0)
  # color_prob=0 and the default for folder sources leave the crops unchanged.
  np.testing.assert_array_equal(on(3, color_prob=0.0), off)
  assert ip.color_augment_on(small_data_config())
  assert not ip.color_augment_on(small_data_config(name='folder'))
  with pytest.raises(ValueError, match='color_augment'):
    ip.create_train_loader(small_data_config(color_augment='yes'), seed=0)


# ----------------------------------------------------------------------------
# Prefetching and the decode cache.


def test_prefetch_yields_the_same_batches_and_resumes_exactly():
  plain = take_images(ip.create_train_loader(small_data_config(), seed=7), 6)
  it = ip.prefetch(iter(ip.create_train_loader(small_data_config(), seed=7)), 3)
  first = [next(it)['image'] for _ in range(3)]
  state = it.get_state()           # after the 3 batches handed out, not those prepared
  rest = [next(it)['image'] for _ in range(3)]
  it.close()
  for got, want in zip(first + rest, plain):
    np.testing.assert_array_equal(got, want)
  resumed = ip.prefetch(iter(ip.create_train_loader(small_data_config(), seed=7)), 2)
  next(resumed)                    # moved on, then put back
  resumed.set_state(state)
  for want in plain[3:]:
    np.testing.assert_array_equal(next(resumed)['image'], want)
  resumed.close()
  assert ip.prefetch(iter([]), 0).__class__ is not ip.PrefetchIterator


def test_prefetch_raises_the_loader_error_after_the_good_batches():
  class Failing:
    def __init__(self):
      self.n = 0

    def __next__(self):
      self.n += 1
      if self.n > 2:
        raise ValueError('bad record')
      return {'image': np.full((1,), self.n)}

    def get_state(self):
      return str(self.n).encode()

  it = ip.prefetch(Failing(), 2)
  assert [int(next(it)['image'][0]) for _ in range(2)] == [1, 2]
  with pytest.raises(ValueError, match='bad record'):
    next(it)
