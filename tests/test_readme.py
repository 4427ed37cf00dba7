"""The README's Python examples run as written, so the README cannot rot.

Each test takes the first ```python block under a README heading, executes it
unchanged and checks what it computed against an independent reference.
"""

import os
import re

import numpy as np

import model_snapshot
from vqjax import config_lib, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_block(heading: str) -> str:
  """The first ```python block of the README section `## heading`."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  assert f"\n## {heading}\n" in text, f"README.md has no section {heading!r}"
  section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
  found = re.search(r"```python\n(.*?)```", section, re.S)
  assert found, f"README.md section {heading!r} has no ```python block"
  return found.group(1)


def run_block(heading: str) -> dict:
  namespace = {"__name__": "readme_example"}
  exec(compile(readme_block(heading), f"README.md ({heading})", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def test_the_quantizer_in_your_own_flax_model():
  ns = run_block("Use a quantizer in your own Flax model")
  model, variables, x = ns["model"], ns["variables"], ns["x"]
  codes, x_dec, aux, loss = ns["codes"], ns["x_dec"], ns["aux"], ns["loss"]
  # The train-mode call initialised the codebook from the batch and updated it.
  codebook = variables["codebook"]["vq"]
  assert bool(codebook["initialized"])
  assert set(aux) >= {"indices", "losses", "metrics"} and set(aux["losses"]) == {"commitment"}
  assert np.isfinite(float(loss))
  # encode: the nearest code of every encoder output (NumPy), int32 [8, 8, 8] in [0, 512).
  assert codes.shape == (8, 8, 8) and codes.dtype == np.int32
  assert 0 <= int(codes.min()) and int(codes.max()) < 512
  z = np.asarray(model.apply(variables, x, method=lambda m, x: m.enc(x)), np.float64)
  embedding = np.asarray(codebook["embedding"], np.float64)
  distances = ((z[..., None, :] - embedding) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(codes), distances.argmin(-1))
  # decode(encode(x)) is the evaluation-mode output, bit for bit.
  x_eval, _ = model.apply(variables, x, train=False)
  assert x_dec.shape == x.shape
  np.testing.assert_array_equal(np.asarray(x_dec), np.asarray(x_eval))


def test_use_a_trained_model(tmp_path, monkeypatch):
  """The block as written, on a run of configs/default.py at smoke size in runs/default."""
  config = model_snapshot.load_config("configs/default.py:smoke")
  config.data.builtin_val_images = ("chelsea",)   # a quicker final evaluation
  config_lib.validate(config)
  workdir = tmp_path / "runs" / "default"
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))  # as vqjax.main
  train.train_and_evaluate(config, str(workdir))
  monkeypatch.chdir(tmp_path)
  ns = run_block("Use a trained model")
  codes, images = ns["codes"], ns["images"]
  assert list(codes) == ["codes"] and codes["codes"].shape == (1, 64, 64)
  assert codes["codes"].dtype == np.int32 and images.shape == (1, 256, 256, 3)
  assert ns["decoded"].shape == (1, 256, 256, 3) and ns["decoded"].dtype == np.uint8
  assert ns["model"].quantizers["codes"].codebook_size == 8192
