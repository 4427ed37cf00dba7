"""Metric writers and progress reporting without TensorFlow.

Decision: clu 0.0.12's `metric_writers.create_default_writer` (a TF summary
writer) imports TensorFlow. Rather than installing tensorflow-cpu (+1.3 GB)
only to write event files, this module implements clu's `MetricWriter`
interface on `tensorboardX.SummaryWriter`, which writes the same TensorBoard
event files with just protobuf and NumPy. That writer is the only hand-written
part here; progress, timing and profiling are clu's own `periodic_actions`
(`ReportProgress`, `Profile`), importable without TensorFlow through
`periodic_actions()`.

Even `from clu.metric_writers import interface` runs the package's `__init__`,
which imports the TF summary writer. When TensorFlow is missing,
`_import_clu_metric_writers` registers a bare `clu.metric_writers` package
(same directory, none of its `__init__` code) so that the TF-free submodules
(`interface`, `logging_writer`, `multi_writer`, `async_writer`) import as usual;
with TensorFlow installed the real package is used unchanged.

`read_events` / `read_scalars` read the event files back (tests, reports).

Usage:
  writer = create_writer(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions().ReportProgress(num_train_steps=n, writer=writer,
                                             every_steps=100)
  for step in range(1, num_train_steps + 1):
    with report.timed("data", wait_jax_async_dispatch=False):
      batch = next(it)
    ...
    report(step)
    if step % log_every == 0:
      writer.write_scalars(step, {"loss": loss, "psnr": psnr})
  writer.close()
"""

from __future__ import annotations

from collections.abc import Mapping
import glob
import importlib
import importlib.machinery
import importlib.util
import os
import struct
import sys
from typing import Any
import uuid

from absl import logging
import numpy as np
import tensorboardX
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

# Names of clu.metric_writers that need TensorFlow (see `_import_clu_metric_writers`).
_TF_ONLY_NAMES = ("SummaryWriter", "create_default_writer", "write_values",
                  "summary_writer", "utils", "tf")
_TF_FREE_SUBMODULES = {
    "interface": ("MetricWriter",),
    "logging_writer": ("LoggingWriter",),
    "multi_writer": ("MultiWriter",),
    "async_writer": ("AsyncWriter", "AsyncMultiWriter", "ensure_flushes"),
}


def _is_missing_tf(error: ModuleNotFoundError) -> bool:
  root = (error.name or "").split(".")[0]
  return root in ("tensorflow", "tensorboard")


def _import_clu_metric_writers():
  """Returns `clu.metric_writers`, a TF-free stand-in if TF is not installed."""
  name = "clu.metric_writers"
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if not _is_missing_tf(e):
      raise
  import clu  # pylint: disable=g-import-not-at-top
  spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
  spec.submodule_search_locations = [
      os.path.join(os.path.dirname(clu.__file__), "metric_writers")]
  package = importlib.util.module_from_spec(spec)
  package.__doc__ = ("TF-free subset of clu.metric_writers, registered by "
                     "vqjax.writers because TensorFlow is not installed.")

  def missing(attr: str):
    if attr in _TF_ONLY_NAMES:
      raise AttributeError(
          f"clu.metric_writers.{attr} needs TensorFlow, which is not "
          "installed; use vqjax.writers (tensorboardX) instead")
    raise AttributeError(f"module {name!r} has no attribute {attr!r}")

  package.__getattr__ = missing
  sys.modules[name] = package
  clu.metric_writers = package
  for submodule, attrs in _TF_FREE_SUBMODULES.items():
    module = importlib.import_module(f"{name}.{submodule}")
    setattr(package, submodule, module)
    for attr in attrs:
      setattr(package, attr, getattr(module, attr))
  return package


_mw = _import_clu_metric_writers()
MetricWriter = _mw.MetricWriter
MultiWriter = _mw.MultiWriter
LoggingWriter = _mw.LoggingWriter

Array = Any  # np.ndarray | jax.Array
Scalar = Any  # int | float | np.number | np.ndarray | jax.Array (size 1)


def _to_float(value: Scalar) -> float:
  return float(np.asarray(value).reshape(()))


def _images_to_uint8(images: Array) -> np.ndarray:
  """[N, H, W, C] or [H, W, C], uint8 or float in [0, 1] -> [N, H, W, C] uint8."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"images must be [N, H, W, C] or [H, W, C] with C in "
                     f"(1, 3, 4), got shape {images.shape}")
  if images.dtype == np.uint8:
    return images
  images = np.clip(images.astype(np.float32), 0.0, 1.0)
  return np.round(images * 255.0).astype(np.uint8)


def _hparam_value(value: Any) -> bool | int | float | str:
  """A value the TensorBoard hparams plugin can show (str() otherwise)."""
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


class ConsoleWriter(LoggingWriter):
  """clu's LoggingWriter with numbers formatted alike: "[step] loss=0.0123, psnr=28.1".

  clu formats only Python floats with %.6g; NumPy/JAX scalars are converted
  first so that they are printed the same way.
  """

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]):
    super().write_scalars(step, {k: _to_float(v) for k, v in scalars.items()})


class TensorboardXWriter(MetricWriter):
  """clu MetricWriter writing TensorBoard event files with tensorboardX.

  Images: [N, H, W, C] or [H, W, C], uint8 or float in [0, 1] (clipped); the N
  images of one key are tiled into one grid image (up to 8 per row).
  Texts appear under "<key>/text_summary" (tensorboardX's tag convention).
  Histograms use `num_buckets[key]` equal-width buckets (default 30, as TF).
  Raw summaries, videos and audios are not supported (warning, no-op).
  """

  def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 60.0):
    # tensorboardX names event files by time in whole seconds + hostname and
    # opens them with "wb": a unique suffix keeps two writers started in the
    # same second on one logdir from truncating each other's file.
    self._writer = tensorboardX.SummaryWriter(
        logdir=os.fspath(logdir), flush_secs=flush_secs,
        filename_suffix=f".{uuid.uuid4().hex[:8]}")

  @property
  def logdir(self) -> str:
    return self._writer.logdir

  def write_summaries(self, step: int, values: Mapping[str, Array],
                      metadata: Mapping[str, Any] | None = None):
    logging.log_first_n(logging.WARNING,
                        "TensorboardXWriter does not write raw summaries.", 1)

  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]):
    for key, value in scalars.items():
      self._writer.add_scalar(key, _to_float(value), global_step=step)

  def write_images(self, step: int, images: Mapping[str, Array]):
    for key, value in images.items():
      self._writer.add_images(key, _images_to_uint8(value), global_step=step,
                              dataformats="NHWC")

  def write_videos(self, step: int, videos: Mapping[str, Array]):
    logging.log_first_n(logging.WARNING,
                        "TensorboardXWriter does not write videos.", 1)

  def write_audios(self, step: int, audios: Mapping[str, Array], *,
                   sample_rate: int):
    logging.log_first_n(logging.WARNING,
                        "TensorboardXWriter does not write audios.", 1)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for key, value in texts.items():
      self._writer.add_text(key, str(value), global_step=step)

  def write_histograms(self, step: int, arrays: Mapping[str, Array],
                       num_buckets: Mapping[str, int] | None = None):
    num_buckets = num_buckets or {}
    for key, value in arrays.items():
      value = np.asarray(value, np.float64)
      if value.size == 0:
        logging.warning("Skipping empty histogram %r at step %d.", key, step)
        continue
      self._writer.add_histogram(key, value, global_step=step,
                                 bins=max(int(num_buckets.get(key, 30)), 2))

  def write_hparams(self, hparams: Mapping[str, Any]):
    # Same file as the scalars (tensorboardX's add_hparams opens a new run
    # in a sub-directory instead). Nested keys are flattened to "a.b".
    from clu.internal import utils as clu_utils  # pylint: disable=g-import-not-at-top
    flat = {k: _hparam_value(v) for k, v in clu_utils.flatten_dict(hparams)}
    file_writer = self._writer._get_file_writer()  # pylint: disable=protected-access
    for proto in tbx_summary.hparams(flat, {}):
      file_writer.add_summary(proto)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def create_writer(logdir: str | os.PathLike, *, just_logging: bool,
                  collection: str | None = None) -> MetricWriter:
  """Console (absl INFO, one line per call) + TensorBoard event files in logdir.

  Args:
    logdir: directory for the event files (created if needed).
    just_logging: only log to the console and write no files; use it for
      `jax.process_index() > 0` in multi-host runs.
    collection: optional tag added to the console lines (e.g. "eval").

  Returns:
    A clu MultiWriter.
  """
  writers = [ConsoleWriter(collection)]
  if not just_logging:
    writers.append(TensorboardXWriter(logdir))
  return MultiWriter(writers)


def periodic_actions():
  """clu's `periodic_actions` module (ReportProgress, Profile), imported without
  TensorFlow: it only needs clu.metric_writers' TF-free interface."""
  _import_clu_metric_writers()
  return importlib.import_module("clu.periodic_actions")


def read_events(logdir: str | os.PathLike) -> list[event_pb2.Event]:
  """Every event of logdir's event files (events.out.tfevents.*, in name order).

  TFRecord framing: uint64 length, uint32 masked CRC-32C of the length, the
  Event proto, uint32 masked CRC-32C of it. Both CRCs are checked (ValueError
  naming the file); a truncated last record, of a file still being written, is
  left out. No TensorFlow: tensorboardX's protos.
  """
  events = []
  for path in sorted(glob.glob(os.path.join(os.fspath(logdir), "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      header = data[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      if pos + 16 + length > len(data):
        break
      (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
      record = data[pos + 12:pos + 12 + length]
      (record_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
      if header_crc != masked_crc32c(header) or record_crc != masked_crc32c(record):
        raise ValueError(f"{path}: corrupt record at byte {pos} (CRC mismatch).")
      events.append(event_pb2.Event.FromString(record))
      pos += 16 + length
  return events


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of the scalars in logdir's event files, in file order."""
  out: dict[str, list[tuple[int, float]]] = {}
  for event in read_events(logdir):
    for value in event.summary.value:
      if value.HasField("simple_value"):
        out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return out
