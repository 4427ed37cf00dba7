"""scripts/check_docs.py's rules for docs/REPRODUCTION.md and docs/reproduction/*/REPORT.md:
their numbers recomputed from docs/reproduction/runs (and the corpus file list)."""

from __future__ import annotations

import csv
import os
import re
import statistics

from check_docs import NUM, mean_std, nppl, seed_runs, to_float

RUNS = "docs/reproduction/runs"
STAGES = {"none": "none", "data init": "init", "reset": "reset", "D 64": "lowdim"}
# The paper's Table 1, D = 8 rows: K_s -> (single-level, hierarchical) PSNR dB.
PAPER_TABLE1 = {1024: (34.1, 34.5), 2048: (34.5, 34.9), 4096: (35.0, 35.4), 8192: (35.3, 35.8)}

psnr = lambda m: m["psnr"]["mean"]  # noqa: E731
mse = lambda m: m["mse"]["mean"]  # noqa: E731


def level(name):
  return lambda m: m["levels"][name]["normalized_perplexity"]


def values(runs, key):
  return [key(m) for _, _, m in runs]


def member(c, group: str, name: str):
  return seed_runs(os.path.join(c.root, RUNS, group, name))


def pair(c, group: str, k_s: int):
  return (member(c, f"{group}_single", f"D8_K{k_s}"),
          member(c, f"{group}_hierarchical", f"D8_2x{k_s // 2}"))


def seed_pairs(c, where, text, single, hier):
  """'+a, +b': single - hier PSNR of seed 0, seed 1, ..."""
  s, h = {seed: psnr(m) for seed, _, m in single}, {seed: psnr(m) for seed, _, m in hier}
  printed = [p.strip() for p in text.split(",")]
  seeds = sorted(set(s) & set(h))
  if len(printed) != len(seeds):
    c.fail(where, f"{len(printed)} seed pairs printed, the files have {len(seeds)}")
  for p, seed in zip(printed, seeds):
    c.num(f"{where} seed {seed}", p, s[seed] - h[seed])


def ppl_cell(c, where, text, runs):
  """'single / top, bottom' normalized perplexities."""
  single, hier = text.split(" / ")
  c.stat(where, single, values(runs[0], level("codes")), std=False)
  for part, name in zip(hier.split(", "), ("top", "bottom")):
    c.stat(f"{where} {name}", part, values(runs[1], level(name)), std=False)


# --- docs/REPRODUCTION.md ---------------------------------------------------------


def repro_figure1(c, t):
  for line, cells in t.rows:
    stage = next(v for k, v in STAGES.items() if k in cells[0])
    hier, single = member(c, "figure1", f"hier_{stage}"), member(c, "figure1", f"single_{stage}")
    for i, (runs, key) in enumerate(((hier, psnr), (single, psnr), (hier, mse), (single, mse),
                                     (hier, nppl), (single, nppl)), start=1):
      c.stat(f"{t.path}:{line} col {i + 1}", cells[i], values(runs, key))


def repro_table1(c, t):
  for line, cells in t.rows:
    where, k = f"{t.path}:{line}", int(cells[0])
    if cells[1] != f"2 × {k // 2}":
      c.fail(where, f"2 × K_h is {cells[1]!r}, K_s {k} needs 2 × {k // 2}")
    single, hier = pair(c, "table1", k)
    c.stat(where + " single", cells[2], values(single, psnr))
    c.stat(where + " hier", cells[3], values(hier, psnr))
    c.diff(where + " single − hier", cells[4], values(hier, psnr), values(single, psnr))
    seed_pairs(c, where + " pairs", cells[5], single, hier)
    paper = [to_float(x) for x in cells[6].split(" / ")]
    if tuple(paper) != PAPER_TABLE1[k]:
      c.fail(where, f"paper {cells[6]!r}, its Table 1 says {PAPER_TABLE1[k]}")
    c.num(where + " paper gap", cells[7], PAPER_TABLE1[k][0] - PAPER_TABLE1[k][1])


def _figure2_cell(c, d, k):
  return member(c, "figure2", f"D{d}_K{k}")


def repro_figure2(c, t):
  ks = [int(h) for h in t.header[1:5]]
  with_means = t.header[-1] == "mean over K"
  key = psnr if with_means else nppl
  means = {}
  for line, cells in t.rows:
    where = f"{t.path}:{line}"
    if cells[0].startswith("mean over D"):  # the paper's grid, D 8..128
      for j, k in enumerate(ks):
        c.num(f"{where} K {k}", cells[j + 1],
              statistics.mean(means[(d, k)] for d in (8, 16, 32, 64, 128)))
      continue
    d = int(cells[0])
    for j, k in enumerate(ks):
      v = values(_figure2_cell(c, d, k), key)
      c.stat(f"{where} K {k}", cells[j + 1], v, std=None if with_means else False)
      means[(d, k)] = statistics.mean(v)
    if with_means:
      c.num(f"{where} mean over K", cells[5], statistics.mean(means[(d, k)] for k in ks))


def repro_longer(c, t):
  for line, cells in t.rows:
    where = f"{t.path}:{line}"
    k = int(re.match(r"K_s (\d+)", cells[0]).group(1))
    group = {"300": "table1", "1,200": "table1_1200steps"}[cells[1]]
    single, hier = pair(c, group, k)
    c.stat(where + " single", cells[2], values(single, psnr))
    c.stat(where + " hier", cells[3], values(hier, psnr))
    c.diff(where + " single − hier", cells[4], values(hier, psnr), values(single, psnr))
    seed_pairs(c, where + " pairs", cells[5], single, hier)
    ppl_cell(c, where + " perplexity", cells[6], (single, hier))


def train_crops(c) -> tuple[dict, dict]:
  """({split: photos}, {split: non-overlapping 64x64 crops}) of the corpus's file list,
  each photo resized to shorter side 256 (rounded), as scripts/photo_corpus.py does."""
  photos, crops = {}, {}
  with open(os.path.join(c.root, "scripts", "photo_corpus_files.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
      w, h = map(int, row["size"].split("x"))
      scale = 256 / min(w, h)
      photos[row["split"]] = photos.get(row["split"], 0) + 1
      crops[row["split"]] = (crops.get(row["split"], 0)
                             + (round(w * scale) // 64) * (round(h * scale) // 64))
  return photos, crops


def repro_regime(c, t):
  configs = {2: "table1_single/D8_K1024", 3: "table1_1200steps_single/D8_K2048"}
  epoch = train_crops(c)[1]["train"]
  for line, cells in t.rows:
    where = f"{t.path}:{line}"
    if cells[0] == "images seen":
      for col, path in configs.items():
        config = member(c, *path.split("/"))[0][1]
        m = re.search(r"([\d,]+) crops, ([\d.]+) epochs", cells[col])
        seen = config["train"]["num_steps"] * config["data"]["batch_size"]
        c.num(f"{where} col {col + 1}", m.group(1), seen)
        c.num(f"{where} col {col + 1} epochs", m.group(2), seen / epoch)
    elif cells[0] == "learning rate":
      for col, path in configs.items():
        train = member(c, *path.split("/"))[0][1]["train"]
        m = re.search(r"(\d+) decays, the last step at ([\d.]+)x", cells[col])
        decays = (train["num_steps"] - 1) // train["steps_per_epoch"]
        c.num(f"{where} col {col + 1}", m.group(1), decays)
        c.num(f"{where} col {col + 1} rate", m.group(2), train["lr_decay_rate"] ** decays)
      m = re.search(r"0\.99\^299 = ([\d.]+)x", cells[1])
      c.num(f"{where} paper", m.group(1), 0.99 ** 299)


# --- docs/reproduction/*/REPORT.md (vqjax.experiments.report) -----------------------------------


def report_groups(t) -> list[str]:
  dirs = re.search(r"^Runs under (.*): \d+ members", t.text, re.M).group(1).split(", ")
  return [os.path.basename(d.rstrip("/")) for d in dirs]


def report_member(c, t, label: str):
  groups = report_groups(t)
  return member(c, groups[0], label) if len(groups) == 1 else member(c, *label.split("/", 1))


def report_stat(c, where, text, runs, key):
  """'m ± s (n=N)' | 'm (n=1)' | '—' as vqjax.experiments.report.fmt prints it."""
  if not runs:
    if not (text in ("—", "missing", "not in the sweep") or text.startswith("unfinished")):
      c.fail(where, f"prints {text!r}, the files hold no finished run")
    return None
  rest = c.stat(where, text, values(runs, key))
  if not re.match(r"\s*$", rest) or "(n=" not in text:
    c.fail(where, f"{text!r} is not 'mean ± std (n=N)'")


def report_levels(c, where, text, runs):
  if not runs:
    return c.num(where, text, None)
  names = list(runs[0][2]["levels"])
  parts = text.split(", ")
  if [p.split(" ", 1)[0] for p in parts] != names:
    c.fail(where, f"levels {text!r}, the files have {names}")
  for part, name in zip(parts, names):
    report_stat(c, f"{where} {name}", part.split(" ", 1)[1], runs, level(name))


def report_compare(better_names, higher_is_better=True):
  def verdict(d, sa, sb):
    if sa is None or sb is None:
      return "—"
    if abs(d) <= max(sa, sb):
      return "within noise"
    return f"{better_names[1] if (d > 0) == higher_is_better else better_names[0]} better"
  return verdict


def report_runs(c, t):
  for line, cells in t.rows:
    where, runs = f"{t.path}:{line} {cells[0]}", report_member(c, t, cells[0])
    if runs:
      model = runs[0][1]["model"]
      for i, field in ((1, "kind"), (2, "num_codes"), (3, "code_dim")):
        if cells[i] != str(model[field]):
          c.fail(where, f"{field} {cells[i]!r}, config.json has {model[field]}")
      steps = ", ".join(str(s) for s in sorted({m["checkpoint_step"] for _, _, m in runs}))
      if cells[4] != steps:
        c.fail(where, f"step {cells[4]!r}, the metrics have {steps}")
      if cells[9].startswith("finished") and cells[9] != (
          "finished" if len(runs) == 1 else f"finished ({len(runs)} seeds)"):
        c.fail(where, f"status {cells[9]!r} for {len(runs)} finished seeds")
    report_stat(c, where + " PSNR", cells[5], runs, psnr)
    report_stat(c, where + " MSE", cells[6], runs, mse)
    report_levels(c, where + " perplexity", cells[7], runs)


def report_figure1(c, t):
  prev = {}
  for line, cells in t.rows:
    arch = "hier" if cells[0] == "hierarchical" else "single"
    where, stage = f"{t.path}:{line}", cells[1]
    runs = member(c, report_groups(t)[0], f"{arch}_{stage}")
    report_stat(c, where + " MSE", cells[2], runs, mse)
    report_stat(c, where + " perplexity", cells[4], runs, nppl)
    if arch in prev and runs:
      before, name = prev[arch]
      c.diff(where + " vs previous MSE", cells[3], values(before, mse), values(runs, mse),
             verdicts=report_compare((name, stage), higher_is_better=False))
      c.diff(where + " vs previous perplexity", cells[5], values(before, nppl),
             values(runs, nppl), verdicts=report_compare((name, stage)))
    report_levels(c, where + " per level", cells[6], runs)
    prev[arch] = (runs, stage)


def report_table1(c, t):
  for line, cells in t.rows:
    where = f"{t.path}:{line}"
    labels = cells[10].split(" / ")
    if len(labels) == 1:   # a budget with one side's runs only: the other is 'missing'
      col, other = (6, 3) if "hierarchical" in labels[0].split("/")[0] else (3, 6)
      if not cells[other].startswith("missing") or cells[9] != "—":
        c.fail(where, f"one side's runs ({labels[0]}): the other side must read 'missing' "
                      f"and the difference '—'; got {cells[other]!r}, {cells[9]!r}")
      sides = [(report_member(c, t, labels[0]), col)]
    else:
      single, hier = (report_member(c, t, label) for label in labels)
      sides = [(single, 3), (hier, 6)]
    for runs, col in sides:
      for key, metric, i in ((psnr, "psnr", col), (mse, "mse", col + 1)):
        m = re.fullmatch(rf"({NUM}) ± ({NUM}) \[(?:seeds ± ({NUM}), )?n=(\d+)\]", cells[i])
        c.num(f"{where} col {i + 1}", m.group(1), statistics.mean(values(runs, key)))
        c.num(f"{where} col {i + 1} image std", m.group(2),
              statistics.mean(r[2][metric]["std"] for r in runs))
        c.num(f"{where} col {i + 1} seed std", m.group(3) or "—", mean_std(values(runs, key))[1])
    if len(sides) == 2:
      c.diff(where + " hier − single", cells[9], values(single, psnr), values(hier, psnr),
             verdicts=report_compare(("single", "hier")))


def report_grid(c, t):
  key = psnr if t.caption.startswith("PSNR") else nppl
  ks, groups = [int(h) for h in t.header[1:]], report_groups(t)
  by_cell = {}
  for group in groups:
    for name in os.listdir(os.path.join(c.root, RUNS, group)):
      runs = member(c, group, name)
      if runs and runs[0][1]["model"]["kind"] == "single":
        model = runs[0][1]["model"]
        by_cell[(model["code_dim"], model["num_codes"])] = runs
  for line, cells in t.rows:
    for j, k in enumerate(ks):
      report_stat(c, f"{t.path}:{line} D {cells[0]} K {k}", cells[j + 1],
                  by_cell.get((int(cells[0]), k), []), key)
