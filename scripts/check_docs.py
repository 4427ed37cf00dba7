"""Every table of docs/ recomputed from the committed files it was made from.

  python scripts/check_docs.py [REPO]   # prints each differing cell; exit status 1 if any

Reads committed files only: docs/reproduction/runs/<group>/<member>/seed<s>/{config.json,
eval/metrics.json}, docs/hqvae/metrics/*.json, docs/quantizers/{metrics,rerun}/ with their
walltimes.txt and step_time.json, scripts/photo_corpus_files.tsv. It uses json, math and
statistics, not vqjax (a slip of the report code shows as a difference too). A number
printed with d decimals must lie within half a unit of its d-th decimal of the
recomputed value; mean ± std is over seeds (ddof 1), "beyond noise" means
|difference| > the larger seed std. Every markdown table of docs/**/*.md goes to the rule
that its header names (rules in check_docs_rules.py); a table with no rule is an error,
so a new table needs one. Not checked: the tables in EXEMPT (settings and prose, e.g.
REPRODUCTION.md's findings, and two tables of early runs whose metrics were never
committed), the parameter counts (they need the model) and the train seconds of
QUANTIZERS.md (from logs that are not committed). tests/test_docs.py runs it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import statistics
import sys

NUM = r"[−+-]?\d+(?:,\d{3})*(?:\.\d+)?"
_STAT = re.compile(rf"\s*(≤\s*)?({NUM})(?:\s*±\s*({NUM}))?(?:\s*\(n=(\d+)\))?")


def to_float(text: str) -> float:
  return float(text.replace("−", "-").replace(",", ""))


def mean_std(values):
  values = list(values)
  return (statistics.mean(values) if values else None,
          statistics.stdev(values) if len(values) > 1 else None)


@dataclasses.dataclass
class Table:
  path: str                # relative to the repo
  line: int                # of the header, 1-based
  header: list[str]
  rows: list[tuple[int, list[str]]]
  caption: str             # the last non-empty line above the table
  text: str                # the whole file


def split_row(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(path: str, rel: str) -> list[Table]:
  with open(path) as f:
    text = f.read()
  lines, out, i, caption = text.splitlines(), [], 0, ""
  while i < len(lines):
    if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$",
                                                                      lines[i + 1].strip()):
      table = Table(rel, i + 1, split_row(lines[i]), [], caption, text)
      i += 2
      while i < len(lines) and lines[i].startswith("|"):
        table.rows.append((i + 1, split_row(lines[i])))
        i += 1
      out.append(table)
      continue
    if lines[i].strip():
      caption = lines[i].strip()
    i += 1
  return out


class Checker:
  """Collects the differences between printed numbers and recomputed values."""

  def __init__(self, root: str):
    self.root = root
    self.errors: list[str] = []
    self.numbers = 0  # printed numbers compared

  def fail(self, where: str, message: str) -> None:
    self.errors.append(f"{where}: {message}")

  def num(self, where: str, printed: str, value) -> None:
    """One printed number (or '—' for no value) against value."""
    printed = printed.strip()
    if value is None:
      if printed != "—":
        self.fail(where, f"prints {printed!r}, the files give no value")
      return
    if not re.fullmatch(NUM, printed):
      self.fail(where, f"prints {printed!r}, the files give {value:.6g}")
      return
    self.numbers += 1
    digits = len(printed.split(".")[1]) if "." in printed else 0
    if abs(to_float(printed) - value) > 0.5 * 10 ** -digits * (1 + 1e-6) + 1e-12:
      self.fail(where, f"prints {printed}, the files give {value:.{digits + 3}f}")

  def stat(self, where: str, text: str, values, *, std: bool | None = None,
           bound: bool = False) -> str:
    """A 'mean', 'mean ± std' or '... (n=N)' prefix of text against per-seed values;
    returns the rest of text. std=True: the std must be printed (two or more values),
    False: it must not be, None: printed exactly when there are two or more values."""
    values = list(values)
    if text.strip() == "—" and not values:
      return ""
    match = _STAT.match(text)
    if not match:
      self.fail(where, f"prints {text!r}, expected a number for {len(values)} value(s)")
      return ""
    if bool(match.group(1)) != bound:
      self.fail(where, f"{text!r}: " + ("'≤' expected (an upper bound)" if bound
                                         else "'≤' not expected (a measured value)"))
    mean, sd = mean_std(values)
    self.num(where, match.group(2), mean)
    want_std = len(values) > 1 if std is None else std
    if match.group(3) is not None and want_std:
      self.num(where + " (seed std)", match.group(3), sd)
    elif (match.group(3) is not None) != want_std:
      self.fail(where, f"{text!r}: seed std {'missing' if want_std else 'not expected'} "
                f"for {len(values)} seeds")
    if match.group(4) is not None and int(match.group(4)) != len(values):
      self.fail(where, f"{text!r}: the files have {len(values)} seeds")
    return text[match.end():]

  def diff(self, where: str, text: str, a, b, *, verdicts=("beyond noise", "within noise")):
    """'±d (verdict)': d = mean(b) - mean(a); beyond noise when |d| > the larger std."""
    match = re.fullmatch(rf"({NUM})\s*\((.*)\)", text.strip())
    if not match:
      self.fail(where, f"prints {text!r}, expected 'difference (verdict)'")
      return
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    self.num(where, match.group(1), mb - ma)
    if callable(verdicts):
      want = verdicts(mb - ma, sa, sb)
    else:
      want = verdicts[0] if abs(mb - ma) > max(sa or 0, sb or 0) else verdicts[1]
    if match.group(2) != want:
      self.fail(where, f"says ({match.group(2)}), the rule gives ({want})")


# ---------------------------------------------------------------------------
# The committed files.
# ---------------------------------------------------------------------------


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def seed_runs(member_dir: str) -> list[tuple[int, dict, dict]]:
  """(seed, config, metrics) of the finished runs member_dir/seed<s>, by seed."""
  out = []
  for path in glob.glob(os.path.join(member_dir, "seed*")):
    seed = os.path.basename(path)[4:]
    metrics = os.path.join(path, "eval", "metrics.json")
    if not seed.isdigit() or not os.path.exists(metrics):
      continue
    config, m = read_json(os.path.join(path, "config.json")), read_json(metrics)
    if m["checkpoint_step"] >= config["train"]["num_steps"]:
      out.append((int(seed), config, m))
  return sorted(out, key=lambda r: r[0])


def seed_metrics(directory: str, member: str) -> dict[int, dict]:
  """{seed: metrics} of DIR/<member>_seed<s>.json (the hqvae and quantizer copies)."""
  out = {}
  for path in glob.glob(os.path.join(directory, f"{member}_seed*.json")):
    seed = os.path.basename(path)[len(member) + 5:-5]
    if seed.isdigit():
      out[int(seed)] = read_json(path)
  return dict(sorted(out.items()))


def walltimes(path: str) -> dict[tuple[str, int], dict[str, float]]:
  """{(member, seed): {'wall_s': s, ...}} of a walltimes.txt (rc=0 lines)."""
  out = {}
  for line in open(path):
    parts = line.split()
    if len(parts) >= 3 and "rc=0" in parts:
      out[(parts[0], int(parts[1]))] = {k: float(v) for k, _, v in
                                        (p.partition("=") for p in parts[2:]) if k != "rc"}
  return out


def nppl(m: dict) -> float:
  """Normalized perplexity, mean over levels."""
  return statistics.mean(v["normalized_perplexity"] for v in m["levels"].values())


# ---------------------------------------------------------------------------
# The check.
# ---------------------------------------------------------------------------


def check(root: str) -> Checker:
  import check_docs_rules as rules  # pylint: disable=g-import-not-at-top
  checker = Checker(root)
  for path in sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True)):
    rel = os.path.relpath(path, root)
    for table in tables(path, rel):
      where = f"{rel}:{table.line}"
      if tuple(table.header) in rules.EXEMPT:
        continue
      rule = rules.rule_for(table)
      if rule is None:
        checker.fail(where, f"no rule checks the table {' | '.join(table.header)!r} "
                     "(add one to scripts/check_docs_rules.py, or to EXEMPT if it holds "
                     "no measured numbers)")
        continue
      try:
        rule(checker, table)
      except (KeyError, IndexError, ValueError, FileNotFoundError) as e:
        checker.fail(where, f"{type(e).__name__}: {e} (a row the files do not hold?)")
  return checker


def main(argv: list[str]) -> int:
  root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
  checker = check(os.path.abspath(root))
  for error in checker.errors:
    print(error)
  print(f"{checker.numbers} numbers checked, {len(checker.errors)} differences")
  return 1 if checker.errors else 0


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
  sys.exit(main(sys.argv))
