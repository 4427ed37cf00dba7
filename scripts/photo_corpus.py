"""Builds the offline photo corpus from extracted Debian packages.

    python scripts/photo_corpus.py --root=/tmp/pkgs --out_dir=data/photo_corpus
        [--manifest=scripts/photo_corpus_files.tsv] [--shorter_side=256]
        [--crop=64] [--workers=1]

`scripts/photo_corpus.sh` downloads the packages and calls this; see
docs/PHOTO_CORPUS.md. The manifest (tab-separated, one kept photo a row) names
each file by package and path; a file is looked up as ROOT/<package>/<path>,
then ROOT/<path>, for each --root in turn. Steps:

  1. copy each file to OUT/raw/<split>/<name><ext>, checking its sha256;
  2. resize (vqjax.experiments.prepare: bicubic, shorter side --shorter_side, PNG) into
     OUT/train (whole photos) and OUT/val_photos;
  3. cut each validation photo into non-overlapping --crop x --crop tiles
     (top-left anchored, row-major, remainder dropped) in
     OUT/val/<name>_rRR_cCC.png.

Every write is atomic (temporary name, then rename) and existing files are
skipped, so a rerun only fills in what is missing. Train then with
--config.data.name=folder --config.data.train_dir=OUT/train
--config.data.val_dir=OUT/val.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MANIFEST = os.path.join(REPO_ROOT, "scripts", "photo_corpus_files.tsv")
COLUMNS = ("package", "version", "path", "sha256", "size", "split", "name", "description")
SPLITS = ("train", "val")
VAL_EVERY = 5  # split rule: sorted by sha256, index % VAL_EVERY == 0 -> val


@dataclasses.dataclass(frozen=True)
class Row:
  package: str
  version: str
  path: str
  sha256: str
  width: int
  height: int
  split: str
  name: str
  description: str


def read_manifest(path: str) -> list[Row]:
  """Parses the tab-separated manifest; raises ValueError naming the bad line."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not lines or tuple(lines[0].split("\t")) != COLUMNS:
    raise ValueError(f"{path}: the header must be the tab-separated columns {COLUMNS}; "
                     f"got {lines[0] if lines else 'an empty file'!r}.")
  rows = []
  for number, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = line.split("\t")
    where = f"{path}:{number}"
    if len(fields) != len(COLUMNS):
      raise ValueError(f"{where}: expected {len(COLUMNS)} tab-separated fields, got "
                       f"{len(fields)}; fix the line.")
    f = dict(zip(COLUMNS, fields))
    empty = [k for k in COLUMNS if not f[k].strip()]
    if empty:
      raise ValueError(f"{where}: empty field(s) {empty}; every row needs all columns.")
    sha = f["sha256"].lower()
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
      raise ValueError(f"{where}: sha256 {f['sha256']!r} is not 64 hex digits.")
    try:
      width, height = (int(v) for v in f["size"].lower().split("x"))
    except ValueError:
      raise ValueError(f"{where}: size {f['size']!r} is not WIDTHxHEIGHT.") from None
    if f["split"] not in SPLITS:
      raise ValueError(f"{where}: split {f['split']!r} is not one of {SPLITS}.")
    if os.path.basename(f["name"]) != f["name"] or f["name"].startswith("."):
      raise ValueError(f"{where}: name {f['name']!r} must be a plain file stem.")
    rows.append(Row(f["package"], f["version"], f["path"], sha, width, height, f["split"],
                    f["name"], f["description"]))
  names = [r.name for r in rows]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"{path}: names {dup} appear more than once; names must be unique.")
  return rows


def split_by_sha(shas: Iterable[str], every: int = VAL_EVERY) -> dict[str, str]:
  """The split rule: sha256s sorted ascending, position % every == 0 -> 'val'."""
  return {sha: ("val" if i % every == 0 else "train")
          for i, sha in enumerate(sorted(set(shas)))}


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def check_sha256(path: str, expected: str) -> None:
  """Raises ValueError naming the file and both hashes if they differ."""
  actual = sha256_file(path)
  if actual != expected.lower():
    raise ValueError(
        f"sha256 mismatch for {path}: expected {expected.lower()}, got {actual}. The "
        "package version differs from the manifest's (or the file is damaged): download "
        "the recorded version, or re-derive the manifest row.")


def find_source(roots: Sequence[str], row: Row) -> str:
  """ROOT/<package>/<path>, else ROOT/<path>, for the first root that has it."""
  tried = []
  for root in roots:
    for candidate in (os.path.join(root, row.package, row.path), os.path.join(root, row.path)):
      if os.path.isfile(candidate):
        return candidate
      tried.append(candidate)
  raise FileNotFoundError(
      f"{row.package}:{row.path} not found (tried {tried}); extract the package with "
      f"`dpkg-deb -x {row.package}_*.deb ROOT/{row.package}` and pass --root=ROOT.")


def atomic_copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  tmp = f"{dst}.tmp{os.getpid()}"
  shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


def atomic_save_png(image: np.ndarray, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  tmp = f"{dst}.tmp{os.getpid()}"
  Image.fromarray(image).save(tmp, format="PNG")
  os.replace(tmp, dst)


def raw_name(row: Row) -> str:
  return row.name + os.path.splitext(row.path)[1].lower()


def copy_raw(rows: Sequence[Row], roots: Sequence[str], out_dir: str) -> dict:
  """Copies each manifest file to OUT/raw/<split>/, verifying sha256 (also of
  files already there, so a stale copy is caught)."""
  written = skipped = 0
  for row in rows:
    dst = os.path.join(out_dir, "raw", row.split, raw_name(row))
    if os.path.exists(dst):
      check_sha256(dst, row.sha256)
      skipped += 1
      continue
    src = find_source(roots, row)
    check_sha256(src, row.sha256)
    atomic_copy(src, dst)
    written += 1
  return dict(written=written, skipped=skipped)


def grid_crops(image: np.ndarray, size: int) -> list[tuple[int, int, np.ndarray]]:
  """(row, col, crop) for the floor(H/size) x floor(W/size) non-overlapping
  size x size tiles, top-left anchored, row-major; the remainder is dropped."""
  if size < 1:
    raise ValueError(f"crop size must be >= 1, got {size}.")
  h, w = image.shape[:2]
  return [(r, c, image[r * size:(r + 1) * size, c * size:(c + 1) * size])
          for r in range(h // size) for c in range(w // size)]


def num_grid_crops(height: int, width: int, size: int) -> int:
  return (height // size) * (width // size)


def crop_name(name: str, row: int, col: int) -> str:
  return f"{name}_r{row:02d}_c{col:02d}.png"


def write_val_crops(photo_dir: str, crop_dir: str, size: int) -> dict:
  """Cuts every image in photo_dir into grid crops under crop_dir."""
  written = skipped = photos = 0
  for fname in sorted(os.listdir(photo_dir)):
    if fname.startswith(".") or ".tmp" in fname:
      continue
    photos += 1
    stem = os.path.splitext(fname)[0]
    with Image.open(os.path.join(photo_dir, fname)) as im:
      image = np.asarray(im.convert("RGB"))
    for r, c, crop in grid_crops(image, size):
      dst = os.path.join(crop_dir, crop_name(stem, r, c))
      if os.path.exists(dst):
        skipped += 1
        continue
      atomic_save_png(np.ascontiguousarray(crop), dst)
      written += 1
  return dict(photos=photos, written=written, skipped=skipped)


def resize_splits(out_dir: str, shorter_side: int, workers: int) -> None:
  """OUT/raw/{train,val} -> OUT/train, OUT/val_photos via vqjax.experiments.prepare (PNG)."""
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  from vqjax.experiments import prepare  # pylint: disable=import-outside-toplevel
  data = dict(name="folder", train_dir=os.path.join(out_dir, "raw", "train"),
              val_dir=os.path.join(out_dir, "raw", "val"))
  for split, dst in (("train", "train"), ("val", "val_photos")):
    prepare.prepare_split(data, split, os.path.join(out_dir, dst), shorter_side=shorter_side,
                          image_format="png", workers=workers)


def image_sizes(folder: str) -> list[tuple[int, int]]:
  """(height, width) of each image file in folder (headers only)."""
  sizes = []
  for fname in sorted(os.listdir(folder)):
    if fname.startswith(".") or ".tmp" in fname:
      continue
    with Image.open(os.path.join(folder, fname)) as im:
      sizes.append((im.height, im.width))
  return sizes


def build(roots: Sequence[str], out_dir: str, manifest: str = DEFAULT_MANIFEST, *,
          shorter_side: int = 256, crop: int = 64, workers: int = 1) -> dict:
  """All three steps; returns the counts."""
  rows = read_manifest(manifest)
  copied = copy_raw(rows, roots, out_dir)
  resize_splits(out_dir, shorter_side, workers)
  crops = write_val_crops(os.path.join(out_dir, "val_photos"), os.path.join(out_dir, "val"),
                          crop)
  train_sizes = image_sizes(os.path.join(out_dir, "train"))
  return dict(
      train_photos=len(train_sizes),
      val_photos=crops["photos"],
      val_crops=len([f for f in os.listdir(os.path.join(out_dir, "val"))
                     if f.endswith(".png") and ".tmp" not in f]),
      train_grid_crops=sum(num_grid_crops(h, w, crop) for h, w in train_sizes),
      raw_copied=copied["written"], raw_present=copied["skipped"],
      crops_written=crops["written"])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", action="append", required=True,
                      help="folder of extracted packages (ROOT/<package>/...); repeatable")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--manifest", default=DEFAULT_MANIFEST)
  parser.add_argument("--shorter_side", type=int, default=256)
  parser.add_argument("--crop", type=int, default=64)
  parser.add_argument("--workers", type=int, default=1,
                      help="resize processes (vqjax.experiments.prepare; 0: one per core)")
  args = parser.parse_args(argv)
  counts = build(args.root, args.out_dir, args.manifest, shorter_side=args.shorter_side,
                 crop=args.crop, workers=args.workers)
  c = args.crop
  print(f"train photos: {counts['train_photos']}")
  print(f"val photos: {counts['val_photos']}")
  print(f"val crops ({c}x{c}): {counts['val_crops']}")
  print(f"non-overlapping {c}x{c} crops in the train photos: {counts['train_grid_crops']}")
  out = os.path.abspath(args.out_dir)
  print(f"train with --config.data.name=folder --config.data.train_dir={out}/train "
        f"--config.data.val_dir={out}/val")
  return 0


if __name__ == "__main__":
  sys.exit(main())
