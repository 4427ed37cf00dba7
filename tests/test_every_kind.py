"""Every quantizer kind and every model kind, end to end, in the default suite:
2 train steps through `train.train_and_evaluate`, the checkpoint, a resumed
third step, `vqjax.load`, encode -> decode == reconstruct bit for bit, and a
metrics.json of the common schema whose code histogram equals a NumPy recount
of the codes `vqjax.load` gives for the same validation crops.

The references are independent of the code under test: the crops are cut with
NumPy from scikit-image's photos, the histogram is counted with np.bincount
with the entry offsets written out here (group i at i K/G, stage l at l K).
"""

import json
import os

import numpy as np
import pytest

import model_snapshot
import vqjax
from vqjax import config_lib, train

S = 32  # smoke image size
TOP_KEYS = {"checkpoint_step", "num_images", "dataset", "split", "image_size",
            "pixel_range", "psnr", "mse", "ssim", "levels"}
LEVEL_KEYS = {"num_codes", "perplexity", "normalized_perplexity", "unused_codes", "gini"}

# (case, config spec at smoke size, levels, code_shape, K per entry, offsets per entry)
CASES = [
    ("ema", "configs/default.py:smoke", ("codes",), (), 8192, "none"),
    ("learned", "configs/default.py:quantizer=learned,smoke", ("codes",), (), 8192, "none"),
    ("stochastic", "configs/quantizers.py:sq,smoke", ("codes",), (), 4096, "none"),
    ("grouped", "configs/quantizers.py:grouped_g2,smoke", ("codes",), (2,), 64, "per_entry"),
    ("fsq", "configs/quantizers.py:fsq,smoke", ("codes",), (), 4375, "none"),
    ("lfq", "configs/quantizers.py:lfq,smoke", ("codes",), (), 4096, "none"),
    ("residual", "configs/default.py:quantizer=residual,smoke", ("codes",), (2,), 8192,
     "per_entry"),
    ("hierarchical", "configs/reproduction.py:hierarchical,smoke", ("top", "bottom"), (),
     4096, "none"),
    ("injected_topdown", "configs/hqvae/cpu_sqvae2.py:smoke", ("layer_1", "layer_2"), (),
     64, "none"),
    ("residual_topdown_shared", "configs/hqvae/cpu_rsqvae.py:ema,shared,smoke",
     ("layer_1", "layer_2"), (), 32, "none"),
    # 1D tokens [N, T] (T = 4 at smoke size), FSQ (8, 5, 5, 5), decoded by seeded DDIM.
    ("semanticist_fsq", "configs/semanticist/cpu.py:quantizer=fsq,smoke", ("tokens",), (),
     1000, "none"),
]


def val_crops() -> np.ndarray:
  """The builtin validation split at S x S: chelsea's grid crops (row-major)."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  photo = skimage.data.chelsea()
  return np.stack([photo[r * S:(r + 1) * S, c * S:(c + 1) * S]
                   for r in range(photo.shape[0] // S) for c in range(photo.shape[1] // S)])


def np_histogram(codes: np.ndarray, k: int, entries: int, offsets: str) -> np.ndarray:
  """Counts of every entry of codes [N, h, w, *code_shape], entry e at e*k if per_entry."""
  flat = codes.reshape(-1, entries)
  if offsets == "per_entry":
    flat = flat + k * np.arange(entries)
    return np.bincount(flat.ravel(), minlength=k * entries)
  return np.bincount(flat.ravel(), minlength=k)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """{case: (config, workdir, result at step 2, result resumed at step 3)}, trained lazily."""
  cache = {}

  def get(case, spec):
    if case not in cache:
      config = model_snapshot.load_config(spec)
      config.data.builtin_val_images = ("chelsea",)   # 126 crops: a quicker evaluation
      config.eval.batch_size = 64
      config_lib.validate(config)
      workdir = str(tmp_path_factory.mktemp(case))
      with open(os.path.join(workdir, "config.json"), "w") as f:  # as vqjax.main does
        f.write(config.to_json_best_effort(indent=2))
      first = train.train_and_evaluate(config, workdir)
      config.train.num_steps = 3
      resumed = train.train_and_evaluate(config, workdir)
      cache[case] = (config, workdir, first, resumed)
    return cache[case]

  return get


@pytest.mark.parametrize("case,spec,levels,code_shape,k,offsets", CASES,
                         ids=[c[0] for c in CASES])
def test_every_kind_trains_resumes_loads_and_decodes(trained, case, spec, levels,
                                                     code_shape, k, offsets):
  config, workdir, first, resumed = trained(case, spec)
  assert first["checkpoint_step"] == 2 and resumed["checkpoint_step"] == 3
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  assert steps == [2, 3]
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  assert TOP_KEYS <= set(metrics) and metrics["checkpoint_step"] == 3
  assert list(metrics["levels"]) == list(levels)
  entries = int(np.prod(code_shape))
  for level in levels:
    assert LEVEL_KEYS <= set(metrics["levels"][level])
    assert metrics["levels"][level]["num_codes"] == (k * entries if offsets == "per_entry" else k)

  model = vqjax.load(workdir, batch_size=8)
  assert model.step == 3
  x = val_crops()
  assert metrics["num_images"] == len(x)
  codes = model.encode(x)
  assert list(codes) == list(levels)
  for level, c in codes.items():
    f = model.level_downsampling[level]
    grid = (config.model.num_tokens,) if model.tokens_1d else (S // f, S // f)
    assert c.shape == (len(x), *grid, *code_shape) and c.dtype == np.int32
    assert c.min() >= 0 and c.max() < k
  recon = model.reconstruct(x)
  np.testing.assert_array_equal(model.decode(codes), recon)
  # Evaluation counted exactly the codes vqjax.load gives for the same crops.
  hist = np.load(os.path.join(workdir, "eval", "code_histograms.npz"))
  for level, c in codes.items():
    np.testing.assert_array_equal(hist[level], np_histogram(c, k, entries, offsets),
                                  err_msg=level)


@pytest.mark.parametrize("case,spec,levels,code_shape,k,offsets",
                         [c for c in CASES if c[0] in ("grouped", "residual", "injected_topdown")],
                         ids=["grouped", "residual", "injected_topdown"])
def test_codes_file_round_trip_through_the_encode_and_decode_modes(
    trained, tmp_path, case, spec, levels, code_shape, k, offsets):
  """--mode=encode writes what vqjax.load encodes; --mode=decode writes what it
  reconstructs (multi-entry codes and levels of two sizes)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from vqjax import export  # pylint: disable=import-outside-toplevel
  config, workdir, _, _ = trained(case, spec)
  config = config.copy_and_resolve_references()
  config.encode.output = str(tmp_path / "val.array_record")
  config.decode.input, config.decode.output = config.encode.output, str(tmp_path / "decoded")
  x = val_crops()
  model = vqjax.load(workdir, batch_size=8)
  codes, recon = model.encode(x), model.reconstruct(x)
  records = export.codes_dataset(export.encode_split(config, workdir))
  assert len(records) == len(x)
  for i in (0, len(x) - 1):
    for level in levels:
      np.testing.assert_array_equal(records[i][level], codes[level][i], err_msg=level)
  out = export.decode_file(config, workdir)
  for i in (0, len(x) - 1):
    name = [f for f in os.listdir(out) if f.startswith(f"{i:06d}_")]
    assert len(name) == 1, (i, sorted(os.listdir(out))[:3])
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(out, name[0]))), recon[i])
