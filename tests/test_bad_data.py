"""Bad data in an image folder: odd modes decode to RGB uint8, undecodable files follow data.on_bad_image."""

from __future__ import annotations

import io
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from vqjax import data as ip

S = 32  # crop side
PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]


def _cfg(root, **kw):
  c = ip.default_data_config()
  c.update(name='folder', image_size=S, batch_size=4, train_dir=str(root),
           val_dir=str(root))
  c.update(kw)
  return c


def _write_bad_files(root) -> list[str]:
  """Truncated JPEG, zero-byte .png, text saved as .jpg; returns their paths."""
  os.makedirs(root, exist_ok=True)
  buf = io.BytesIO()
  noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(buf, 'JPEG', quality=90)
  paths = [os.path.join(root, n) for n in ('b_truncated.jpg', 'e_empty.png',
                                            'h_text.jpg')]
  data = [buf.getvalue()[:len(buf.getvalue()) // 2], b'', b'not an image\n' * 9]
  for p, d in zip(paths, data):
    with open(p, 'wb') as f:
      f.write(d)
  for p in paths:  # the fixture really is undecodable
    with pytest.raises(ValueError, match='Could not decode'):
      ip.load_image_file(p)
  return paths


def _palette_image(index):
  img = Image.fromarray(np.asarray(index, np.uint8), 'P')
  img.putpalette(PALETTE)
  return img


def _cmyk_to_rgb(cmyk):
  """PIL's CMYK -> RGB in NumPy: nk - round(c * nk / 255), nk = 255 - k."""
  cmyk = cmyk.astype(np.int64)
  nk = 255 - cmyk[..., 3:]
  tmp = cmyk[..., :3] * nk + 128
  return (nk - (((tmp >> 8) + tmp) >> 8)).astype(np.uint8)


# --------------------------------------------------------------------------
# Decodable odd files -> RGB uint8, exact against NumPy references.


def test_odd_modes_decode_to_rgb_uint8(tmp_path):
  rng = np.random.default_rng(0)
  want = {}
  grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
  Image.fromarray(grey, 'L').save(tmp_path / 'grey.png')
  want['grey.png'] = np.repeat(grey[..., None], 3, -1)
  rgba = rng.integers(0, 256, (22, 26, 4), dtype=np.uint8)
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
  want['rgba.png'] = rgba[..., :3]
  index = rng.integers(0, 4, (19, 23), dtype=np.uint8)
  pal = np.asarray(PALETTE, np.uint8).reshape(-1, 3)
  _palette_image(index).save(tmp_path / 'pal.png')
  _palette_image(index).save(tmp_path / 'pal_transparent.png', transparency=1)
  assert Image.open(tmp_path / 'pal_transparent.png').info['transparency'] == 1
  want['pal.png'] = want['pal_transparent.png'] = pal[index]
  deep = rng.integers(0, 65536, (18, 21), dtype=np.uint16)
  Image.fromarray(deep).save(tmp_path / 'deep16.png')
  assert Image.open(tmp_path / 'deep16.png').mode == 'I;16'
  want['deep16.png'] = np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, -1)
  cmyk = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
  Image.fromarray(cmyk, 'CMYK').save(tmp_path / 'cmyk.jpg', quality=95)
  raw = np.asarray(Image.open(tmp_path / 'cmyk.jpg'))  # decoded CMYK (lossy)
  assert raw.shape == (24, 32, 4)
  want['cmyk.jpg'] = _cmyk_to_rgb(raw)
  photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  for orientation, k in ((6, -1), (8, 1)):  # 6: turn clockwise, 8: anticlockwise
    img = Image.fromarray(photo)
    exif = img.getexif()
    exif[0x0112] = orientation
    name = f'exif{orientation}.jpg'
    img.save(tmp_path / name, exif=exif, quality=95)
    raw = np.asarray(Image.open(tmp_path / name))  # stored, unrotated pixels
    assert raw.shape == (30, 40, 3)
    want[name] = np.rot90(raw, k)
  small = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
  Image.fromarray(small).save(tmp_path / 'small.png')
  want['small.png'] = small

  train, val = ip.create_sources(_cfg(tmp_path))
  assert len(train) == len(want)
  for i, path in enumerate(train.paths):
    name = os.path.basename(path)
    for got in (ip.load_image_file(path), train[i], val[i]):
      assert got.dtype == np.uint8 and got.shape == want[name].shape, name
      np.testing.assert_array_equal(got, want[name], err_msg=name)
  assert want['exif6.jpg'].shape == (40, 30, 3)


def test_image_smaller_than_the_crop_is_upscaled(tmp_path):
  rng = np.random.default_rng(1)
  small = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
  Image.fromarray(small).save(tmp_path / 'a_small.png')
  Image.new('RGB', (1, 1), (1, 2, 3)).save(tmp_path / 'b_pixel.png')
  Image.new('RGB', (60, 1), (4, 5, 6)).save(tmp_path / 'c_line.png')
  cfg = _cfg(tmp_path, batch_size=3)
  batch = next(ip.create_eval_batches(cfg, batch_size=3))
  assert batch['image'].shape == (3, S, S, 3) and batch['mask'].all()
  # 10x14 -> shorter side 32: 32x45 (bicubic), then the centre 32x32.
  ref = np.asarray(Image.fromarray(small).resize((45, 32), Image.BICUBIC))
  np.testing.assert_array_equal(batch['image'][0], ref[:, 6:38])
  assert (batch['image'][1] == (1, 2, 3)).all()
  assert (batch['image'][2] == (4, 5, 6)).all()
  it = iter(ip.create_train_loader(cfg, seed=0))
  for _ in range(4):
    b = next(it)['image']
    assert b.shape == (3, S, S, 3) and b.dtype == np.uint8
  for got in (ip.random_fitted_crop_flip(small, S, 0, np.random.default_rng(0)),
              ip.fit_image(np.zeros((1, 60, 3), np.uint8), S, 0)):
    assert min(got.shape[:2]) == S


# --------------------------------------------------------------------------
# Undecodable files.


def _colour_files(root) -> dict[str, tuple]:
  """Constant-colour files in several modes (one smaller than the crop)."""
  os.makedirs(root, exist_ok=True)
  files = {}
  def add(name, img, colour, **kw):
    img.save(os.path.join(root, name), **kw)
    files[os.path.join(root, name)] = colour
  add('a_rgb.png', Image.new('RGB', (40, 36), (10, 20, 30)), (10, 20, 30))
  add('c_grey.png', Image.new('L', (36, 40), 77), (77, 77, 77))
  add('d_rgba.png', Image.new('RGBA', (40, 40), (1, 2, 3, 0)), (1, 2, 3))
  add('f_pal.png', _palette_image(np.full((40, 40), 2)), (0, 0, 255),
      transparency=2)
  add('g_deep.png', Image.fromarray(np.full((40, 40), 0xABCD, np.uint16)),
      (0xAB, 0xAB, 0xAB))
  add('i_small.png', Image.new('RGB', (9, 6), (200, 100, 50)), (200, 100, 50))
  return files


def _colours(images):
  out = []
  for x in images:
    u = x.reshape(-1, 3)
    assert (u == u[0]).all()
    out.append(tuple(int(v) for v in u[0]))
  return out


def _mine(root):
  return [p for p in ip.bad_image_files() if p.startswith(str(root))]


def test_training_skips_bad_files_and_counts_them(tmp_path, caplog):
  good = _colour_files(tmp_path)
  bad = _write_bad_files(tmp_path)
  n = len(good) + len(bad)
  cfg = _cfg(tmp_path)
  train, _ = ip.create_sources(cfg)
  assert train.on_bad_image == 'skip'
  with caplog.at_level(logging.WARNING):
    it = iter(ip.create_train_loader(cfg, seed=0))
    stream = [next(it)['image'] for _ in range(-(-3 * n // 4))]  # 3 epochs
  seen = []
  for b in stream:
    assert b.shape == (4, S, S, 3) and b.dtype == np.uint8
    seen += _colours(b)
  assert set(seen) == set(good.values())
  # Each bad file counted once, warned about once, by name, with the count.
  assert _mine(tmp_path) == sorted(bad)
  warnings = [r.getMessage() for r in caplog.records
              if 'Skipping undecodable image file' in r.getMessage()]
  for p in bad:
    assert sum(repr(p) in w for w in warnings) == 1, (p, warnings)
  counts = sorted(int(re.search(r'(\d+) bad image file', w).group(1))
                  for w in warnings)
  assert counts == list(range(counts[0], counts[0] + 3))  # running count
  # A bad record is the next decodable file (cyclic): deterministic.
  paths = list(train.paths)
  for p in bad:
    i = paths.index(p)
    j = next(k % n for k in range(i + 1, i + n) if paths[k % n] in good)
    np.testing.assert_array_equal(train[i], train[j])
  it2 = iter(ip.create_train_loader(cfg, seed=0))
  for b in stream:
    np.testing.assert_array_equal(next(it2)['image'], b)


def test_eval_raises_on_bad_file_by_default(tmp_path):
  _colour_files(tmp_path)
  bad = _write_bad_files(tmp_path)
  cfg = _cfg(tmp_path)
  with pytest.raises(ValueError) as e:
    list(ip.create_eval_batches(cfg, batch_size=4))
  assert any(repr(p) in str(e.value) for p in bad)
  assert "on_bad_image='skip'" in str(e.value)
  # 'error' in training too when asked.
  named = r'Could not decode image file .*_(truncated|empty|text)\.'
  with pytest.raises(ValueError, match=named):
    it = iter(ip.create_train_loader(_cfg(tmp_path, on_bad_image='error'),
                                     seed=0))
    for _ in range(3):
      next(it)


def test_eval_skip_leaves_bad_files_out(tmp_path):
  good = _colour_files(tmp_path)
  bad = _write_bad_files(tmp_path)
  n = len(good) + len(bad)
  cfg = _cfg(tmp_path, on_bad_image='skip')
  batches = list(ip.create_eval_batches(cfg, batch_size=4))
  assert len(batches) == -(-n // 4)  # as many batches as with no bad file
  images = np.concatenate([b['image'] for b in batches])
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == len(good) and mask[:len(good)].all()
  assert sorted(_colours(images[mask])) == sorted(good.values())
  assert (images[~mask] == 0).all()
  assert _mine(tmp_path) == sorted(bad)


def test_all_bad_folder_fails_clearly(tmp_path):
  _write_bad_files(tmp_path)
  it = iter(ip.create_train_loader(_cfg(tmp_path), seed=0))
  with pytest.raises(ValueError, match='None of the 3 image files'):
    next(it)
  with pytest.raises(ValueError, match='None of the 3 validation image files'):
    list(ip.create_eval_batches(_cfg(tmp_path, on_bad_image='skip'),
                                batch_size=2))


def test_empty_or_missing_folder_fails_at_start(tmp_path):
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'sub' / 'notes.txt').write_text('hi')
  for root in (tmp_path / 'missing', tmp_path / 'empty'):
    with pytest.raises(ValueError, match=str(root)):
      ip.create_train_loader(_cfg(root), seed=0)  # before any iteration
    with pytest.raises(ValueError, match=str(root)):
      ip.create_eval_batches(_cfg(root), batch_size=2)


def test_on_bad_image_field_is_validated():
  assert ip.default_data_config().on_bad_image == ''
  for ok in ('', 'auto', 'skip', 'error'):
    ip.create_sources(_cfg('/nonexistent', name='builtin', on_bad_image=ok))
  with pytest.raises(ValueError, match="on_bad_image='sometimes'.*'skip'"):
    ip.create_sources(_cfg('/nonexistent', name='builtin',
                           on_bad_image='sometimes'))


def test_skip_in_a_worker_process(tmp_path):
  good = _colour_files(tmp_path)
  bad = _write_bad_files(tmp_path)
  steps = -(-(len(good) + len(bad)) // 4) + 1  # over an epoch
  it = iter(ip.create_train_loader(_cfg(tmp_path, num_workers=1), seed=4))
  got = [next(it)['image'] for _ in range(steps)]
  del it
  assert _mine(tmp_path) == sorted(bad)  # met in the worker, reported here
  ref = iter(ip.create_train_loader(_cfg(tmp_path), seed=4))
  for b in got:
    np.testing.assert_array_equal(b, next(ref)['image'])
