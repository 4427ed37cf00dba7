"""Every table of docs/ against the committed metrics it was made from
(scripts/check_docs.py: recomputed with json and statistics, not vqjax), and the check
itself on docs with one number changed: it must name that cell."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import check_docs  # noqa: E402  pylint: disable=g-import-not-at-top


def test_every_table_in_docs_matches_the_committed_metrics():
  checker = check_docs.check(REPO)
  assert not checker.errors, "\n".join(checker.errors)
  assert checker.numbers > 1400  # every table was read (1,510 numbers when written)


@pytest.fixture(scope="module")
def docs_copy(tmp_path_factory):
  """The docs (metrics, markdown; no figures) and the corpus file list in a new root."""
  root = tmp_path_factory.mktemp("repo")
  shutil.copytree(os.path.join(REPO, "docs"), root / "docs",
                  ignore=shutil.ignore_patterns("*.png", "*.npz"))
  (root / "scripts").mkdir()
  shutil.copy(os.path.join(REPO, "scripts", "photo_corpus_files.tsv"), root / "scripts")
  return root


# (doc, the text as committed, the same with one number or word changed, what the
# check must say). Each row is one kind of table.
CHANGES = [
    ("docs/REPRODUCTION.md", "| 2 × 1024 | 27.94 ± 0.01 | 26.95 ± 0.08 | +1.00 (beyond noise) | "
     "+1.06, +0.93 |", "| 2 × 1024 | 27.94 ± 0.01 | 26.95 ± 0.08 | +1.00 (beyond noise) | "
     "+1.06, +0.95 |", "pairs seed 1: prints +0.95"),
    ("docs/REPRODUCTION.md", "| +0.25 (within noise) |", "| +0.25 (beyond noise) |",
     "the rule gives (within noise)"),
    ("docs/REPRODUCTION.md", "the last step at 0.95x", "the last step at 0.94x",
     "rate: prints 0.94"),
    ("docs/REPRODUCTION.md", "| 8 | 27.32 ± 0.28 |", "| 8 | 27.32 ± 0.18 |",
     "(seed std): prints 0.18"),
    ("docs/HQVAE.md", "| rqvae_reset | 24.94 | 25.32 |", "| rqvae_reset | 24.94 | 25.23 |",
     "rqvae_reset seed 1: prints 25.23"),
    ("docs/hqvae/table.md", "| 5.9 ± 0.4 / 7.4 ± 0.5 |", "| 5.9 ± 0.4 / 7.5 ± 0.5 |",
     "rsqvae hard [1]: prints 7.5"),
    ("docs/QUANTIZERS.md", "| 24.17 ± 0.10 | 0.598", "| 24.27 ± 0.10 | 0.598",
     "fsq PSNR: prints 24.27"),
    ("docs/quantizers/table.md", "unused 3792 ± 62", "unused 3782 ± 62",
     "fsq unused: prints 3782"),
    ("docs/reproduction/figure1/REPORT.md", "| -0.00127 (init better) |",
     "| -0.00127 (within noise) |", "the rule gives (init better)"),
    ("docs/reproduction/table1_1200steps/REPORT.md", "30.58 ± 6.22 [seeds ± 0.59, n=2]",
     "30.58 ± 6.22 [seeds ± 0.69, n=2]", "seed std: prints 0.69"),
    ("docs/reproduction/table1_4800steps/REPORT.md", "| 31.38 ± 6.76 [n=1] |",
     "| 31.48 ± 6.76 [n=1] |", "prints 31.48"),     # a budget with one side's runs only
    ("docs/reproduction/table1_4800steps/REPORT.md", "| 1.14 | — | table1_4800steps_hier",
     "| 1.14 | +0.10 | table1_4800steps_hier", "the other side must read 'missing'"),
    ("docs/PHOTO_CORPUS.md", "| train photos | 75 |", "| train photos | 76 |",
     "train photos: prints 76"),
    ("docs/DATA.md", "| 20.36 | 25.00 |", "| 20.36 | 25.10 |",
     "[corpus_green, colour augmentation]: prints 25.10"),
    ("docs/SEMANTICIST.md", "| 4 | 17.32 (17.42, 17.23) |", "| 4 | 17.32 (17.42, 17.32) |",
     "k=4 continuous: PSNR run 1: prints 17.32"),
    ("docs/SEMANTICIST.md", "| 0.53 | 0.320 | 27.93 / 0.913 / 0.112 |",
     "| 0.53 | 0.320 | 27.93 / 0.931 / 0.112 |", "k=4 FSQ: PSNR PCA EV: prints 0.931"),
    ("docs/SEMANTICIST.md", "| 0.59 | 0.274 |", "| 0.59 | 0.247 |",
     "k=4 continuous: PSNR LPIPS: prints 0.247"),
    ("docs/SEMANTICIST.md", "| 29.86 / 0.948 / 0.082 | 15.84", "| 29.86 / 0.948 / 0.028 | 15.84",
     "k=4 continuous: PSNR PCA LPIPS: prints 0.028"),
]


@pytest.mark.parametrize("doc, before, after, message", CHANGES)
def test_a_changed_number_is_named(docs_copy, doc, before, after, message):
  path = docs_copy / doc
  text = path.read_text()
  assert text.count(before) == 1, f"{doc} no longer holds {before!r}: update CHANGES"
  path.write_text(text.replace(before, after))
  try:
    errors = check_docs.check(str(docs_copy)).errors
  finally:
    path.write_text(text)
  line = text[:text.index(before)].count("\n") + 1
  assert len(errors) == 1 and errors[0].startswith(f"{doc}:{line}") and message in errors[0], (
      errors)


def test_a_table_without_a_rule_fails(docs_copy):
  new = docs_copy / "docs" / "NEW.md"
  new.write_text("Some numbers:\n\n| run | PSNR |\n|---|---|\n| x | 30.0 |\n")
  try:
    errors = check_docs.check(str(docs_copy)).errors
  finally:
    new.unlink()
  assert errors == ["docs/NEW.md:3: no rule checks the table 'run | PSNR' (add one to "
                    "scripts/check_docs_rules.py, or to EXEMPT if it holds no measured "
                    "numbers)"]


def test_command_line_exit_status(docs_copy):
  script = os.path.join(REPO, "scripts", "check_docs.py")
  ok = subprocess.run([sys.executable, script, REPO], capture_output=True, text=True)
  assert ok.returncode == 0 and ok.stdout.endswith(" 0 differences\n"), ok.stdout
  doc = docs_copy / "docs" / "HQVAE.md"
  text = doc.read_text()
  doc.write_text(text.replace("| sqvae2_K16 | 19.19 |", "| sqvae2_K16 | 19.91 |"))
  try:
    bad = subprocess.run([sys.executable, script, str(docs_copy)], capture_output=True,
                         text=True)
  finally:
    doc.write_text(text)
  assert bad.returncode == 1 and "sqvae2_K16 seed 0: prints 19.91" in bad.stdout, bad.stdout
