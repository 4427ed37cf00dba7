"""Tests for vqjax.data (offline: builtin photos, tmp folders, tmp tfds)."""

import os
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image

from vqjax import data as ip

from conftest import write_tiny_tfds

S = 32  # small crops keep the file fast
TRAIN_PHOTOS = ('astronaut', 'rocket', 'hubble_deep_field',
                'immunohistochemistry', 'retina', 'stereo_motorcycle')


def _photo(name):
  """Independent load of a skimage photo as uint8 HxWx3."""
  x = getattr(skimage.data, name)()
  if isinstance(x, tuple):
    x = x[0]
  return np.asarray(x)[..., :3]


def _to_uint8(x):
  """The loaders' pixels: uint8 (asserted), as numpy."""
  x = np.asarray(x)
  assert x.dtype == np.uint8, x.dtype
  return x


def _cfg(**kw):
  c = ip.default_data_config()
  c.image_size = S
  c.batch_size = 8
  c.update(kw)
  return c


def _take(loader, n):
  it = iter(loader)
  return [next(it)['image'] for _ in range(n)]


def _save(path, array, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kw)


def _const(colour, h, w):
  return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


def _colour_of(img_float):
  """The single uint8 colour of a constant image (asserts it is constant)."""
  u = _to_uint8(img_float).reshape(-1, 3)
  assert (u == u[0]).all()
  return tuple(int(v) for v in u[0])


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
    ip.create_sources(_cfg(name='imagenet'))
  for n in ('builtin', 'folder', 'tfds', 'imagenet'):
    assert n in str(e.value)


# --------------------------------------------------------------------------
# builtin


def test_builtin_train_source_maps_records_to_training_photos():
  train, val = ip.create_sources(_cfg())
  expected = []
  for n in TRAIN_PHOTOS:
    h, w = _photo(n).shape[:2]
    expected += [n] * ((h // S) * (w // S))
  assert len(train) == len(expected) == ip.num_train_examples(_cfg())
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
  batches = _take(ip.create_train_loader(_cfg(color_augment='off'), seed=0), 2)
  for b in batches:
    assert b.shape == (8, S, S, 3) and b.dtype == np.uint8
    assert b.std() > 10
  photos = [_pack(_photo(n)) for n in TRAIN_PHOTOS]
  positions, flips = [], 0
  for crop in _to_uint8(np.concatenate(batches)):
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
  batches = list(ip.create_eval_batches(_cfg(), batch_size=50))
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
      [b['image'] for b in ip.create_eval_batches(_cfg(), batch_size=50)])
  np.testing.assert_array_equal(images, again)


def test_seed_determinism():
  a = _take(ip.create_train_loader(_cfg(), seed=7), 3)
  b = _take(ip.create_train_loader(_cfg(), seed=7), 3)
  c = _take(ip.create_train_loader(_cfg(), seed=8), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not any(np.array_equal(x, z) for x, z in zip(a, c))


def test_restore_iterator_state_continues_the_stream():
  it = iter(ip.create_train_loader(_cfg(), seed=1))
  ref = [next(it)['image'] for _ in range(5)]
  it = iter(ip.create_train_loader(_cfg(), seed=1))
  for _ in range(2):
    next(it)
  state = ip.iterator_state(it)
  assert isinstance(state, bytes)
  fresh = iter(ip.create_train_loader(_cfg(), seed=1))
  ip.restore_iterator_state(fresh, state)
  for k in (2, 3, 4):
    np.testing.assert_array_equal(next(fresh)['image'], ref[k])
  # A loader with another seed refuses the state instead of silently diverging.
  other = iter(ip.create_train_loader(_cfg(), seed=2))
  with pytest.raises(ValueError):
    ip.restore_iterator_state(other, state)


def test_worker_process_gives_the_same_stream():
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  a = _take(ip.create_train_loader(_cfg(num_workers=1), seed=5), 2)
  b = _take(ip.create_train_loader(_cfg(num_workers=0), seed=5), 2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_sharding_halves_the_batch_and_checks_divisibility():
  s0 = _take(ip.create_train_loader(_cfg(batch_size=8), seed=0,
                                    shard_index=0, shard_count=2), 1)[0]
  s1 = _take(ip.create_train_loader(_cfg(batch_size=8), seed=0,
                                    shard_index=1, shard_count=2), 1)[0]
  assert s0.shape == s1.shape == (4, S, S, 3)
  assert not np.array_equal(s0, s1)
  with pytest.raises(ValueError, match='shard_count=2'):
    ip.create_train_loader(_cfg(batch_size=7), seed=0, shard_count=2)


# --------------------------------------------------------------------------
# folder


def _make_mixed_folder(root):
  """Nested folder with mixed formats; returns {relpath: expected uint8 or None}."""
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (36, 44), dtype=np.uint8)
  rgba = rng.integers(0, 256, (34, 38, 4), dtype=np.uint8)
  webp = rng.integers(0, 256, (33, 35, 3), dtype=np.uint8)
  bmp = rng.integers(0, 256, (35, 33, 3), dtype=np.uint8)
  pal = Image.fromarray(rng.integers(0, 4, (40, 40), dtype=np.uint8), 'P')
  pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
  files = {
      'a.png': rgb,
      'x/grey.png': np.repeat(grey[..., None], 3, -1),
      'x/y/alpha.PNG': rgba[..., :3],
      'x/y/z/lossless.webp': webp,
      'pic.bmp': bmp,
      'x/photo.JPG': None,  # lossy: shape only
      'x/y/photo2.jpeg': None,
      'x/palette.png': np.asarray(pal.convert('RGB')),
  }
  _save(os.path.join(root, 'a.png'), rgb)
  _save(os.path.join(root, 'x/grey.png'), grey)
  _save(os.path.join(root, 'x/y/alpha.PNG'), rgba)
  _save(os.path.join(root, 'x/y/z/lossless.webp'), webp, lossless=True)
  _save(os.path.join(root, 'pic.bmp'), bmp)
  _save(os.path.join(root, 'x/photo.JPG'), rgb, quality=90)
  _save(os.path.join(root, 'x/y/photo2.jpeg'), rgb[:, :40], quality=90)
  pal.save(os.path.join(root, 'x/palette.png'))
  with open(os.path.join(root, 'x/notes.txt'), 'w') as f:
    f.write('not an image')
  return files


def test_folder_reads_nested_mixed_formats(tmp_path):
  files = _make_mixed_folder(tmp_path / 'train')
  _save(str(tmp_path / 'val' / 'v.png'), _const((1, 2, 3), 40, 40))
  train, val = ip.create_sources(
      _cfg(name='folder', train_dir=str(tmp_path / 'train'),
           val_dir=str(tmp_path / 'val')))
  assert len(train) == len(files) and len(val) == 1
  rels = [os.path.relpath(p, tmp_path / 'train') for p in train.paths]
  assert sorted(rels) == sorted(files)
  for i, rel in enumerate(rels):
    x = train[i]
    assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3, rel
    if files[rel] is not None:
      np.testing.assert_array_equal(x, files[rel], err_msg=rel)
    else:
      assert x.shape == ((40, 50, 3) if rel == 'x/photo.JPG' else (40, 40, 3))
  assert ip.num_train_examples(
      _cfg(name='folder', train_dir=str(tmp_path / 'train'),
           val_dir=str(tmp_path / 'val'))) == len(files)
  # The training loader runs over all of them (incl. upsizing 33x35 -> 32 ok).
  b = _take(ip.create_train_loader(
      _cfg(name='folder', train_dir=str(tmp_path / 'train'),
           val_dir=str(tmp_path / 'val'), batch_size=16), seed=0), 1)[0]
  assert b.shape == (16, S, S, 3) and b.dtype == np.uint8


def test_folder_hash_split_is_deterministic(tmp_path):
  for i in range(10):
    _save(str(tmp_path / f'd{i % 3}' / f'{i}.png'), _const((i, 0, 0), 40, 40))
  cfg = _cfg(name='folder', train_dir=str(tmp_path), val_fraction=0.3)
  train, val = ip.create_sources(cfg)
  train2, val2 = ip.create_sources(cfg)
  assert len(val) == 3 and len(train) == 7
  assert set(train.paths).isdisjoint(val.paths)
  assert len(set(train.paths) | set(val.paths)) == 10
  assert train.paths == train2.paths and val.paths == val2.paths
  assert ip.num_train_examples(cfg) == 7
  # A different fraction still splits disjointly and deterministically.
  _, val5 = ip.create_sources(_cfg(name='folder', train_dir=str(tmp_path),
                                   val_fraction=0.5))
  assert len(val5) == 5 and set(val.paths) <= set(val5.paths)


def _colour_folder(root, n, sizes=((40, 48), (20, 26), (64, 40), (32, 32))):
  colours = [(10 * k + 5, 200 - 10 * k, 7 * k) for k in range(n)]
  for k, col in enumerate(colours):
    h, w = sizes[k % len(sizes)]
    _save(os.path.join(root, f's{k % 2}', f'{k}.png'), _const(col, h, w))
  return colours


def test_folder_eval_covers_each_val_image_once(tmp_path):
  colours = _colour_folder(str(tmp_path / 'val'), 5)
  _colour_folder(str(tmp_path / 'train'), 2)
  cfg = _cfg(name='folder', train_dir=str(tmp_path / 'train'),
             val_dir=str(tmp_path / 'val'))
  batches = list(ip.create_eval_batches(cfg, batch_size=2))
  assert [b['mask'].tolist() for b in batches] == [
      [True, True], [True, True], [True, False]]
  assert all(b['image'].shape == (2, S, S, 3) for b in batches)
  seen = [_colour_of(b['image'][i]) for b in batches for i in range(2)
          if b['mask'][i]]
  assert sorted(seen) == sorted(colours)
  assert (batches[-1]['image'][1] == 0).all()
  # Two shards: same number of batches each, together every image once.
  parts = [list(ip.create_eval_batches(cfg, batch_size=2, shard_index=k,
                                       shard_count=2)) for k in range(2)]
  assert len(parts[0]) == len(parts[1])
  seen = [_colour_of(b['image'][i]) for p in parts for b in p
          for i in range(2) if b['mask'][i]]
  assert sorted(seen) == sorted(colours)


def test_folder_eval_centre_crop_and_resize(tmp_path):
  rng = np.random.default_rng(1)
  big = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
  _save(str(tmp_path / 'val' / 'big.png'), big)
  _colour_folder(str(tmp_path / 'train'), 1)
  cfg = _cfg(name='folder', train_dir=str(tmp_path / 'train'),
             val_dir=str(tmp_path / 'val'))
  img = next(ip.create_eval_batches(cfg, batch_size=1))['image'][0]
  np.testing.assert_array_equal(_to_uint8(img), big[4:36, 14:46])
  # resize_size=48: shorter side 40 -> 48 (48x72), then the centre 32x32.
  cfg.resize_size = 48
  img = next(ip.create_eval_batches(cfg, batch_size=1))['image'][0]
  want = np.asarray(Image.fromarray(big).resize((72, 48), Image.BICUBIC))
  np.testing.assert_array_equal(_to_uint8(img), want[8:40, 20:52])
  cfg.resize_size = 16
  with pytest.raises(ValueError, match='resize_size'):
    ip.create_sources(cfg)


def test_folder_sharded_train_loader_reads_disjoint_shards(tmp_path):
  colours = _colour_folder(str(tmp_path), 8, sizes=((40, 40),))
  cfg = _cfg(name='folder', train_dir=str(tmp_path), val_dir=str(tmp_path),
             batch_size=8)
  seen = []
  for k in range(2):
    b = _take(ip.create_train_loader(cfg, seed=0, shard_index=k,
                                     shard_count=2), 1)[0]
    assert b.shape == (4, S, S, 3)
    seen.append({_colour_of(x) for x in b})
    assert len(seen[-1]) == 4  # one shard-epoch = its 4 distinct images
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(colours)


def test_folder_corrupt_file_is_named_when_read(tmp_path):
  _colour_folder(str(tmp_path), 3)
  bad = tmp_path / 'deep' / 'broken.jpg'
  bad.parent.mkdir()
  bad.write_bytes(b'this is not a jpeg' * 20)
  cfg = _cfg(name='folder', train_dir=str(tmp_path), val_dir=str(tmp_path),
             batch_size=4, on_bad_image='error')  # training default skips
  train, _ = ip.create_sources(cfg)  # listing works; reading fails
  i = list(train.paths).index(str(bad))
  with pytest.raises(ValueError) as e:
    train[i]
  assert str(bad) in str(e.value) and 'delete' in str(e.value)
  with pytest.raises(ValueError, match='broken.jpg'):
    _take(ip.create_train_loader(cfg, seed=0), 1)  # 4 records, batch of 4


def test_folder_missing_or_empty_dir(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(ValueError) as e:
    ip.create_sources(_cfg(name='folder', train_dir=str(missing)))
  assert str(missing) in str(e.value) and '.png' in str(e.value)
  empty = tmp_path / 'empty'
  (empty / 'sub').mkdir(parents=True)
  (empty / 'sub' / 'readme.txt').write_text('hi')
  with pytest.raises(ValueError) as e:
    ip.create_sources(_cfg(name='folder', train_dir=str(empty)))
  assert str(empty) in str(e.value) and '.jpg' in str(e.value)
  with pytest.raises(ValueError, match='train_dir'):
    ip.create_sources(_cfg(name='folder'))


# --------------------------------------------------------------------------
# tfds


def test_tfds_not_prepared_fails_fast_with_instructions(tmp_path):
  for name in ('imagenet2012', 'cifar10'):
    t = time.time()
    with pytest.raises(ValueError) as e:
      ip.create_train_loader(
          _cfg(name='tfds', tfds_name=name, tfds_data_dir=str(tmp_path)), seed=0)
    assert time.time() - t < 30
    msg = str(e.value)
    assert name in msg and 'tfds build' in msg and str(tmp_path) in msg
    assert '--file_format=array_record' in msg and '--manual_dir' in msg
  t = time.time()
  with pytest.raises(ValueError, match='not prepared'):
    ip.num_train_examples(
        _cfg(name='tfds', tfds_name='imagenet2012', tfds_data_dir=str(tmp_path)))
  assert time.time() - t < 30


def test_tfds_prepared_array_record_dataset(tmp_path):
  train_imgs = [np.full((40 + k, 36, 3), 20 * k, np.uint8) for k in range(5)]
  val_imgs = [np.full((36, 50, 3), 100 + 20 * k, np.uint8) for k in range(3)]
  write_tiny_tfds(tmp_path, train_imgs, val_imgs)
  cfg = _cfg(name='tfds', tfds_name='vqjax_tiny_images',
             tfds_data_dir=str(tmp_path), batch_size=5)
  train, val = ip.create_sources(cfg)
  assert len(train) == 5 and len(val) == 3 and ip.num_train_examples(cfg) == 5
  assert sorted(int(train[i][0, 0, 0]) for i in range(5)) == [0, 20, 40, 60, 80]
  b = _take(ip.create_train_loader(cfg, seed=0), 1)[0]
  assert b.shape == (5, S, S, 3)
  assert sorted(_colour_of(x)[0] for x in b) == [0, 20, 40, 60, 80]
  batches = list(ip.create_eval_batches(cfg, batch_size=2))
  seen = [_colour_of(bt['image'][i])[0] for bt in batches for i in range(2)
          if bt['mask'][i]]
  assert sorted(seen) == [100, 120, 140] and len(batches) == 2


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
  on = lambda seed, **kw: np.concatenate(_take(ip.create_train_loader(
      _cfg(color_augment='on', **kw), seed=seed), 3))
  off = np.concatenate(_take(ip.create_train_loader(_cfg(color_augment='off'), seed=3), 3))
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
  assert ip.color_augment_on(_cfg()) and not ip.color_augment_on(_cfg(name='folder'))
  with pytest.raises(ValueError, match='color_augment'):
    ip.create_train_loader(_cfg(color_augment='yes'), seed=0)


# ----------------------------------------------------------------------------
# Prefetching and the decode cache.


def test_prefetch_yields_the_same_batches_and_resumes_exactly():
  plain = _take(ip.create_train_loader(_cfg(), seed=7), 6)
  it = ip.prefetch(iter(ip.create_train_loader(_cfg(), seed=7)), 3)
  first = [next(it)['image'] for _ in range(3)]
  state = it.get_state()           # after the 3 batches handed out, not those prepared
  rest = [next(it)['image'] for _ in range(3)]
  it.close()
  for got, want in zip(first + rest, plain):
    np.testing.assert_array_equal(got, want)
  resumed = ip.prefetch(iter(ip.create_train_loader(_cfg(), seed=7)), 2)
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


def test_folder_decode_cache_returns_the_same_read_only_images(tmp_path):
  import pickle  # pylint: disable=import-outside-toplevel
  _colour_folder(str(tmp_path / 'train'), 4)
  paths = ip.list_image_files(str(tmp_path / 'train'))
  uncached = ip.ImageFolderSource(paths, str(tmp_path))
  smallest = min(uncached[i].nbytes for i in range(4))
  for budget, cached_count in ((0, 0), (smallest - 1, 0), (10**6, 4)):
    source = ip.ImageFolderSource(paths, str(tmp_path), cache_bytes=budget)
    for i in range(4):
      np.testing.assert_array_equal(source[i], uncached[i])
      assert (source[i] is source[i]) == (cached_count > 0)
    assert len(source._cache) == cached_count  # pylint: disable=protected-access
    if cached_count:
      assert not source[0].flags.writeable
      copy = pickle.loads(pickle.dumps(source))     # worker processes: own, empty cache
      assert not copy._cache and copy.cache_bytes == budget  # pylint: disable=protected-access
  train, val = ip.create_sources(_cfg(name='folder', train_dir=str(tmp_path / 'train'),
                                      val_fraction=0.25, decode_cache_mb=1))
  assert train.cache_bytes == val.cache_bytes == 2**20
  with pytest.raises(ValueError, match='prefetch'):
    ip.create_train_loader(_cfg(prefetch=-1), seed=0)
