"""scripts/matched_table.py on hand-made metrics: cells, spreads and verdicts by hand."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import matched_table  # noqa: E402  pylint: disable=wrong-import-position


def write(path, metrics):
  os.makedirs(os.path.join(path, "eval"), exist_ok=True)
  with open(os.path.join(path, "eval", "metrics.json"), "w") as f:
    json.dump(metrics, f)


def tokenizer(psnr, lpips):
  return {"checkpoint_step": 300, "psnr": {"mean": psnr}, "ssim": {"mean": 0.5},
          "lpips": {"mean": lpips}, "fid_lpips_alex": {"value": 100.0}}


def prior(bits, unigram):
  return {"nll_bits_per_image": bits, "unigram_validation_bits_per_image": unigram,
          "uniform_bits_per_image": 3000, "bits_per_code": bits / 256,
          "levels": {"codes": {"num_tokens": 256, "codebook_size": 2048}}}


@pytest.fixture
def runs(tmp_path):
  psnr = {"D8_K2048": (28.0, 28.2), "D8_2x1024": (27.0, 27.4),        # single ahead by 0.9
          "D8_K8192": (29.0, 29.2), "D8_2x4096": (29.1, 29.3)}        # hier ahead by 0.1
  for member, (a, b) in psnr.items():
    arch = "single" if "_K" in member else "hierarchical"
    for seed, p in enumerate((a, b)):
      write(tmp_path / "pixel" / arch / member / f"seed{seed}", tokenizer(p, 0.3 - p / 100))
      for prior_seed in (0, 1):
        run = tmp_path / "priors" / arch / member / f"seed{seed}" / f"prior{prior_seed}"
        write(run, prior(2000 + 10 * p + prior_seed, 2500.0))
        if member in ("D8_K2048", "D8_2x1024"):   # samples' FID at K_s = 2048 only
          os.makedirs(run / "samples")
          with open(run / "samples" / "fid.json", "w") as f:
            json.dump({"value": 300.0 - 5 * p + prior_seed, "network": "lpips_alex"}, f)
  return str(tmp_path)


def summary(lines, first, metric, budget):
  for line in lines:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if cells[:3] == [first, metric, budget] or cells[:2] == [metric, budget] and first is None:
      return cells
  raise AssertionError(f"no row {first} {metric} {budget}")


def test_perceptual_cells_by_hand(runs):
  lines = matched_table.perceptual_tables(runs)
  assert "| pixel | 2048 | `D8_K2048` | 0 | 300 | 28.00 | 0.5000 | 0.0200 | 100.0 |" in lines
  row = summary(lines, "pixel", "PSNR dB", "2048")
  # means 28.10 and 27.20; stds 0.1414 and 0.2828 (ddof 1); difference -0.90
  assert row[3:8] == ["28.10 ± 0.14", "27.20 ± 0.28", "−0.90", "0.28", "single (beyond noise)"]
  row = summary(lines, "pixel", "PSNR dB", "8192")
  assert row[5:8] == ["0.10", "0.14", "hierarchical (within noise)"]
  assert row[8] == "inconclusive"
  # LPIPS = 0.3 - PSNR/100: lower is better, so the same sides are ahead
  assert summary(lines, "pixel", "LPIPS", "2048")[7] == "single (beyond noise)"
  assert summary(lines, "perceptual", "LPIPS", "2048")[7] == "unfinished"


def test_prior_cells_by_hand(runs):
  lines = matched_table.prior_tables(runs)
  # single K2048: 2000 + 10 * {28.0, 28.2} + {0, 1}: 2280, 2281, 2282, 2283
  row = summary(lines, None, "bits per image", "2048")
  assert row[2] == "2,281.5 ± 1.3"
  # hierarchical: 2270, 2271, 2274, 2275: mean 2272.5, std 2.38; hier ahead (fewer bits)
  assert row[3:7] == ["2,272.5 ± 2.4", "−9.0", "2.4", "hierarchical (beyond noise)"]
  # samples' FID 300 - 5 PSNR + prior seed: single K2048 160, 161, 159, 160 (mean 160.0,
  # std 0.816); hierarchical 165, 166, 163, 164 (164.5, 1.29): single ahead (lower)
  row = summary(lines, None, "samples' FID stand-in", "2048")
  assert row[2:7] == ["160.0 ± 0.8", "164.5 ± 1.3", "4.5", "1.3", "single (beyond noise)"]
  row = summary(lines, None, "samples' FID stand-in", "8192")
  assert row[2:7] == ["", "", "", "", "unfinished"] and row[7] == "inconclusive (runs missing)"
  assert ("| `D8_K2048` | 2048 | 1 | 1 | 256 × K=2048 | 3,000 | 2,500.0 | 2,283.0 | 8.918 "
          "| 160.0 |") in lines
  assert ("| `D8_K8192` | 8192 | 0 | 0 | 256 × K=2048 | 3,000 | 2,500.0 | 2,290.0 | 8.945 "
          "|  |") in lines


def test_collect_copies_metrics_config_and_samples_fid_only(runs, tmp_path):
  prior_run = os.path.join(runs, "priors", "single", "D8_K2048", "seed0", "prior1")
  for extra in ("config.json", os.path.join("samples", "samples.png")):
    with open(os.path.join(prior_run, extra), "w") as f:
      f.write("{}")
  out = str(tmp_path / "collected")
  assert matched_table.collect(runs, out) == 4 * 2 + 4 * 2 * 2   # tokenizers + priors
  copied = os.path.join(out, "priors", "single", "D8_K2048", "seed0", "prior1")
  assert sorted(os.listdir(copied)) == ["config.json", "eval", "samples"]
  assert os.listdir(os.path.join(copied, "samples")) == ["fid.json"]
  assert matched_table.prior_tables(out) == matched_table.prior_tables(runs)


@pytest.mark.parametrize("aheads, want", [
    (["hierarchical (beyond noise)"] * 2, "holds"),
    (["single (beyond noise)"] * 2, "does not hold (single-level ahead beyond noise)"),
    (["single (beyond noise)", "single (within noise)"],
     "does not hold (single-level ahead, not beyond noise everywhere)"),
    (["hierarchical (beyond noise)", "single (within noise)"], "inconclusive"),
    (["hierarchical (beyond noise)", "unfinished"], "inconclusive (runs missing)")])
def test_verdict(aheads, want):
  assert matched_table.verdict(aheads) == want


def test_splice_replaces_each_table_by_its_header_and_keeps_the_prose(tmp_path):
  doc = ("# Title\n\nprose before\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nprose between\n\n"
         "| c | d |\n|---|---|\n| old | old |\nafter, no blank line\n")
  new = ["| a | b |", "|---|---|", "| 9 | 9 |", "", "| c | d |", "|---|---|", "| x | y |", "| z | w |"]
  assert matched_table.splice(doc, new) == (
      "# Title\n\nprose before\n\n| a | b |\n|---|---|\n| 9 | 9 |\n\nprose between\n\n"
      "| c | d |\n|---|---|\n| x | y |\n| z | w |\nafter, no blank line\n")
  with pytest.raises(ValueError, match=r"no table with the header '\| e \|'"):
    matched_table.splice(doc, ["| e |", "|---|"])
  # Through main: the doc rewritten in place from RUNS_DIR; a doc without the tables untouched.
  path = tmp_path / "doc.md"
  path.write_text("no tables\n")
  assert matched_table.main(["matched_table.py", str(tmp_path), "prior", f"--splice={path}"]) == 1
  assert path.read_text() == "no tables\n"
