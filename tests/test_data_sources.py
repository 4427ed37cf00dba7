"""Tests for vqjax.data's folder and tfds sources (offline: tmp folders, a tiny
prepared tfds dataset)."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from vqjax import data as ip

from conftest import (SMALL_CROP as S, as_uint8, colour_of, small_data_config, take_images,
                      write_tiny_tfds)


def _save(path, array, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kw)


def _const(colour, h, w):
  return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


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
      small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
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
      small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
           val_dir=str(tmp_path / 'val'))) == len(files)
  # The training loader runs over all of them (incl. upsizing 33x35 -> 32 ok).
  b = take_images(ip.create_train_loader(
      small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
           val_dir=str(tmp_path / 'val'), batch_size=16), seed=0), 1)[0]
  assert b.shape == (16, S, S, 3) and b.dtype == np.uint8


def test_folder_hash_split_is_deterministic(tmp_path):
  for i in range(10):
    _save(str(tmp_path / f'd{i % 3}' / f'{i}.png'), _const((i, 0, 0), 40, 40))
  cfg = small_data_config(name='folder', train_dir=str(tmp_path), val_fraction=0.3)
  train, val = ip.create_sources(cfg)
  train2, val2 = ip.create_sources(cfg)
  assert len(val) == 3 and len(train) == 7
  assert set(train.paths).isdisjoint(val.paths)
  assert len(set(train.paths) | set(val.paths)) == 10
  assert train.paths == train2.paths and val.paths == val2.paths
  assert ip.num_train_examples(cfg) == 7
  # A different fraction still splits disjointly and deterministically.
  _, val5 = ip.create_sources(small_data_config(name='folder', train_dir=str(tmp_path),
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
  cfg = small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
             val_dir=str(tmp_path / 'val'))
  batches = list(ip.create_eval_batches(cfg, batch_size=2))
  assert [b['mask'].tolist() for b in batches] == [
      [True, True], [True, True], [True, False]]
  assert all(b['image'].shape == (2, S, S, 3) for b in batches)
  seen = [colour_of(b['image'][i]) for b in batches for i in range(2)
          if b['mask'][i]]
  assert sorted(seen) == sorted(colours)
  assert (batches[-1]['image'][1] == 0).all()
  # Two shards: same number of batches each, together every image once.
  parts = [list(ip.create_eval_batches(cfg, batch_size=2, shard_index=k,
                                       shard_count=2)) for k in range(2)]
  assert len(parts[0]) == len(parts[1])
  seen = [colour_of(b['image'][i]) for p in parts for b in p
          for i in range(2) if b['mask'][i]]
  assert sorted(seen) == sorted(colours)


def test_folder_eval_centre_crop_and_resize(tmp_path):
  rng = np.random.default_rng(1)
  big = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
  _save(str(tmp_path / 'val' / 'big.png'), big)
  _colour_folder(str(tmp_path / 'train'), 1)
  cfg = small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
             val_dir=str(tmp_path / 'val'))
  img = next(ip.create_eval_batches(cfg, batch_size=1))['image'][0]
  np.testing.assert_array_equal(as_uint8(img), big[4:36, 14:46])
  # resize_size=48: shorter side 40 -> 48 (48x72), then the centre 32x32.
  cfg.resize_size = 48
  img = next(ip.create_eval_batches(cfg, batch_size=1))['image'][0]
  want = np.asarray(Image.fromarray(big).resize((72, 48), Image.BICUBIC))
  np.testing.assert_array_equal(as_uint8(img), want[8:40, 20:52])
  cfg.resize_size = 16
  with pytest.raises(ValueError, match='resize_size'):
    ip.create_sources(cfg)


def test_folder_sharded_train_loader_reads_disjoint_shards(tmp_path):
  colours = _colour_folder(str(tmp_path), 8, sizes=((40, 40),))
  cfg = small_data_config(name='folder', train_dir=str(tmp_path), val_dir=str(tmp_path),
             batch_size=8)
  seen = []
  for k in range(2):
    b = take_images(ip.create_train_loader(cfg, seed=0, shard_index=k,
                                     shard_count=2), 1)[0]
    assert b.shape == (4, S, S, 3)
    seen.append({colour_of(x) for x in b})
    assert len(seen[-1]) == 4  # one shard-epoch = its 4 distinct images
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(colours)


def test_folder_corrupt_file_is_named_when_read(tmp_path):
  _colour_folder(str(tmp_path), 3)
  bad = tmp_path / 'deep' / 'broken.jpg'
  bad.parent.mkdir()
  bad.write_bytes(b'this is not a jpeg' * 20)
  cfg = small_data_config(name='folder', train_dir=str(tmp_path), val_dir=str(tmp_path),
             batch_size=4, on_bad_image='error')  # training default skips
  train, _ = ip.create_sources(cfg)  # listing works; reading fails
  i = list(train.paths).index(str(bad))
  with pytest.raises(ValueError) as e:
    train[i]
  assert str(bad) in str(e.value) and 'delete' in str(e.value)
  with pytest.raises(ValueError, match='broken.jpg'):
    take_images(ip.create_train_loader(cfg, seed=0), 1)  # 4 records, batch of 4


def test_folder_missing_or_empty_dir(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(ValueError) as e:
    ip.create_sources(small_data_config(name='folder', train_dir=str(missing)))
  assert str(missing) in str(e.value) and '.png' in str(e.value)
  empty = tmp_path / 'empty'
  (empty / 'sub').mkdir(parents=True)
  (empty / 'sub' / 'readme.txt').write_text('hi')
  with pytest.raises(ValueError) as e:
    ip.create_sources(small_data_config(name='folder', train_dir=str(empty)))
  assert str(empty) in str(e.value) and '.jpg' in str(e.value)
  with pytest.raises(ValueError, match='train_dir'):
    ip.create_sources(small_data_config(name='folder'))


# --------------------------------------------------------------------------
# tfds


def test_tfds_not_prepared_fails_fast_with_instructions(tmp_path):
  for name in ('imagenet2012', 'cifar10'):
    t = time.time()
    with pytest.raises(ValueError) as e:
      ip.create_train_loader(
          small_data_config(name='tfds', tfds_name=name, tfds_data_dir=str(tmp_path)), seed=0)
    assert time.time() - t < 30
    msg = str(e.value)
    assert name in msg and 'tfds build' in msg and str(tmp_path) in msg
    assert '--file_format=array_record' in msg and '--manual_dir' in msg
  t = time.time()
  with pytest.raises(ValueError, match='not prepared'):
    ip.num_train_examples(
        small_data_config(name='tfds', tfds_name='imagenet2012', tfds_data_dir=str(tmp_path)))
  assert time.time() - t < 30


def test_tfds_prepared_array_record_dataset(tmp_path):
  train_imgs = [np.full((40 + k, 36, 3), 20 * k, np.uint8) for k in range(5)]
  val_imgs = [np.full((36, 50, 3), 100 + 20 * k, np.uint8) for k in range(3)]
  write_tiny_tfds(tmp_path, train_imgs, val_imgs)
  cfg = small_data_config(name='tfds', tfds_name='vqjax_tiny_images',
             tfds_data_dir=str(tmp_path), batch_size=5)
  train, val = ip.create_sources(cfg)
  assert len(train) == 5 and len(val) == 3 and ip.num_train_examples(cfg) == 5
  assert sorted(int(train[i][0, 0, 0]) for i in range(5)) == [0, 20, 40, 60, 80]
  b = take_images(ip.create_train_loader(cfg, seed=0), 1)[0]
  assert b.shape == (5, S, S, 3)
  assert sorted(colour_of(x)[0] for x in b) == [0, 20, 40, 60, 80]
  batches = list(ip.create_eval_batches(cfg, batch_size=2))
  seen = [colour_of(bt['image'][i])[0] for bt in batches for i in range(2)
          if bt['mask'][i]]
  assert sorted(seen) == [100, 120, 140] and len(batches) == 2


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
  train, val = ip.create_sources(small_data_config(name='folder', train_dir=str(tmp_path / 'train'),
                                      val_fraction=0.25, decode_cache_mb=1))
  assert train.cache_bytes == val.cache_bytes == 2**20
  with pytest.raises(ValueError, match='prefetch'):
    ip.create_train_loader(small_data_config(prefetch=-1), seed=0)
