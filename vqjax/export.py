"""The encode / decode / reconstruct modes of vqjax.main, and the codes file format.

Codes file: an ArrayRecord file (`array_record` package), one record per
image, because grain reads it directly and with random access
(`grain.sources.ArrayRecordDataSource(path)`, shuffling and sharding included),
so a prior (PixelCNN, transformer) trains on the codes with the same loader
machinery as the autoencoder, without TensorFlow. Each record is the bytes of
an uncompressed NumPy `.npz` (`np.savez`) holding

  <level>   int32 [h, w, *code_shape]  the codes of one image, one array per
                          level (`codes`, `top`/`bottom`, `layer_<l>`; as in
                          metrics.json); code_shape is the level quantizer's
                          (() for VQ, (G,) grouped, (L,) residual); SEMANTICIST:
                          `tokens` int32 [T, *code_shape], or float32 [T, D]
                          continuous tokens
  source    str []        where the image came from (below)
  index     int64 []      the record's position in the split

`read_record(bytes) -> dict` parses one; `codes_dataset(path)` is a grain
MapDataset of parsed records; `write_codes_file(path, codes)` writes arrays of
codes as such a file (vqjax.prior's samples, tests). The file is written to PATH.tmp and renamed to
PATH when complete, so a killed export never leaves a file at PATH.

Records of a split (`split_records`), all at data.image_size S:
  builtin  the non-overlapping S x S grid crops of each photo of the split
           (training photos for 'train', builtin_val_images for 'validation'),
           anchored at the top-left corner, photo by photo, row-major: the
           validation split is exactly the eval crops; source
           '<photo>/r<row>_c<col>'.
  folder   each file's evaluation crop (optional resize, centre S x S crop);
           source = the file path relative to its folder; undecodable files are
           left out (logged).
  tfds     each example's evaluation crop; source '<split>/<index>'.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from typing import Iterator

import grain
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from vqjax import data, inference

SPLITS = ("train", "validation")


def record_bytes(codes: dict[str, np.ndarray], source: str, index: int) -> bytes:
  """One record: npz bytes of {level: int32 [h, w, *code_shape] (float32 tokens stay
  float32)}, source and index."""
  buf = io.BytesIO()
  as_stored = lambda v: np.asarray(v, np.float32 if np.issubdtype(np.asarray(v).dtype,
                                                                  np.floating) else np.int32)
  np.savez(buf, **{k: as_stored(v) for k, v in codes.items()},
           source=np.asarray(source), index=np.asarray(index, np.int64))
  return buf.getvalue()


def read_record(data: bytes) -> dict:
  """Inverse of record_bytes: {level: int32 [h, w, ...], 'source': str, 'index': int}."""
  with np.load(io.BytesIO(data), allow_pickle=False) as z:
    out = {k: z[k] for k in z.files}
  out["source"], out["index"] = str(out["source"]), int(out["index"])
  return out


def write_codes_file(path: str, codes: dict[str, np.ndarray],
                     sources: list[str] | None = None) -> str:
  """{level: int [N, h, w, *code_shape]} -> a codes file at `path` (one record
  per image, index i, source sources[i] or 'codes/<i>'), written atomically."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  n = len(next(iter(codes.values())))
  writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1")
  try:
    for i in range(n):
      writer.write(record_bytes({k: v[i] for k, v in codes.items()},
                                sources[i] if sources else f"codes/{i}", i))
  finally:
    writer.close()
  os.replace(path + ".tmp", path)
  return path


def codes_dataset(path: str) -> grain.MapDataset:
  """A grain MapDataset of the parsed records of a codes file."""
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource([path])).map(read_record)


def split_records(data_config, split: str) -> Iterator[tuple[str, np.ndarray]]:
  """(source name, uint8 [S, S, 3]) of every record of `split` (module docstring)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; use one of {SPLITS}.")
  c = ml_collections.ConfigDict(data_config)
  s = int(c.image_size)
  if c.name == "builtin":
    val = tuple(c.builtin_val_images)
    names = val if split == "validation" else tuple(
        n for n in data.BUILTIN_PHOTOS if n not in val)
    for name in names:
      photo = data.builtin_photo(name)
      for r in range(photo.shape[0] // s):
        for col in range(photo.shape[1] // s):
          yield f"{name}/r{r:02d}_c{col:02d}", photo[r * s:(r + 1) * s, col * s:(col + 1) * s]
    return
  train, val = data.create_sources(c)
  source = train if split == "train" else val
  for i in range(len(source)):
    if hasattr(source, "load"):  # folder: None for an undecodable file
      source.on_bad_image = "skip"
      image = source.load(i)
      root = c.val_dir if split == "validation" and c.val_dir else c.train_dir
      name = os.path.relpath(source.paths[i], os.path.expanduser(str(root)))
    else:
      image, name = source[i], f"{split}/{i}"
    if image is None:
      continue
    image = data.fit_image(image, s, int(c.resize_size))
    yield name, np.ascontiguousarray(data.center_crop(image, s))


class _Progress:
  """Logs done/total with rate and ETA at most every `every` seconds."""

  def __init__(self, what: str, total: int | None, every: float = 10.0):
    self.what, self.total, self.every = what, total, every
    self.start = self.last = time.time()

  def __call__(self, done: int, final: bool = False):
    now = time.time()
    if not final and now - self.last < self.every:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    if self.total:
      eta = (self.total - done) / max(rate, 1e-9)
      logging.info("%s %d/%d (%.0f%%), %.1f images/s, ETA %.0f s", self.what, done,
                   self.total, 100 * done / self.total, rate, eta)
    else:
      logging.info("%s %d, %.1f images/s", self.what, done, rate)


def encode_split(config, workdir: str) -> str:
  """--mode=encode: the codes of every record of config.encode.split -> ArrayRecord.

  Returns the output path (config.encode.output, default
  workdir/codes/<split>.array_record).
  """
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  e = config.encode
  out = e.output or os.path.join(workdir, "codes", f"{e.split}.array_record")
  model = inference.load(workdir, config.eval.checkpoint_step, batch_size=e.batch_size)
  if config.data.image_size % model.downsampling:
    raise ValueError(f"data.image_size={config.data.image_size} must be divisible by "
                     f"{model.downsampling}, the model's downsampling.")
  total = None
  if config.data.name == "builtin":
    total = sum(1 for _ in split_records(config.data, e.split))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  progress, done = _Progress(f"encode {e.split}", total), 0
  try:
    records = split_records(config.data, e.split)
    while True:
      chunk = [r for _, r in zip(range(e.batch_size), records)]
      if not chunk:
        break
      codes = model.encode(np.stack([image for _, image in chunk]))
      for k, (name, _) in enumerate(chunk):
        writer.write(record_bytes({n: c[k] for n, c in codes.items()}, name, done + k))
      done += len(chunk)
      progress(done)
    writer.close()
  except BaseException:
    writer.close()
    os.remove(tmp)
    raise
  if not done:
    os.remove(tmp)
    raise ValueError(f"the {e.split} split of {config.data.name!r} has no images.")
  os.replace(tmp, out)
  progress(done, final=True)
  logging.info("wrote the codes of %d images (levels %s, checkpoint %d) to %s",
               done, ", ".join(model.level_names), model.step, out)
  return out


def _file_name(index: int, source: str) -> str:
  stem = os.path.splitext(source)[0]
  return f"{index:06d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('_')}.png"


def decode_file(config, workdir: str) -> str:
  """--mode=decode: a codes file (config.decode.input) -> one PNG per record.

  Records are decoded in batches of equal code-map shape; PNGs are named
  <index>_<source>.png in config.decode.output (default workdir/decoded).
  """
  d = config.decode
  if not d.input or not os.path.exists(d.input):
    raise FileNotFoundError(f"--config.decode.input={d.input!r}: no such codes file "
                            "(write one with --mode=encode).")
  out = d.output or os.path.join(workdir, "decoded")
  os.makedirs(out, exist_ok=True)
  model = inference.load(workdir, config.eval.checkpoint_step, batch_size=d.batch_size)
  dataset = codes_dataset(d.input)
  progress, n = _Progress("decode", len(dataset)), len(dataset)
  for start in range(0, n, d.batch_size):
    records = [dataset[i] for i in range(start, min(n, start + d.batch_size))]
    groups: dict[tuple, list] = {}
    for r in records:
      groups.setdefault(tuple(r[model.level_names[-1]].shape), []).append(r)
    for group in groups.values():
      images = model.decode({name: np.stack([r[name] for r in group])
                             for name in model.level_names})
      for r, image in zip(group, images):
        Image.fromarray(image).save(os.path.join(out, _file_name(r["index"], r["source"])))
    progress(min(n, start + d.batch_size), final=start + d.batch_size >= n)
  logging.info("decoded %d records of %s into %s", n, d.input, out)
  return out


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two uint8 images on the [0, 1] pixel range (inf if equal)."""
  mse = np.mean((a.astype(np.float64) / 255.0 - b.astype(np.float64) / 255.0) ** 2)
  return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def reconstruct_images(config, workdir: str) -> str:
  """--mode=reconstruct: images (a file or a folder tree) -> reconstructions.

  Writes to config.reconstruct.output (default workdir/reconstructions):
  recon/<name>.png, side_by_side/<name>.png (original | reconstruction) and
  psnr.csv (file, height, width, psnr_db; uint8 images, [0, 1] range). Sizes
  not divisible by the model's downsampling are padded (edge) and cropped back.
  """
  r = config.reconstruct
  src = os.path.expanduser(r.input)
  if os.path.isdir(src):
    paths, root = data.list_image_files(src), src
  elif os.path.isfile(src):
    paths, root = [src], os.path.dirname(src)
  else:
    raise FileNotFoundError(f"--config.reconstruct.input={r.input!r}: no such file or folder.")
  out = r.output or os.path.join(workdir, "reconstructions")
  for sub in ("recon", "side_by_side"):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
  model = inference.load(workdir, config.eval.checkpoint_step, batch_size=r.batch_size)
  rows, progress = [], _Progress("reconstruct", len(paths))
  for start in range(0, len(paths), r.batch_size):
    chunk = [(p, data.load_image_file(p)) for p in paths[start:start + r.batch_size]]
    groups: dict[tuple, list] = {}
    for path, image in chunk:  # one padded batch per image size
      groups.setdefault(image.shape, []).append((path, image))
    for group in groups.values():
      # Each image size compiles anyway: no zero rows for a lone image of its size.
      model.batch_size = len(group)
      recons = model.reconstruct(np.stack([image for _, image in group]))
      for (path, image), recon in zip(group, recons):
        rel = os.path.relpath(path, root)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(rel)[0]) + ".png"
        Image.fromarray(recon).save(os.path.join(out, "recon", name))
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        Image.fromarray(np.concatenate([image, gap, recon], axis=1)).save(
            os.path.join(out, "side_by_side", name))
        rows.append((rel, image.shape[0], image.shape[1], psnr_uint8(image, recon)))
    done = min(len(paths), start + r.batch_size)
    progress(done, final=done == len(paths))
  rows.sort()
  with open(os.path.join(out, "psnr.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "height", "width", "psnr_db"])
    writer.writerows((a, h, w, f"{p:.4f}") for a, h, w, p in rows)
  logging.info("reconstructed %d images into %s: mean PSNR %.2f dB", len(rows), out,
               np.mean([p for *_, p in rows]))
  return out
