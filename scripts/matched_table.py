"""The tables of scripts/matched_experiment.sh (docs/PERCEPTUAL.md, docs/PRIOR.md).

  python scripts/matched_table.py RUNS_DIR perceptual   # tokenizers: per run, then the answer
  python scripts/matched_table.py RUNS_DIR prior        # priors: per run, then the answer
  python scripts/matched_table.py RUNS_DIR collect OUT  # copy the metrics (and config.json) to OUT
  python scripts/matched_table.py RUNS_DIR prior --splice=docs/PRIOR.md   # rewrite the doc's
      # tables in place (each found by its header row; the prose around them is kept)

Reads RUNS_DIR/{pixel,perceptual}/<arch>/<member>/seed<s>/eval/metrics.json and
RUNS_DIR/priors/<arch>/<member>/seed<s>/prior<p>/eval/metrics.json (with, where the
prior sampled with config.sample.fid, its samples' Frechet distance from
.../prior<p>/samples/fid.json); json and
statistics only, no vqjax. scripts/check_docs.py compares the docs' tables with
what this script writes from the committed docs/matched/runs (so it catches a doc
that differs from the files, not a slip of this script: tests/test_matched_table.py
checks the cells and verdicts against hand-computed numbers).

Budgets are Table 1's D = 8 pairs: single K_s codes vs hierarchical 2 x K_s/2.
"Beyond noise" means |mean difference| > the larger of the two seed stds (ddof 1),
the rule of docs/REPRODUCTION.md; with 2 seeds a std is a coarse spread, so a
verdict needs the difference beyond noise at every budget.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import sys

BUDGETS = {2048: ("D8_K2048", "D8_2x1024"), 8192: ("D8_K8192", "D8_2x4096")}
CONDITIONS = ("pixel", "perceptual")   # MSE only; MSE + LPIPS + PatchGAN
# metric: (reader, decimals, lower is better)
TOKENIZER_METRICS = {
    "PSNR dB": (lambda m: m["psnr"]["mean"], 2, False),
    "SSIM": (lambda m: m["ssim"]["mean"], 4, False),
    "LPIPS": (lambda m: m["lpips"]["mean"], 4, True),
    "FID stand-in": (lambda m: m["fid_lpips_alex"]["value"], 1, True),
}
FID_ROW = "samples' FID stand-in"
SAMPLES_FID = os.path.join("samples", "fid.json")   # a prior's run: its samples' FID
PRIOR_METRICS = {
    "bits per image": (lambda m: m["nll_bits_per_image"], 1, True),
    "bits below unigram per image": (
        lambda m: m["unigram_validation_bits_per_image"] - m["nll_bits_per_image"], 1, False),
    FID_ROW: (lambda m: m["samples_fid"]["value"], 1, True),
}


def read(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def tokenizer_runs(runs: str, condition: str, member: str) -> dict[int, dict]:
  """{seed: metrics} of one member's finished runs."""
  arch = "single" if "_K" in member else "hierarchical"
  out = {}
  for d in sorted(glob.glob(os.path.join(runs, condition, arch, member, "seed*"))):
    m = read(os.path.join(d, "eval", "metrics.json"))
    if m is not None:
      out[int(os.path.basename(d)[4:])] = m
  return out


def prior_runs(runs: str, member: str) -> dict[tuple[int, int], dict]:
  """{(tokenizer seed, prior seed): metrics} of one member's finished priors."""
  arch = "single" if "_K" in member else "hierarchical"
  out = {}
  for d in sorted(glob.glob(os.path.join(runs, "priors", arch, member, "seed*", "prior*"))):
    m = read(os.path.join(d, "eval", "metrics.json"))
    if m is not None:
      fid = read(os.path.join(d, SAMPLES_FID))
      if fid is not None:
        m["samples_fid"] = fid
      seed = int(os.path.basename(os.path.dirname(d))[4:])
      out[(seed, int(os.path.basename(d)[5:]))] = m
  return out


def value(read_metric, m: dict) -> float | None:
  """The metric of one run, None where its metrics.json lacks it (not evaluated so)."""
  try:
    return read_metric(m)
  except KeyError:
    return None


def values(read_metric, runs: dict) -> list[float]:
  return [v for v in (value(read_metric, m) for m in runs.values()) if v is not None]


def mean_std(values: list[float]) -> tuple[float, float | None]:
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(value: float | None, decimals: int) -> str:
  if value is None:
    return ""
  return f"{value:,.{decimals}f}".replace("-", "−")


def fmt_stat(values: list[float], decimals: int) -> str:
  mean, std = mean_std(values)
  text = fmt(mean, decimals)
  return text if std is None else f"{text} ± {fmt(std, decimals)}"


def compare(single: list[float], hier: list[float], decimals: int,
            lower_better: bool) -> tuple[str, str, str]:
  """(difference hier - single, the larger seed std, which is ahead)."""
  if not single or not hier:
    return "", "", "unfinished"
  (ms, ss), (mh, sh) = mean_std(single), mean_std(hier)
  diff = mh - ms
  stds = [s for s in (ss, sh) if s is not None]
  if not stds:
    return fmt(diff, decimals), "", "one seed"
  hier_ahead = diff < 0 if lower_better else diff > 0
  ahead = "hierarchical" if hier_ahead else "single"
  spread = max(stds)
  beyond = abs(diff) > spread
  return fmt(diff, decimals), fmt(spread, decimals), (ahead + (" (beyond noise)" if beyond
                                                               else " (within noise)"))


def verdict(aheads: list[str]) -> str:
  """'holds' / 'does not hold' / 'inconclusive' for "hierarchical is better"."""
  if any(a in ("unfinished", "one seed") for a in aheads):
    return "inconclusive (runs missing)"
  if all(a == "hierarchical (beyond noise)" for a in aheads):
    return "holds"
  if all(a == "single (beyond noise)" for a in aheads):
    return "does not hold (single-level ahead beyond noise)"
  if all(a.startswith("single") for a in aheads):
    return "does not hold (single-level ahead, not beyond noise everywhere)"
  return "inconclusive"


def perceptual_tables(runs: str) -> list[str]:
  lines = ["| condition | budget (K_s) | model | seed | step | PSNR dB | SSIM | LPIPS | FID stand-in |",
           "|---|---|---|---|---|---|---|---|---|"]
  for condition in CONDITIONS:
    for budget, members in BUDGETS.items():
      for member in members:
        for seed, m in tokenizer_runs(runs, condition, member).items():
          cells = [fmt(value(read_metric, m), d) for read_metric, d, _ in TOKENIZER_METRICS.values()]
          lines.append(f"| {condition} | {budget} | `{member}` | {seed} | {m['checkpoint_step']} | "
                       + " | ".join(cells) + " |")
  lines += ["", "| condition | metric | budget (K_s) | single | hierarchical | hier − single | "
            "larger seed std | ahead | hierarchy helps? |", "|---|---|---|---|---|---|---|---|---|"]
  for condition in CONDITIONS:
    for name, (read_metric, d, lower) in TOKENIZER_METRICS.items():
      rows, aheads = [], []
      for budget, (single, hier) in BUDGETS.items():
        s = values(read_metric, tokenizer_runs(runs, condition, single))
        h = values(read_metric, tokenizer_runs(runs, condition, hier))
        diff, spread, ahead = compare(s, h, d, lower)
        aheads.append(ahead)
        rows.append([condition, name, str(budget), fmt_stat(s, d) if s else "",
                     fmt_stat(h, d) if h else "", diff, spread, ahead])
      answer = verdict(aheads)
      for row in rows:
        lines.append("| " + " | ".join(row + [answer]) + " |")
  return lines


def prior_tables(runs: str) -> list[str]:
  lines = ["| codes | budget (K_s) | tokenizer seed | prior seed | tokens per image | "
           "uniform bits per image | unigram bits per image (validation) | prior bits per image | "
           "prior bits per code | samples' FID stand-in |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for budget, members in BUDGETS.items():
    for member in members:
      for (seed, prior_seed), m in prior_runs(runs, member).items():
        levels = " + ".join(f"{v['num_tokens']} × K={v['codebook_size']}"
                            for v in m["levels"].values())
        lines.append(f"| `{member}` | {budget} | {seed} | {prior_seed} | {levels} | "
                     f"{fmt(m['uniform_bits_per_image'], 0)} | "
                     f"{fmt(m['unigram_validation_bits_per_image'], 1)} | "
                     f"{fmt(m['nll_bits_per_image'], 1)} | {fmt(m['bits_per_code'], 3)} | "
                     f"{fmt(value(PRIOR_METRICS[FID_ROW][0], m), 1)} |")
  lines += ["", "| metric | budget (K_s) | single | hierarchical | hier − single | "
            "larger seed std | ahead | hierarchical codes easier? |",
            "|---|---|---|---|---|---|---|---|"]
  for name, (read_metric, d, lower) in PRIOR_METRICS.items():
    rows, aheads = [], []
    for budget, (single, hier) in BUDGETS.items():
      s = values(read_metric, prior_runs(runs, single))
      h = values(read_metric, prior_runs(runs, hier))
      diff, spread, ahead = compare(s, h, d, lower)
      aheads.append(ahead)
      rows.append([name, str(budget), fmt_stat(s, d) if s else "", fmt_stat(h, d) if h else "",
                   diff, spread, ahead])
    answer = verdict(aheads)
    for row in rows:
      lines.append("| " + " | ".join(row + [answer]) + " |")
  return lines


def collect(runs: str, out: str) -> int:
  """Copies every finished run's eval/metrics.json, config.json and a prior's
  samples/fid.json (no checkpoints, no samples)."""
  n = 0
  for metrics in glob.glob(os.path.join(runs, "*", "*", "*", "seed*", "**", "metrics.json"),
                           recursive=True):
    run = os.path.dirname(os.path.dirname(metrics))
    if os.path.basename(os.path.dirname(metrics)) != "eval":
      continue
    rel = os.path.relpath(run, runs)
    os.makedirs(os.path.join(out, rel, "eval"), exist_ok=True)
    shutil.copyfile(metrics, os.path.join(out, rel, "eval", "metrics.json"))
    for name in ("config.json", SAMPLES_FID):
      if os.path.exists(os.path.join(run, name)):
        os.makedirs(os.path.dirname(os.path.join(out, rel, name)), exist_ok=True)
        shutil.copyfile(os.path.join(run, name), os.path.join(out, rel, name))
    n += 1
  return n


def splice(doc: str, lines: list[str]) -> str:
  """doc with each table of `lines` (tables separated by blank lines) in place of
  the doc's table that has the same header row; ValueError naming a missing one."""
  tables = "\n".join(lines).split("\n\n")
  out = doc.splitlines()
  for table in tables:
    rows = table.splitlines()
    try:
      start = out.index(rows[0])
    except ValueError:
      raise ValueError(f"the doc has no table with the header {rows[0]!r}: paste the "
                       "table once by hand (the script's output), then splice") from None
    end = start
    while end < len(out) and out[end].startswith("|"):
      end += 1
    out[start:end] = rows
  return "\n".join(out) + ("\n" if doc.endswith("\n") else "")


def main(argv: list[str]) -> int:
  if len(argv) < 3 or argv[2] not in ("perceptual", "prior", "collect"):
    print(__doc__.strip(), file=sys.stderr)
    return 2
  if argv[2] == "collect":
    print(f"copied {collect(argv[1], argv[3])} runs' metrics to {argv[3]}")
    return 0
  lines = perceptual_tables(argv[1]) if argv[2] == "perceptual" else prior_tables(argv[1])
  target = next((a.removeprefix("--splice=") for a in argv[3:] if a.startswith("--splice=")), "")
  if not target:
    print("\n".join(lines))
    return 0
  with open(target) as f:
    doc = f.read()
  try:
    new = splice(doc, lines)
  except ValueError as e:
    print(f"error: {target}: {e}", file=sys.stderr)
    return 1
  with open(target, "w") as f:
    f.write(new)
  print(f"{target}: {'tables rewritten' if new != doc else 'tables already current'}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
