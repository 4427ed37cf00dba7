"""run_results.table1_pairs and scripts/table1_figure.py on fabricated run dirs: the
pairs by budget and seed, finished runs only, and the headline figure drawn."""

import importlib.util
import json
import os

from vqjax.experiments import run_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(path, psnr, steps=300, done=True):
  os.makedirs(path / "eval", exist_ok=True)
  (path / "config.json").write_text(json.dumps({"train": {"num_steps": steps}}))
  if psnr is not None:
    (path / "eval" / "metrics.json").write_text(json.dumps(
        {"checkpoint_step": steps if done else steps // 2, "psnr": {"mean": psnr}}))


def test_pairs_by_budget_and_seed_and_the_figure(tmp_path):
  single, hier = tmp_path / "table1_single", tmp_path / "table1_hierarchical"
  write_run(single / "D8_K2048" / "seed0", 28.0)
  write_run(hier / "D8_2x1024" / "seed0", 27.0)                # pairs with K_s = 2048
  write_run(single / "D8_K2048" / "seed1", 27.5)
  write_run(hier / "D8_2x1024" / "seed1", 27.25, done=False)   # unfinished: left out
  write_run(single / "D8_K8192" / "seed0", 28.5)
  write_run(hier / "D8_2x4096" / "seed0", None)                # not evaluated: left out
  write_run(single / "D16_K8192" / "seed0", 28.25)             # not a D = 8 row
  write_run(tmp_path / "table1_1200steps_single" / "D8_K2048" / "seed0", 30.0, steps=1200)
  pairs = run_results.table1_pairs(str(tmp_path), "table1")
  psnr = {key: {side: m["psnr"]["mean"] for side, m in sides.items()}
          for key, sides in pairs.items()}
  assert psnr == {(2048, 0): {"single": 28.0, "hierarchical": 27.0},
                  (2048, 1): {"single": 27.5}, (8192, 0): {"single": 28.5}}
  dirs = run_results.table1_pair_dirs(str(tmp_path), "table1")
  assert dirs[(8192, 0)]["hierarchical"].endswith(os.path.join("D8_2x4096", "seed0"))
  assert run_results.table1_pairs(str(tmp_path), "table1_4800steps") == {}

  spec = importlib.util.spec_from_file_location(
      "table1_figure", os.path.join(REPO, "scripts", "table1_figure.py"))
  figure = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(figure)
  assert set(figure.psnr_by_variant(str(tmp_path))) == {"table1", "table1_1200steps"}
  out = tmp_path / "figure.png"
  figure.draw(str(tmp_path), str(out))
  assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 20_000
