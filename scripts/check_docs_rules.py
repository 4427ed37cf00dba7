"""scripts/check_docs.py's rules: which rule checks which table (`rule_for`), and the
rules for docs/HQVAE.md, docs/hqvae/table.md, docs/QUANTIZERS.md,
docs/quantizers/table.md, docs/PHOTO_CORPUS.md and docs/DATA.md (the reproduction's
are in check_docs_reproduction.py)."""

from __future__ import annotations

import csv
import math
import os
import re
import statistics

import check_docs_reproduction as repro
from check_docs import NUM, read_json, seed_metrics, split_row, walltimes

HQVAE, QUANT = "docs/hqvae/metrics", "docs/quantizers"
# HQ-VAE's Table 5, r = 1e-5 (CIFAR-10): RMSE x 10^2, (mean, ±) as printed there.
PAPER_TABLE5 = {"SQ-VAE-2": (5.264, 0.016), "RSQ-VAE": (5.697, 0.022)}
TABLE5_MEMBERS = {"SQ-VAE-2": ("sqvae2_K16", "sqvae2_K128"),
                  "RSQ-VAE": ("rsqvae", "rsqvae_shared")}
EXEMPT = {  # settings, or prose whose numbers are not parsed
    ("finding", "at this scale"),                            # REPRODUCTION.md's findings
    ("file", "what"),                                        # HQVAE.md's, CONFIG.md's configs
    ("kind", "class", "model kinds", "fields"),              # QUANTIZERS.md's wiring
    ("kind", "class", "fields (defaults)"),                  # CONFIG.md's quantizer fields
    ("member", "quantizer", "budget", "why these values"),   # QUANTIZERS.md's members
    ("fault", "what you see", "test"),                       # TRAINING.md's faults
    ("sweep", "members", "paper"),                           # EXPERIMENTS.md's sweeps
    ("k", "probability"),                                    # SEMANTICIST.md's cutoff law
    ("test", "reference"),                                   # SEMANTICIST.md's tests
    # Measured, but from runs of 2026-11-25/30 whose metrics were never committed, so
    # nothing to recompute them from (each table says so above it):
    ("run", "date", "validation PSNR dB, steps 200 / 400 / 600", "wall time"),  # TRAINING.md
    ("option", "PSNR (dB)", "wall time")}                    # QUANTIZERS.md's released options


def rmse(m):
  return 100 * math.sqrt(m["mse"]["mean"])


def hq(c, name):
  return list(seed_metrics(os.path.join(c.root, HQVAE), name).values())


def qm(c, name, sub="metrics"):
  return seed_metrics(os.path.join(c.root, QUANT, sub), name)


def stats(c, where, text, runs_values, sep=" / "):
  """'a ± s / b ± t ...': one stat per list of values."""
  parts = text.split(sep)
  if len(parts) != len(runs_values):
    c.fail(where, f"{text!r}: {len(parts)} parts, the files give {len(runs_values)}")
  for i, (part, v) in enumerate(zip(parts, runs_values)):
    c.stat(f"{where} [{i}]", part, v)


# --- HQ-VAE ----------------------------------------------------------------------------


def hqvae_main(c, t):
  for line, cells in t.rows:
    where, runs = f"{t.path}:{line} {cells[0]}", hq(c, cells[0])
    c.num(where + " seeds", cells[1], len(runs))
    c.stat(where + " PSNR", cells[2], [m["psnr"]["mean"] for m in runs])
    c.stat(where + " RMSE", cells[3], [rmse(m) for m in runs])
    c.stat(where + " SSIM", cells[4], [m["ssim"]["mean"] for m in runs])
    levels = list(runs[0]["levels"])
    stats(c, where + " hard", cells[5], [[m["levels"][n]["perplexity"] for m in runs]
                                         for n in levels])
    soft = [[m["levels"][n].get("perplexity_soft") for m in runs] for n in levels]
    if soft[0][0] is None:
      if cells[6] != " / ".join("—" for _ in levels):
        c.fail(where, f"soft perplexity {cells[6]!r} of a member without one")
    else:
      stats(c, where + " soft", cells[6], soft)


def hqvae_per_seed(c, t):
  seeds = [int(h.split()[1]) for h in t.header[1:-1]]
  for line, cells in t.rows:
    where, runs = f"{t.path}:{line} {cells[0]}", seed_metrics(os.path.join(c.root, HQVAE),
                                                               cells[0])
    for seed, cell in zip(seeds, cells[1:-1]):
      c.num(f"{where} seed {seed}", cell, runs[seed]["psnr"]["mean"] if seed in runs else None)
    c.stat(where + " mean", cells[-1], [m["psnr"]["mean"] for m in runs.values()])


def hqvae_table5(c, t):
  for line, cells in t.rows:
    where, model = f"{t.path}:{line}", cells[0].split(",")[0]
    got = [float(x) for x in re.findall(NUM, cells[1])[:2]]
    if tuple(got) != PAPER_TABLE5[model]:
      c.fail(where, f"paper {cells[1]!r}, its Table 5 says {PAPER_TABLE5[model]}")
    parts = re.findall(rf"({NUM} ± {NUM}) \(([^)]*)\)", cells[2])
    for (stat, label), name in zip(parts, TABLE5_MEMBERS[model]):
      runs = hq(c, name)
      c.stat(f"{where} {name}", stat, [rmse(m) for m in runs])
      k = runs[0]["levels"]["layer_1"]["num_codes"]
      if label.startswith("K =") and label != f"K = {k}":
        c.fail(where, f"{label!r}: {name} has K = {k}")


def hqvae_train_gap(c, t):
  for line, cells in t.rows:
    where, name = f"{t.path}:{line} {cells[0]}", cells[0]
    train = [m["psnr"][-1][1] for m in hq(c, f"training_{name}")]
    val = [m["psnr"]["mean"] for m in hq(c, name)]
    c.stat(where + " train", cells[1], train)
    c.stat(where + " validation", cells[2], val)
    c.num(where + " gap", cells[3], statistics.mean(train) - statistics.mean(val))


# --- quantizers -------------------------------------------------------------------


def used_bits(level):
  if "groups" in level:
    return sum(math.log2(g["perplexity"]) for g in level["groups"].values())
  return math.log2(level["perplexity"])


def joint_usage(level):
  """(perplexity / index space, index space); grouped: the product bound."""
  if "groups" in level:
    groups = list(level["groups"].values())
    space = groups[0]["num_codes"] ** len(groups)
    return math.prod(g["perplexity"] for g in groups) / space, space
  return level["perplexity"] / level["num_codes"], level["num_codes"]


def bits_of(c, where, text, level):
  value, how = re.fullmatch(rf"({NUM}) \((.*)\)", text).groups()
  if how.startswith("log2 K") or how == "D":
    k = level["num_codes"]
    if how != "D" and how != f"log2 K = log2 {k}":
      c.fail(where, f"{how!r}: K = {k}")
    return c.num(where, value, math.log2(k))
  if how.startswith("G log2"):
    g, k = map(int, re.search(r"= (\d+) x log2 (\d+)", how).groups())
    groups = list(level["groups"].values())
    if (g, k) != (len(groups), groups[0]["num_codes"]):
      c.fail(where, f"{how!r}: the metrics have {len(groups)} groups of "
             f"{groups[0]['num_codes']}")
    return c.num(where, value, g * math.log2(k))
  levels = [int(x) for x in how.split("L = ")[1].split(",")]
  if math.prod(levels) != level["num_codes"]:
    c.fail(where, f"{how!r}: prod = {math.prod(levels)}, the metrics have {level['num_codes']}")
  c.num(where, value, sum(math.log2(x) for x in levels))


def quantizers_main(c, t):
  walls = walltimes(os.path.join(c.root, QUANT, "walltimes.txt"))
  step = read_json(os.path.join(c.root, QUANT, "step_time.json"))
  for line, cells in t.rows:
    name = cells[0]
    where, by_seed = f"{t.path}:{line} {name}", qm(c, name)
    runs = list(by_seed.values())
    levels = [m["levels"]["codes"] for m in runs]
    c.num(where + " seeds", cells[2], len(runs))
    bits_of(c, where + " bits", cells[3], levels[0])
    c.stat(where + " PSNR", cells[4], [m["psnr"]["mean"] for m in runs])
    c.stat(where + " SSIM", cells[5], [m["ssim"]["mean"] for m in runs])
    rest = c.stat(where + " perplexity / K", cells[6], [lv["normalized_perplexity"]
                                                        for lv in levels])
    k, unused = re.fullmatch(r"\s*\(K = (\d+), unused (.*)\)", rest).groups()
    c.num(where + " K", k, levels[0]["num_codes"])
    c.stat(where + " unused", unused, [lv["unused_codes"] for lv in levels])
    c.stat(where + " used bits", cells[7], [used_bits(lv) for lv in levels])
    if "groups" in levels[0]:
      stats(c, where + " groups", cells[8], [[lv["groups"][g]["normalized_perplexity"]
                                              for lv in levels] for g in levels[0]["groups"]])
      first = runs[0]["psnr_first_k_groups"]
      stats(c, where + " first k", cells[9], [[m["psnr_first_k_groups"][k]["mean"]
                                               for m in runs] for k in first])
    elif cells[8] != "—" or cells[9] != "—":
      c.fail(where, "per-group cells of a member without groups")
    wall = cells[10].split(" / ")[1]  # the train seconds come from logs not committed
    c.stat(where + " wall s", wall, [walls[(name, s)]["wall_s"] for s in by_seed])
    c.num(where + " ms / step", cells[11], 1000 * step[name]["median_s"] if name in step
          else None)


def quantizers_rerun(c, t):
  walls = walltimes(os.path.join(c.root, QUANT, "rerun", "walltimes.txt"))
  for line, cells in t.rows:
    name = cells[0].split(",")[0]
    where, committed = f"{t.path}:{line} {name}", qm(c, name)
    rerun = qm(c, name, "rerun")[0]
    seeds, summary = cells[1].split("; ")
    for part, seed in zip(seeds.split(" / "), committed):
      c.num(f"{where} committed seed {seed}", part, committed[seed]["psnr"]["mean"])
    c.stat(where + " committed", summary, [m["psnr"]["mean"] for m in committed.values()])
    c.num(where + " rerun", cells[2], rerun["psnr"]["mean"])
    c.num(where + " rerun − committed", cells[3],
          rerun["psnr"]["mean"] - committed[0]["psnr"]["mean"])
    ssim, was = re.fullmatch(rf"({NUM}) \(({NUM})\)", cells[4]).groups()
    c.num(where + " SSIM", ssim, rerun["ssim"]["mean"])
    c.num(where + " committed SSIM", was, committed[0]["ssim"]["mean"])
    wall, train = cells[5].split(" / ")
    c.num(where + " wall", wall, walls[(name, 0)]["wall_s"])
    c.num(where + " train", train, walls[(name, 0)]["train_s"])


def quantizers_usage(c, t):
  for line, cells in t.rows:
    where, runs = f"{t.path}:{line} {cells[0]}", list(qm(c, cells[0]).values())
    usage = [joint_usage(m["levels"]["codes"]) for m in runs]
    c.num(where + " index space", cells[1].split("= ")[-1], usage[0][1])
    c.stat(where + " usage", cells[2], [u for u, _ in usage],
           bound="groups" in runs[0]["levels"]["codes"])


# --- colour augmentation (docs/DATA.md) ----------------------------------------------

HUE_EVAL = "docs/hue_eval.json"
# Row label prefix -> the hue_eval.json keys of its ' / '-separated cells.
HUE_ROWS = {"builtin validation crops": ("builtin",),
            "same, hue turned by 90 / 180 / 270": ("hue+90", "hue+180", "hue+270"),
            "gap: unrotated - mean of the rotated": ("gap",),
            "photo corpus validation crops": ("corpus",),
            "the mostly green ones": ("corpus_green",)}


def colour_augmentation(c, t):
  """PSNR per data set of the two runs of scripts/hue_eval.py, and the image counts."""
  runs = read_json(os.path.join(c.root, HUE_EVAL))
  columns = [runs["runs/noaug"], runs["runs/aug"]]
  for line, cells in t.rows:
    label = cells[0]
    keys = next((v for k, v in HUE_ROWS.items() if label.startswith(k)), None)
    where = f"{t.path}:{line} {label.split(' (')[0]}"
    if keys is None:
      c.fail(where, f"row {label!r}: {HUE_EVAL} holds no such data set")
      continue
    count = re.search(r"\((\d+)\)$", label)
    for run in columns if count else []:
      for key in keys:
        c.num(where + " images", count.group(1), run["num_images"][key])
    for column, run in enumerate(columns, 1):
      parts = cells[column].split(" / ")
      if len(parts) != len(keys):
        c.fail(where, f"{cells[column]!r}: {len(parts)} values, expected {len(keys)}")
        continue
      for part, key in zip(parts, keys):
        c.num(f"{where} [{key}, {t.header[column]}]", part, run[key])


# --- docs/PERCEPTUAL.md ------------------------------------------------------------

PERCEPTUAL = "docs/perceptual/metrics"   # <run>.json: eval/metrics.json of configs/perceptual.py


def perceptual_runs(c, t):
  """Each row's run: PSNR mean ± std, SSIM, LPIPS, the FID stand-in, perplexity."""
  keys = {"PSNR dB": lambda m: (m["psnr"]["mean"], m["psnr"]["std"]),
          "SSIM": lambda m: m["ssim"]["mean"], "LPIPS": lambda m: m["lpips"]["mean"],
          "FID stand-in": lambda m: m["fid_lpips_alex"]["value"],
          "perplexity": lambda m: m["levels"]["codes"]["perplexity"],
          "images": lambda m: m["num_images"], "step": lambda m: m["checkpoint_step"]}
  for line, cells in t.rows:
    run = re.search(r"`(\w+)`", cells[0]).group(1)
    m = read_json(os.path.join(c.root, PERCEPTUAL, f"{run}.json"))
    for column, cell in zip(t.header[1:], cells[1:]):
      where = f"{t.path}:{line} {run} {column}"
      value = keys[column](m)
      if isinstance(value, tuple):
        mean, std = cell.split("±")
        c.num(where, mean, value[0])
        c.num(where + " std", std, value[1])
      else:
        c.num(where, cell, value)


# --- SEMANTICIST (docs/SEMANTICIST.md) -------------------------------------------------

SEMANTICIST_CURVES = "docs/semanticist/{}/curves.json"   # scripts/semanticist_curves.py


def semanticist_first_k(c, t):
  """Per k: 'mean (per training seed)' PSNR over training x sampler seeds, the mean
  EV, the mean LPIPS, and 'PSNR / EV / LPIPS' of PCA with k x D components, for each
  curves.json in turn."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  curves = [read_json(os.path.join(c.root, SEMANTICIST_CURVES.format(name)))
            for name in ("continuous", "fsq")]
  for line, cells in t.rows:
    k = cells[0]
    for i, curve in enumerate(curves):
      where = f"{t.path}:{line} k={k} {t.header[1 + 4 * i]}"
      psnr, ev, lpips, pca = cells[1 + 4 * i: 5 + 4 * i]
      runs = list(curve["runs"].values())
      per_run = [float(np.mean(r["psnr"][k])) for r in runs]
      parts = re.findall(NUM, psnr)
      if len(parts) != 1 + len(runs):
        c.fail(where, f"{psnr!r}: expected the mean and {len(runs)} per-run values")
        continue
      c.num(where, parts[0], float(np.mean([p for r in runs for p in r["psnr"][k]])))
      for j, (part, value) in enumerate(zip(parts[1:], per_run)):
        c.num(f"{where} run {j}", part, value)
      c.num(where + " EV", ev, float(np.mean([e for r in runs for e in r["explained"][k]])))
      c.num(where + " LPIPS", lpips, float(np.mean([d for r in runs for d in r["lpips"][k]])))
      fit = curve["pca"].get(str(int(k) * curve["code_dim"]))
      if fit is None:
        if pca.strip():
          c.fail(where, f"PCA {pca!r} for k = {k}, the files give none")
        continue
      got = pca.split(" / ")
      if len(got) != 3:
        c.fail(where, f"PCA {pca!r}: expected 'PSNR / EV / LPIPS'")
        continue
      c.num(where + " PCA PSNR", got[0], fit["psnr"])
      c.num(where + " PCA EV", got[1], fit["explained"])
      c.num(where + " PCA LPIPS", got[2], fit["lpips"])


# --- the photo corpus --------------------------------------------------------------


def corpus_counts(c, t):
  photos, crops = repro.train_crops(c)
  want = {"train photos": photos["train"], "val photos": photos["val"],
          "val crops (64x64)": crops["val"],
          "non-overlapping 64x64 crops in the train photos": crops["train"]}
  for line, cells in t.rows:
    c.num(f"{t.path}:{line} {cells[0]}", re.match(NUM, cells[1]).group(), want[cells[0]])


def corpus_sources(c, t):
  kept = {}
  with open(os.path.join(c.root, "scripts", "photo_corpus_files.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
      kept.setdefault(row["package"], [row["version"], 0])[1] += 1
  for line, cells in t.rows:
    package = cells[0].split(" (")[0]
    version, n = kept[package]
    if cells[1] != version:
      c.fail(f"{t.path}:{line}", f"{package} version {cells[1]!r}, the file list has {version}")
    c.num(f"{t.path}:{line} {package} kept", cells[2].split(" / ")[0], n)  # examined: not listed


# --- the matched-budget experiments (docs/PERCEPTUAL.md, docs/PRIOR.md) ----------------

MATCHED = "docs/matched/runs"


def matched_tables(c, t):
  """The table as scripts/matched_table.py writes it from docs/matched/runs, cell by cell."""
  import matched_table  # pylint: disable=import-outside-toplevel
  runs = os.path.join(c.root, MATCHED)
  lines = (matched_table.prior_tables(runs) if t.header[0] in ("codes", "metric")
           else matched_table.perceptual_tables(runs))
  want, found = [], False
  for line in lines:
    cells = split_row(line) if line else None
    if cells == t.header:
      found, want = True, []
    elif found and cells is None:
      break
    elif found and not set(line) <= set("|-"):
      want.append(cells)
  if not found:
    c.fail(f"{t.path}:{t.line}", "scripts/matched_table.py writes no table with this header")
    return
  if len(want) != len(t.rows):
    c.fail(f"{t.path}:{t.line}", f"{len(t.rows)} rows; the files give {len(want)}")
  for (line, cells), expected in zip(t.rows, want):
    if cells != expected:
      c.fail(f"{t.path}:{line}", f"prints {cells}, the files give {expected}")
    c.numbers += sum(bool(re.fullmatch(NUM, x)) for x in cells)


def rule_for(t):
  h = tuple(t.header)
  if t.path.endswith("REPORT.md"):
    return {"run": repro.report_runs, "architecture": repro.report_figure1,
            "D_s = D_h": repro.report_table1, "D \\ K": repro.report_grid}.get(h[0])
  rules = {
      ("", "the paper"): repro.repro_regime, ("stage",): repro.repro_figure1,
      ("K_s", "2 × K_h"): repro.repro_table1, ("D_s \\ K_s",): repro.repro_figure2,
      ("pair", "steps"): repro.repro_longer,
      ("member", "seeds", "PSNR dB", "RMSE x 10^2"): hqvae_main,
      ("member", "seed 0"): hqvae_per_seed, ("model",): hqvae_table5,
      ("member", "training PSNR dB, last 20 steps (train crops)"): hqvae_train_gap,
      ("member", "quantizer", "seeds"): quantizers_main, ("member, seed 0",): quantizers_rerun,
      ("member", "index space"): quantizers_usage, ("", ""): corpus_counts,
      ("package", "version", "kept / examined"): corpus_sources,
      ("data (images)", "no augmentation", "colour augmentation"): colour_augmentation,
      ("run (option)", "step", "images", "PSNR dB"): perceptual_runs,
      ("condition", "budget (K_s)"): matched_tables, ("condition", "metric"): matched_tables,
      ("codes", "budget (K_s)"): matched_tables, ("metric", "budget (K_s)"): matched_tables,
      ("k", "continuous: PSNR"): semanticist_first_k}
  return next((rule for prefix, rule in rules.items() if h[:len(prefix)] == prefix), None)
