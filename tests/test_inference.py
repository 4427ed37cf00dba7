"""Using a trained model: vqjax.load, encode / decode / reconstruct, the codes file."""

import os
import subprocess
import sys

import grain
import numpy as np
import pytest

import vqjax
from conftest import tiny_config
from vqjax import config_lib, data, export, inference, train

S = 32


def _train(workdir, kind: str, quantizer: str | None = None, **model):
  config = tiny_config(kind, image_size=S)
  config.train.num_steps = 3
  if quantizer is not None:
    config.model.quantizer = config_lib.quantizer_config(quantizer)
  config.model.update(model)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:  # as vqjax.main does
    f.write(config.to_json_best_effort(indent=2))
  train.train_and_evaluate(config, str(workdir))
  return config


@pytest.fixture(scope="module", params=["single", "hierarchical"])
def run(request, tmp_path_factory):
  workdir = tmp_path_factory.mktemp(request.param)
  config = _train(workdir, request.param)
  return config, str(workdir)


def _val_crops(n: int | None = None) -> np.ndarray:
  """The builtin validation crops cut with NumPy: S x S grid, row-major, chelsea then coffee."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  crops = []
  for photo in (skimage.data.chelsea(), skimage.data.coffee()):
    for r in range(photo.shape[0] // S):
      for c in range(photo.shape[1] // S):
        crops.append(photo[r * S:(r + 1) * S, c * S:(c + 1) * S])
  return np.stack(crops[:n])


def test_decode_of_encode_is_reconstruct_bit_for_bit(run):
  config, workdir = run
  model = vqjax.load(workdir, batch_size=8)
  x = _val_crops(20)
  codes = model.encode(x)
  assert list(codes) == (["codes"] if config.model.kind == "single" else ["top", "bottom"])
  for name, c in codes.items():
    f = 4 if name in ("codes", "bottom") else 8
    assert c.shape == (20, S // f, S // f) and c.dtype == np.int32
    assert 0 <= c.min() and c.max() < config.model.num_codes
  recon = model.reconstruct(x)
  assert recon.dtype == np.uint8 and recon.shape == x.shape
  np.testing.assert_array_equal(model.decode(codes), recon)
  # Not a constant map: the codes and the images vary with the input.
  assert len(np.unique(next(iter(codes.values())))) > 1 and recon.std() > 1
  assert model.step == 3
  assert {k: v.shape for k, v in model.codebooks.items()} == {
      k: (config.model.num_codes, config.model.code_dim) for k in codes}


def test_single_level_codes_are_the_nearest_codebook_rows(tmp_path):
  """NumPy reference: argmin over the codebook of the pre-quantization features."""
  _train(tmp_path, "single")
  model = vqjax.load(str(tmp_path))
  x = _val_crops(6)
  _, state = model._model.apply(  # pylint: disable=protected-access
      model.variables, data.to_model_range(x), train=False,
      capture_intermediates=lambda mdl, _: mdl.name == "pre_quant", mutable=["intermediates"])
  z = np.asarray(state["intermediates"]["pre_quant"]["__call__"][0], np.float64)
  book = model.codebooks["codes"].astype(np.float64)
  dist = ((z[..., None, :] - book) ** 2).sum(-1)
  np.testing.assert_array_equal(model.encode(x)["codes"], dist.argmin(-1))


@pytest.mark.slow
def test_stochastic_quantizer_run_decodes_its_codes_to_reconstruct(tmp_path):
  """SQ-VAE quantizer (codebook in params): codes are the nearest code at eval."""
  _train(tmp_path, "hierarchical", quantizer="stochastic")
  model = vqjax.load(str(tmp_path))
  x = _val_crops(4)
  np.testing.assert_array_equal(model.decode(model.encode(x)), model.reconstruct(x))
  assert model.codebooks["bottom"].shape == (32, 8)


def test_odd_batch_sizes_and_image_sizes_trace_once_per_shape(run):
  _, workdir = run
  model = vqjax.load(workdir, batch_size=8)
  x = np.random.default_rng(0).integers(0, 256, (19, 24, 40, 3), np.uint8)
  whole = model.encode(x)                            # 3 batches, the last padded
  for n in (1, 5):
    part = model.encode(x[:n])
    for k in whole:
      np.testing.assert_array_equal(part[k], whole[k][:n])
  assert model.traces["encode"] == 1                 # one compile for 24x40
  model.encode(x[:3, :16, :16])
  assert model.traces["encode"] == 2                 # a new image size: one more
  # Sizes not divisible by the downsampling: reconstruct pads (edge) and crops back.
  odd = x[:3, :21, :37]
  m = model.downsampling
  padded = np.pad(odd, ((0, 0), (0, -21 % m), (0, -37 % m), (0, 0)), mode="edge")
  np.testing.assert_array_equal(model.reconstruct(odd), model.reconstruct(padded)[:, :21, :37])
  with pytest.raises(ValueError, match=f"not divisible by {m}"):
    model.encode(odd)
  with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
    model.encode(x.astype(np.float32))


def test_out_of_range_code_names_the_level_and_range(run):
  config, workdir = run
  model = vqjax.load(workdir)
  codes = model.encode(_val_crops(2))
  k = config.model.num_codes
  level = model.level_names[-1]
  for bad in (k, -1):
    broken = {n: c.copy() for n, c in codes.items()}
    broken[level][1, 0, 0] = bad
    message = rf"index {bad} out of range in level '{level}'.*0 \.\. {k - 1}"
    with pytest.raises(ValueError, match=message):
      model.decode(broken)
  with pytest.raises(ValueError, match="lack level"):
    model.decode({})


def test_workdir_without_checkpoint_or_config_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    vqjax.load(str(tmp_path))
  (tmp_path / "config.json").write_text(tiny_config().to_json_best_effort())
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
    vqjax.load(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no run directory"):
    vqjax.load(str(tmp_path / "missing"))
  unknown = tiny_config()
  unknown.model.kind = "flat"
  (tmp_path / "config.json").write_text(unknown.to_json_best_effort())
  with pytest.raises(ValueError, match="model.kind='flat'; use one of"):
    vqjax.load(str(tmp_path))


def test_encode_export_grain_decode_round_trip(run, tmp_path, monkeypatch):
  config, workdir = run
  config = config.copy_and_resolve_references()
  config.encode.output = str(tmp_path / "val.array_record")
  config.encode.batch_size = 64
  path = export.encode_split(config, workdir)
  assert path == config.encode.output and not os.path.exists(path + ".tmp")
  # Read back with grain's own ArrayRecord source.
  source = grain.sources.ArrayRecordDataSource([path])
  crops = _val_crops()
  assert len(source) == len(crops)                   # every validation crop once
  records = [export.read_record(source[i]) for i in range(len(source))]
  assert records[0]["source"] == "chelsea/r00_c00" and records[-1]["index"] == len(crops) - 1
  model = vqjax.load(workdir)
  codes = {n: np.stack([r[n] for r in records]) for n in model.level_names}
  np.testing.assert_array_equal(model.decode(codes), model.reconstruct(crops))
  # decode mode: the same images as PNGs.
  config.decode.input, config.decode.output = path, str(tmp_path / "png")
  export.decode_file(config, workdir)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  pngs = sorted(os.listdir(tmp_path / "png"))
  assert len(pngs) == len(crops) and pngs[0] == "000000_chelsea_r00_c00.png"
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / pngs[-1])),
                                model.reconstruct(crops[-1:])[0])
  # A killed export leaves neither PATH nor PATH.tmp behind.
  calls = []

  def dying_encode(self, images):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real_encode(self, images)

  real_encode = inference.Model.encode
  monkeypatch.setattr(inference.Model, "encode", dying_encode)
  config.encode.output = str(tmp_path / "killed.array_record")
  with pytest.raises(KeyboardInterrupt):
    export.encode_split(config, workdir)
  assert len(calls) == 2 and not os.path.exists(config.encode.output)
  assert not os.path.exists(config.encode.output + ".tmp")


def test_reconstruct_mode_writes_pngs_and_psnr_csv(run, tmp_path):
  config, workdir = run
  config = config.copy_and_resolve_references()
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  images = {"a.png": rng.integers(0, 256, (30, 45, 3), np.uint8),
            "sub/b.png": _val_crops(1)[0]}
  for name, image in images.items():
    (tmp_path / "in" / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(tmp_path / "in" / name)
  config.reconstruct.input, config.reconstruct.output = str(tmp_path / "in"), str(tmp_path / "out")
  export.reconstruct_images(config, workdir)
  rows = (tmp_path / "out" / "psnr.csv").read_text().splitlines()
  assert rows[0] == "file,height,width,psnr_db" and len(rows) == 3
  for row in rows[1:]:
    name, h, w, psnr = row.split(",")
    x = images[name]
    recon = np.asarray(Image.open(tmp_path / "out" / "recon" / name.replace("/", "_")))
    assert recon.shape == x.shape and (int(h), int(w)) == x.shape[:2]
    mse = np.mean((x / 255.0 - recon / 255.0) ** 2)
    assert float(psnr) == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
    side = np.asarray(Image.open(tmp_path / "out" / "side_by_side" / name.replace("/", "_")))
    np.testing.assert_array_equal(side[:, :x.shape[1]], x)
    np.testing.assert_array_equal(side[:, -x.shape[1]:], recon)


def test_import_vqjax_is_light():
  code = ("import sys, vqjax; assert 'jax' not in sys.modules, 'jax imported'; "
          "assert callable(vqjax.load); assert 'jax' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(__file__) + "/..")


_EIGHT_DEVICE_CODES = """
import json, sys, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
from vqjax import checkpointing, data, export, inference, parallel
from vqjax.models import create_model
from vqjax.state import create_optimizer, create_train_state
workdir, out = sys.argv[1:]
assert jax.device_count() == 8
config = inference.load_config(workdir)
model = create_model(config.model)
mesh = parallel.create_mesh()
abstract = jax.eval_shape(lambda: create_train_state(model, create_optimizer(config), 32, 0))
abstract = checkpointing.abstract_like(abstract, parallel.replicated(mesh))
state, _ = checkpointing.restore_state(
    checkpointing.create_manager(workdir, config, read_only=True), abstract)
crops = np.stack([c for _, c in export.split_records(config.data, "validation")][:32])
x = jax.device_put(data.to_model_range(crops), NamedSharding(mesh, P("data")))
codes = jax.jit(lambda v, x: model.apply(v, x, method="encode_codes"))(
    {"params": state.params, "codebook": state.codebook}, x)
np.savez(out, crops=crops, **{k: np.asarray(v) for k, v in codes.items()})
"""


@pytest.mark.slow
def test_load_of_an_eight_device_run_on_one_device(tmp_path):
  root = os.path.join(os.path.dirname(__file__), "..")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=root)
  workdir = str(tmp_path / "run")
  subprocess.run(
      [sys.executable, "-m", "vqjax.main", "--config=configs/default.py",
       f"--workdir={workdir}", "--config.data.image_size=32", "--config.model.channels=16",
       "--config.model.num_codes=64", "--config.train.num_steps=3",
       "--config.train.eval_every=0"], check=True, env=env, cwd=root,
      capture_output=True)
  subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_CODES, workdir,
                  str(tmp_path / "codes.npz")], check=True, env=env, cwd=root)
  saved = np.load(tmp_path / "codes.npz")
  model = vqjax.load(workdir)                          # this process: one device
  codes = model.encode(saved["crops"])
  np.testing.assert_array_equal(codes["codes"], saved["codes"])
  assert len(np.unique(saved["codes"])) > 1
