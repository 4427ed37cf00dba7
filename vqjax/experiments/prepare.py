"""Writes a dataset's splits as image files with the shorter side resized, once.

    python -m vqjax.experiments.prepare --config=configs/paper_single.py --out_dir=/data/imagenet_256
        [--shorter_side=256] [--format=jpeg] [--quality=95] [--workers=16]
        [--splits=train,val]

At the paper's scale the input pipeline spends most of its time decoding
full-size JPEGs and resizing them (BENCHMARKS.md, "Paper scale": 221-297 img/s
per core for 500x375 JPEGs, 980-1,351 for the same photos stored at 341x256).
This tool pays that once: every image of the configured data source
(`config.data`, folder or tfds) whose shorter side is larger than
`--shorter_side` is resized to it (bicubic, the same resize the loaders do)
and written under OUT_DIR/train and OUT_DIR/val; smaller images are written
unchanged (the loaders upscale them as before). Then train on the copy:

    python -m vqjax.main --config=configs/paper_single.py --workdir=runs/x \\
        --config.data.name=folder --config.data.train_dir=/data/imagenet_256/train \\
        --config.data.val_dir=/data/imagenet_256/val

With resize_size equal to --shorter_side the loaders' resize is then a no-op,
and crops and flips are drawn exactly as before; the only difference from
the original data is the JPEG re-encoding (`--format=png` avoids it).

Folder sources keep their relative paths (extension replaced); tfds records
become `NNNN/NNNNNNNN.jpg` by index. Files are written atomically (temporary
name, then rename) and existing ones are skipped, so a killed run resumes
where it stopped. An image that cannot be decoded stops the run with an error
naming it; everything written before it is kept.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Sequence

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from vqjax import data

FORMATS = {"jpeg": ".jpg", "png": ".png"}
SPLITS = ("train", "val")



def output_name(source, index: int, extension: str, folder_root: str) -> str:
  """Relative output path of record `index`: its path under folder_root (folder
  sources), else NNNN/NNNNNNNN by index (tfds)."""
  paths = getattr(source, "paths", None)
  if paths is not None:
    rel = os.path.relpath(paths[index], folder_root)
    return os.path.splitext(rel)[0] + extension
  return os.path.join(f"{index // 1000:04d}", f"{index:08d}{extension}")


def shrink(image: np.ndarray, shorter_side: int) -> np.ndarray:
  """uint8 HxWx3 -> shorter side == shorter_side if it was larger, else unchanged."""
  if min(image.shape[:2]) <= shorter_side:
    return image
  return data.resize_shorter_side(image, shorter_side)


def write_image(image: np.ndarray, path: str, quality: int) -> None:
  """Atomic write: a temporary file in the same folder, then a rename."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  ext = os.path.splitext(path)[1]
  kwargs = dict(format="JPEG", quality=quality) if ext == ".jpg" else dict(format="PNG")
  Image.fromarray(image).save(tmp, **kwargs)
  os.replace(tmp, path)


# Per-process state of the worker pool (the sources are rebuilt in each worker
# from the data config, so nothing large is pickled). The loaders' reading path
# (a grain MapDataset over the source with mp_prefetch workers) was measured
# slower for this job: the photo corpus's 94 photos to PNG with 2 workers took
# 30-33 s against this pool's 20-23 s (2 cores, two runs each; in-process the
# same, 13-17 s), and it needs absl flags parsed outside app.run.
_WORKER: dict = {}


def _init_worker(data_config: dict, split: str) -> None:
  # A copy must be complete: an undecodable file stops it with its name unless
  # data.on_bad_image='skip' was asked for explicitly.
  data_config = dict(data_config, on_bad_image=data_config.get("on_bad_image") or "error")
  train_source, val_source = data.create_sources(data_config)
  _WORKER["source"] = train_source if split == "train" else val_source
  root = data_config.get("val_dir") if split == "val" else ""
  _WORKER["folder_root"] = os.path.expanduser(str(root or data_config.get("train_dir", "")))


def _write_range(start: int, stop: int, out_dir: str, extension: str, shorter_side: int,
                 quality: int) -> tuple[int, int]:
  """Writes records [start, stop) of the worker's source; returns (written, skipped)."""
  source = _WORKER["source"]
  written = skipped = 0
  for i in range(start, stop):
    path = os.path.join(out_dir, output_name(source, i, extension, _WORKER["folder_root"]))
    if os.path.exists(path):
      skipped += 1
      continue
    write_image(shrink(np.asarray(source[i]), shorter_side), path, quality)
    written += 1
  return written, skipped


def prepare_split(data_config, split: str, out_dir: str, *, shorter_side: int = 256,
                  image_format: str = "jpeg", quality: int = 95, workers: int = 0,
                  chunk: int = 256) -> dict:
  """Writes one split ('train' | 'val') of `data_config` to out_dir; returns counts.

  workers: processes (0: one per core; 1: in this process).
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; choose from {SPLITS}.")
  if image_format not in FORMATS:
    raise ValueError(f"format={image_format!r}; choose from {sorted(FORMATS)}.")
  if shorter_side < 1 or not 1 <= quality <= 95:
    raise ValueError(f"shorter_side={shorter_side} must be >= 1 and quality={quality} "
                     "in 1..95.")
  config = dict(data_config)
  if config.get("name") == "builtin":
    raise ValueError("config.data.name='builtin' is already small photos; prepare copies "
                     "folder or tfds data (set config.data.name and its paths).")
  _init_worker(config, split)
  num = len(_WORKER["source"])
  names = {}
  if getattr(_WORKER["source"], "paths", None) is not None:
    for i in range(num):
      name = output_name(_WORKER["source"], i, FORMATS[image_format], _WORKER["folder_root"])
      if name in names:
        raise ValueError(
            f"{_WORKER['source'].paths[names[name]]!r} and {_WORKER['source'].paths[i]!r} "
            f"would both be written as {name!r}: rename one of them.")
      names[name] = i
  ranges = [(s, min(num, s + chunk)) for s in range(0, num, chunk)]
  args = (out_dir, FORMATS[image_format], shorter_side, quality)
  workers = workers or len(os.sched_getaffinity(0))
  start_time = time.monotonic()
  written = skipped = 0

  def report(result):
    nonlocal written, skipped
    written, skipped = written + result[0], skipped + result[1]
    rate = written / max(time.monotonic() - start_time, 1e-9)
    logging.log_every_n_seconds(
        logging.INFO, "%s: %d/%d images (%d skipped as present), %.0f img/s", 30,
        split, written + skipped, num, skipped, rate)

  if workers == 1:
    for r in ranges:
      report(_write_range(*r, *args))
  else:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker,
        initargs=(config, split)) as pool:
      futures = [pool.submit(_write_range, *r, *args) for r in ranges]
      try:
        for future in concurrent.futures.as_completed(futures):
          report(future.result())
      except BaseException:
        for future in futures:
          future.cancel()
        raise
  seconds = time.monotonic() - start_time
  logging.info("%s: %d images in %s (%d written, %d already present), %.0f s", split, num,
               out_dir, written, skipped, seconds)
  return dict(images=num, written=written, skipped=skipped, seconds=seconds)


def _define_flags():
  """The command line's flags (defined only when run as a program)."""
  return dict(
      config=config_flags.DEFINE_config_file(
          "config", None, "Experiment config whose config.data is copied.",
          lock_config=True),
      out_dir=flags.DEFINE_string("out_dir", None, "Where OUT_DIR/train and OUT_DIR/val go."),
      shorter_side=flags.DEFINE_integer("shorter_side", 256, "Target shorter side, pixels."),
      format=flags.DEFINE_enum("format", "jpeg", list(FORMATS), "Output image format."),
      quality=flags.DEFINE_integer("quality", 95, "JPEG quality (1-95)."),
      workers=flags.DEFINE_integer("workers", 0, "Worker processes (0: one per core)."),
      splits=flags.DEFINE_list("splits", list(SPLITS), "Which of train,val to write."),
  )


def main(argv: Sequence[str], flag_values: dict) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = {name: holder.value for name, holder in flag_values.items()}
  unknown = set(f["splits"]) - set(SPLITS)
  if unknown:
    raise app.UsageError(f"--splits: unknown {sorted(unknown)}; choose from {SPLITS}.")
  data_config = f["config"].data.to_dict()
  for split in f["splits"]:
    prepare_split(data_config, split, os.path.join(f["out_dir"], split),
                  shorter_side=f["shorter_side"], image_format=f["format"],
                  quality=f["quality"], workers=f["workers"])
  out = os.path.abspath(f["out_dir"])
  logging.info("Train on the copy with --config.data.name=folder "
               "--config.data.train_dir=%s --config.data.val_dir=%s",
               os.path.join(out, "train"), os.path.join(out, "val"))


if __name__ == "__main__":
  _FLAGS = _define_flags()
  flags.mark_flags_as_required(["config", "out_dir"])
  app.run(lambda argv: main(argv, _FLAGS))
