"""vqjax.experiments.prepare: resized copies of folder data, checked against PIL directly."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vqjax import data
from vqjax.experiments import prepare

from conftest import write_tiny_tfds


def _photo(w, h, seed=0):
  """A smooth colour image (bicubic-friendly), uint8 HxWx3."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _folder(root, files):
  for rel, (w, h) in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(_photo(w, h, seed=len(rel))).save(path)


FILES = {
    "a/land.png": (500, 375),     # -> 341 x 256 (hand-computed: 500 * 256 / 375 = 341.3)
    "a/b/tall.webp": (300, 400),  # -> 256 x 341
    "small.bmp": (120, 90),       # smaller than 256: kept as it is
    "square.png": (256, 256),     # already at size
}


def _data(root, **kw):
  return dict(name="folder", train_dir=str(root), val_fraction=0.0, **kw)


def test_folder_copy_has_the_resized_images(tmp_path):
  src, out = tmp_path / "src", tmp_path / "out"
  _folder(src, FILES)
  counts = prepare.prepare_split(_data(src), "train", str(out), shorter_side=256,
                                 image_format="png", workers=1)
  assert counts == dict(images=4, written=4, skipped=0, seconds=counts["seconds"])
  want_sizes = {"a/land.png": (341, 256), "a/b/tall.png": (256, 341),
                "small.png": (120, 90), "square.png": (256, 256)}
  for rel, size in want_sizes.items():
    got = Image.open(out / rel)
    assert got.size == size, rel
    original = [k for k in FILES if os.path.splitext(k)[0] == os.path.splitext(rel)[0]][0]
    ref = Image.open(src / original).convert("RGB")
    if ref.size != size:
      ref = ref.resize(size, Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(got.convert("RGB")), np.asarray(ref), rel)


def test_rerun_skips_present_files_and_rewrites_missing_ones(tmp_path):
  src, out = tmp_path / "src", tmp_path / "out"
  _folder(src, FILES)
  prepare.prepare_split(_data(src), "train", str(out), workers=1)
  os.remove(out / "small.jpg")
  counts = prepare.prepare_split(_data(src), "train", str(out), workers=1)
  assert (counts["written"], counts["skipped"]) == (1, 3)
  assert (out / "small.jpg").exists()
  assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_corrupt_image_stops_with_its_name_and_keeps_what_was_written(tmp_path):
  src, out = tmp_path / "src", tmp_path / "out"
  _folder(src, {"a.png": (300, 300), "c.png": (300, 300)})
  (src / "b.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match="b.jpg"):
    prepare.prepare_split(_data(src), "train", str(out), workers=1, chunk=1)
  assert Image.open(out / "a.jpg").size == (256, 256)  # written before b, kept
  assert not (out / "b.jpg").exists()


def test_bad_requests_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="builtin"):
    prepare.prepare_split(dict(name="builtin"), "train", str(tmp_path))
  with pytest.raises(ValueError, match="split"):
    prepare.prepare_split(_data(tmp_path), "test", str(tmp_path))
  src = tmp_path / "src"
  _folder(src, {"x.png": (40, 40), "x.bmp": (40, 40)})
  with pytest.raises(ValueError, match="both be written as 'x.jpg'"):
    prepare.prepare_split(_data(src), "train", str(tmp_path / "out"), workers=1)


def test_command_line_writes_both_splits_with_worker_processes(tmp_path):
  src, out = tmp_path / "src", tmp_path / "out"
  _folder(src, {f"d{i % 3}/img{i}.png": (300 + i, 280) for i in range(12)})
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, "-m", "vqjax.experiments.prepare", "--config=configs/default.py",
         "--config.data.name=folder", f"--config.data.train_dir={src}",
         "--config.data.val_fraction=0.25", f"--out_dir={out}", "--workers=2"]
  proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  train = sorted(p.relative_to(out / "train") for p in (out / "train").rglob("*.jpg"))
  val = sorted(p.relative_to(out / "val") for p in (out / "val").rglob("*.jpg"))
  assert len(train) + len(val) == 12 and val  # the held-out files go to val
  assert not set(train) & set(val)
  assert all(min(Image.open(out / "train" / p).size) == 256 for p in train)
  # The copy is a folder dataset the loaders read as it is.
  cfg = data.default_data_config()
  cfg.name, cfg.train_dir, cfg.val_dir = "folder", str(out / "train"), str(out / "val")
  cfg.image_size, cfg.resize_size = 64, 256
  assert len(data.create_sources(cfg)[1]) == len(val)


def test_tfds_records_are_written_by_index(tmp_path):
  train_imgs = [_photo(300 + 10 * k, 280, seed=k) for k in range(3)]
  val_imgs = [_photo(200, 150, seed=9)]
  name = write_tiny_tfds(tmp_path / "tfds", train_imgs, val_imgs)
  data = dict(name="tfds", tfds_name=name, tfds_data_dir=str(tmp_path / "tfds"))
  out = tmp_path / "out"
  prepare.prepare_split(data, "train", str(out / "train"), image_format="png", workers=1)
  prepare.prepare_split(data, "val", str(out / "val"), image_format="png", workers=1)
  # Record i of the source -> 0000/0000000i.png; tfds may store the examples in
  # any order, so each output is matched to its image by its (distinct) width.
  widths = {round((300 + 10 * k) * 256 / 280): k for k in range(3)}  # 274, 283, 293
  seen = set()
  for i in range(3):
    got = Image.open(out / "train" / "0000" / f"{i:08d}.png")
    assert got.size[1] == 256 and got.size[0] in widths
    k = widths[got.size[0]]
    want = Image.fromarray(train_imgs[k]).resize(got.size, Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    seen.add(k)
  assert seen == {0, 1, 2}
  small = np.asarray(Image.open(out / "val" / "0000" / "00000000.png"))
  np.testing.assert_array_equal(small, val_imgs[0])  # 150 < 256: unchanged
