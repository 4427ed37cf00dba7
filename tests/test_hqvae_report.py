"""scripts/hqvae_report.py's table.md from metrics copies alone: one column per seed,
'—' for a seed a member lacks, mean ± std (ddof 1) by hand."""

import json

from model_snapshot import load_script


def test_per_seed_table_has_one_column_per_seed(tmp_path):
  report = load_script("hqvae_report")
  (tmp_path / "metrics").mkdir()
  levels = {"layer_1": {"perplexity": 4.0}, "layer_2": {"perplexity": 9.0}}
  for name, seeds in (("vqvae2_K16", {0: 24.0, 1: 25.0, 2: 26.5}), ("rsqvae", {0: 17.0, 2: 18.0})):
    for seed, p in seeds.items():
      with open(tmp_path / "metrics" / f"{name}_seed{seed}.json", "w") as f:
        json.dump({"psnr": {"mean": p}, "mse": {"mean": 0.0001}, "ssim": {"mean": 0.5},
                   "levels": levels}, f)
  (tmp_path / "metrics" / "training_rsqvae_seed0.json").write_text("{}")  # not a seed file
  text = report.write_table(str(tmp_path))
  assert text == (tmp_path / "table.md").read_text()
  lines = text.splitlines()
  per_seed = lines[lines.index("| member | seed 0 | seed 1 | seed 2 | mean ± std |"):]
  assert per_seed[1] == "|---|---|---|---|---|"
  # mean 25.17, std sqrt(((24-25.1667)^2 + (25-25.1667)^2 + (26.5-25.1667)^2) / 2) = 1.26
  assert per_seed[2] == "| vqvae2_K16 | 24.00 | 25.00 | 26.50 | 25.17 ± 1.26 |"
  assert per_seed[3] == "| rsqvae | 17.00 | — | 18.00 | 17.50 ± 0.71 |"
  # RMSE x 10^2 = 100 sqrt(0.0001) = 1.00; every row has as many cells as its header.
  assert "| vqvae2_K16 | 3 | 25.17 ± 1.26 | 1.00 ± 0.00 | 0.500 ± 0.000 |" in text
  for line in lines:
    if line.startswith("| member"):
      width = line.count("|")
    elif line.startswith("|"):
      assert line.count("|") == width, line
