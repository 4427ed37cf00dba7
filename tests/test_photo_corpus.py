"""scripts/photo_corpus.py: the manifest, its split rule, grid crops, sha checks."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(REPO, "scripts", "photo_corpus_files.tsv")


def _load_module():
  spec = importlib.util.spec_from_file_location(
      "photo_corpus", os.path.join(REPO, "scripts", "photo_corpus.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module   # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


pc = _load_module()


def _raw_lines():
  """The manifest split by hand (independent of read_manifest)."""
  with open(MANIFEST, encoding="utf-8") as f:
    lines = f.read().splitlines()
  header = lines[0].split("\t")
  return header, [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def test_manifest_parses_and_every_row_is_complete():
  header, raw = _raw_lines()
  assert header == ["package", "version", "path", "sha256", "size", "split", "name",
                    "description"]
  rows = pc.read_manifest(MANIFEST)
  assert len(rows) == len(raw) >= 30
  for row, r in zip(rows, raw):
    assert len(r) == len(header)
    assert r["package"] and r["version"] and r["path"] and r["description"]
    assert len(r["sha256"]) == 64 and int(r["sha256"], 16) >= 0
    w, h = r["size"].split("x")
    assert (row.width, row.height) == (int(w), int(h)) and min(row.width, row.height) >= 256
    assert (row.package, row.path, row.sha256, row.split) == (
        r["package"], r["path"], r["sha256"], r["split"])
  assert len({r["name"] for r in raw}) == len(raw)


def test_no_file_in_both_splits():
  _, raw = _raw_lines()
  for key in ("sha256", ("package", "path"), "path", "name"):
    get = (lambda r, k=key: tuple(r[x] for x in k)) if isinstance(key, tuple) else (
        lambda r, k=key: r[k])
    train = {get(r) for r in raw if r["split"] == "train"}
    val = {get(r) for r in raw if r["split"] == "val"}
    assert train and val and not train & val, key
  assert len({r["sha256"] for r in raw}) == len(raw)   # each picture listed once


def test_split_is_every_fifth_by_sha256():
  _, raw = _raw_lines()
  ordered = sorted(raw, key=lambda r: r["sha256"])
  for i, r in enumerate(ordered):
    assert r["split"] == ("val" if i % 5 == 0 else "train"), r["name"]
  expected = {r["sha256"]: r["split"] for r in raw}
  assert pc.split_by_sha(expected) == expected


def test_grid_crops_positions_and_values():
  # 130 x 200 -> 2 x 3 crops of 64; pixel (y, x) encodes its own position.
  y, x = np.mgrid[0:130, 0:200]
  image = np.stack([y, x % 256, (y + x) % 7], axis=-1).astype(np.uint8)
  crops = pc.grid_crops(image, 64)
  assert [(r, c) for r, c, _ in crops] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
  tops_lefts = {(0, 0): (0, 0), (0, 1): (0, 64), (0, 2): (0, 128),
                (1, 0): (64, 0), (1, 1): (64, 64), (1, 2): (64, 128)}
  for r, c, crop in crops:
    top, left = tops_lefts[(r, c)]
    assert crop.shape == (64, 64, 3)
    assert crop[0, 0, 0] == top and crop[0, 0, 1] == left
    assert crop[63, 63, 0] == top + 63 and crop[63, 63, 1] == left + 63
    np.testing.assert_array_equal(crop[..., 2], (np.add.outer(
        np.arange(top, top + 64), np.arange(left, left + 64)) % 7).astype(np.uint8))
  assert pc.num_grid_crops(130, 200, 64) == 6 == len(crops)
  assert pc.num_grid_crops(256, 383, 64) == 4 * 5
  assert pc.crop_name("mate_Dune", 3, 5) == "mate_Dune_r03_c05.png"


def test_write_val_crops_files_and_rerun(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (130, 200, 3), dtype=np.uint8)
  photos, crops = tmp_path / "photos", tmp_path / "crops"
  photos.mkdir()
  Image.fromarray(image).save(photos / "p.png")
  first = pc.write_val_crops(str(photos), str(crops), 64)
  assert first == dict(photos=1, written=6, skipped=0)
  assert sorted(os.listdir(crops)) == [f"p_r{r:02d}_c{c:02d}.png"
                                       for r in range(2) for c in range(3)]
  np.testing.assert_array_equal(np.asarray(Image.open(crops / "p_r01_c02.png")),
                                image[64:128, 128:192])
  assert pc.write_val_crops(str(photos), str(crops), 64) == dict(photos=1, written=0,
                                                                 skipped=6)


def _row(path, sha, split="train", name="x"):
  return pc.Row("pkg", "1.0", path, sha, 1, 1, split, name, "d")


def test_copy_raw_checks_sha256(tmp_path):
  root = tmp_path / "root"
  (root / "pkg" / "usr").mkdir(parents=True)
  (root / "pkg" / "usr" / "a.jpg").write_bytes(b"photo bytes")
  good = hashlib.sha256(b"photo bytes").hexdigest()
  out = tmp_path / "out"
  assert pc.copy_raw([_row("usr/a.jpg", good)], [str(root)], str(out)) == dict(
      written=1, skipped=0)
  assert (out / "raw" / "train" / "x.jpg").read_bytes() == b"photo bytes"
  bad = "0" * 64
  with pytest.raises(ValueError) as e:
    pc.copy_raw([_row("usr/a.jpg", bad, name="y")], [str(root)], str(out))
  message = str(e.value)
  assert "sha256 mismatch" in message and "a.jpg" in message
  assert bad in message and good in message
  assert not (out / "raw" / "train" / "y.jpg").exists()
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    pc.copy_raw([_row("usr/missing.jpg", good, name="z")], [str(root)], str(out))


def test_read_manifest_rejects_bad_rows(tmp_path):
  header = "\t".join(pc.COLUMNS)
  ok = ["p", "1", "a.jpg", "a" * 64, "300x400", "train", "n", "d"]
  for i, bad_value, match in ((3, "abc", "sha256"), (5, "both", "split"),
                              (4, "300", "size"), (1, " ", "empty")):
    fields = list(ok)
    fields[i] = bad_value
    path = tmp_path / f"m{i}.tsv"
    path.write_text(header + "\n" + "\t".join(fields) + "\n")
    with pytest.raises(ValueError, match=match):
      pc.read_manifest(str(path))
  path = tmp_path / "dup.tsv"
  path.write_text(header + "\n" + "\t".join(ok) + "\n" + "\t".join(ok) + "\n")
  with pytest.raises(ValueError, match="more than once"):
    pc.read_manifest(str(path))
