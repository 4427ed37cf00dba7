"""Tests for vqjax.writers: event files read back record by record (writers.read_events)."""

import logging as py_logging
import os

from absl import logging
import numpy as np
import pytest

from vqjax import writers


class RecordingWriter(writers.MetricWriter):
  """In-memory MetricWriter: keeps (step, scalars) of every write_scalars."""

  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


@pytest.fixture
def absl_info(caplog):
  old = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  caplog.set_level(py_logging.INFO)
  yield caplog
  logging.set_verbosity(old)


def test_clu_interface_imports_without_tensorflow():
  from clu.metric_writers import interface  # pylint: disable=g-import-not-at-top
  assert issubclass(writers.TensorboardXWriter, interface.MetricWriter)
  assert issubclass(writers.ConsoleWriter, interface.MetricWriter)
  # Every abstract method is implemented.
  assert not writers.TensorboardXWriter.__abstractmethods__


def test_scalars_round_trip(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  writer = writers.TensorboardXWriter(tmp_path)
  writer.write_scalars(1, {"loss": 0.5, "psnr": np.float32(21.25)})
  writer.write_scalars(7, {"loss": jnp.array(0.25)})
  writer.close()
  events = writers.read_events(tmp_path)
  assert events[0].file_version == "brain.Event:2"
  assert writers.read_scalars(tmp_path) == {"loss": [(1, 0.5), (7, 0.25)],
                                            "psnr": [(1, 21.25)]}


def test_read_events_checks_crcs_and_leaves_out_a_truncated_last_record(tmp_path):
  writer = writers.TensorboardXWriter(tmp_path)
  writer.write_scalars(1, {"loss": 0.5})
  writer.write_scalars(2, {"loss": 0.25})
  writer.close()
  (path,) = [p for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents.")]
  data = path.read_bytes()
  path.write_bytes(data[:-3])                 # the last record cut short: left out
  assert writers.read_scalars(tmp_path) == {"loss": [(1, 0.5)]}
  corrupt = bytearray(data)
  corrupt[-8] ^= 0xFF                         # a byte of the last record flipped
  path.write_bytes(bytes(corrupt))
  with pytest.raises(ValueError, match="CRC mismatch"):
    writers.read_events(tmp_path)
  assert writers.read_events(tmp_path / "nothing_here") == []


def test_images_texts_histograms_hparams(tmp_path):
  writer = writers.TensorboardXWriter(tmp_path)
  images = np.zeros((2, 4, 6, 3), np.float32)
  images[1] = 2.0  # clipped to 1 -> 255, not wrapped around
  writer.write_images(3, {"recon": images})
  writer.write_texts(3, {"config": "lr=1e-3"})
  values = np.arange(100, dtype=np.float32)
  writer.write_histograms(3, {"codes": values}, num_buckets={"codes": 10})
  writer.write_hparams({"model": {"num_codes": 512}, "name": "vq", "lr": 1e-3})
  writer.close()
  events = writers.read_events(tmp_path)
  values_by_tag = {v.tag: (e.step, v) for e in events for v in e.summary.value}

  step, image = values_by_tag["recon"]
  assert step == 3
  assert (image.image.height, image.image.width) == (4, 12)  # 2 tiles in a row
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.asarray(Image.open(io.BytesIO(image.image.encoded_image_string)))
  assert np.all(pixels[:, :6, :3] == 0) and np.all(pixels[:, 6:, :3] == 255)

  step, text = values_by_tag["config/text_summary"]
  assert step == 3 and text.tensor.string_val == [b"lr=1e-3"]

  step, histo = values_by_tag["codes"]
  assert step == 3
  assert histo.histo.num == 100 and histo.histo.sum == pytest.approx(4950.0)
  assert histo.histo.min == 0.0 and histo.histo.max == 99.0

  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top
  start = values_by_tag["_hparams_/session_start_info"][1]
  data = plugin_hparams_pb2.HParamsPluginData.FromString(
      start.metadata.plugin_data.content)
  hparams = data.session_start_info.hparams
  assert hparams["model.num_codes"].number_value == 512
  assert hparams["name"].string_value == "vq"
  assert hparams["lr"].number_value == pytest.approx(1e-3)


def test_create_writer_console_and_files(tmp_path, absl_info):
  writer = writers.create_writer(tmp_path / "run", just_logging=False)
  writer.write_scalars(5, {"loss": np.float32(0.123456789), "psnr": 28.0})
  writer.close()
  assert "[5] loss=0.123457, psnr=28" in absl_info.text
  assert writers.read_scalars(tmp_path / "run")["psnr"] == [(5, 28.0)]


def test_create_writer_just_logging_writes_no_files(tmp_path, absl_info):
  writer = writers.create_writer(tmp_path / "run", just_logging=True)
  writer.write_scalars(2, {"loss": 1.5})
  writer.close()
  assert "[2] loss=1.5" in absl_info.text
  assert not os.path.exists(tmp_path / "run")


def test_clu_report_progress_without_tensorflow_logs_timed_sections(absl_info):
  import sys
  periodic_actions = writers.periodic_actions()
  assert "tensorflow" not in sys.modules
  report = periodic_actions.ReportProgress(num_train_steps=4, every_steps=2, every_secs=None)
  t = 0.0
  for step in range(1, 5):
    with report.timed("data", wait_jax_async_dispatch=False):
      pass
    report(step, t=t)
    t += 0.5  # 2 steps/s
  notes = [r.getMessage() for r in absl_info.records if "work unit notes" in r.getMessage()]
  assert notes and "2.0 steps/s" in notes[-1] and "100.0% (4/4)" in notes[-1]
  assert "% data" in notes[-1]


def test_evaluation_writes_the_grid_and_code_histograms_to_tensorboard(tmp_path):
  from conftest import tiny_config
  from vqjax import evaluate
  config = tiny_config("single")
  grid = (np.zeros((4, 32, 32, 3), np.float32), np.ones((4, 32, 32, 3), np.float32))
  counts = {"codes": np.array([5, 0, 0, 3] + [0] * 28)}

  class FakeEvaluator:
    def __call__(self, params, codebook):
      return (np.full(4, 20.0), np.full(4, 0.01), counts, grid,
              {"ssim": np.full(4, 0.5), "levels": {}})

  class State:
    params = codebook = None

  writer = writers.TensorboardXWriter(tmp_path)
  evaluate.evaluate_state(config, FakeEvaluator(), State(), 7, str(tmp_path),
                          writer=writer, write_files=False)
  writer.close()
  values = {v.tag: (e.step, v) for e in writers.read_events(tmp_path) for v in e.summary.value}
  step, image = values["eval/reconstructions"]
  # 4 tiles of 32 with 2-pixel padding: 2 * 32 + 3 * 2 high, 4 * 32 + 5 * 2 wide.
  assert step == 7 and (image.image.height, image.image.width) == (70, 138)
  step, histo = values["eval/codes/uses_per_code"]
  assert step == 7 and histo.histo.num == 32 and histo.histo.sum == 8.0
  assert values["eval/psnr"][1].simple_value == pytest.approx(20.0)
