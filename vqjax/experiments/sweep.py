"""Parameter sweeps: a base config plus a list of overrides, one workdir per run.

A sweep file defines `get_sweep(config) -> list[dict]` (config: the base config), each dict mapping dotted
config keys to values (e.g. {"model.num_codes": 4096, "model.code_dim": 16})
and optionally "name". Run one member (e.g. a SLURM array task) or all:

  python -m vqjax.experiments.sweep --config=configs/paper_single.py \\
      --sweep=configs/sweeps/table1.py --workdir=runs/table1 --index=3
  python -m vqjax.experiments.sweep ... --seeds=0,1,2     # every member once per seed
  python -m vqjax.experiments.sweep ... --members=D8_K1024,D16_K8192   # only these members
  python -m vqjax.experiments.sweep ... --list            # the runs, their indices and workdirs
  python -m vqjax.experiments.sweep ... --report          # WORKDIR/REPORT.md + figures (vqjax.experiments.report)

Without --seeds a member trains in `workdir/<name>` with the config's seed;
with --seeds in `workdir/<name>/seed<s>` with config.seed = s. --index picks
one run of the flattened (member, seed) list, member-major. Each run writes its
config as config.json, then trains exactly as `python -m vqjax.main` would with
the same overrides (resuming from its checkpoints). Runs already finished
(eval/metrics.json at step train.num_steps) are skipped, so rerunning the same
command resumes the sweep where it stopped.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax import config_lib
from vqjax.experiments import report, run_results
from vqjax.experiments.sweep_spec import (Run, expand_runs, load_sweep, parse_seeds, run_config,
                               select_members)


class SweepStopped(RuntimeError):
  """A run stopped on request (SIGTERM): the sweep stops too, resumable."""


def is_finished(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether workdir holds the final evaluation (at step train.num_steps)."""
  path = os.path.join(workdir, "eval", "metrics.json")
  if not os.path.exists(path):
    return False
  from vqjax import state  # pylint: disable=import-outside-toplevel
  with open(path) as f:
    step = int(json.load(f).get("checkpoint_step", -1))
  return step >= state.resolve_durations(config).train.num_steps


def run_one(config: ml_collections.ConfigDict, workdir: str, train_fn=None) -> bool:
  """Writes workdir/config.json and trains (resuming), unless already finished.

  Returns whether it trained; raises SweepStopped when the run stopped on request
  (SIGTERM). train_fn defaults to train.train_and_evaluate.
  """
  if is_finished(workdir, config):
    logging.info("skipping %s: finished (eval/metrics.json at step %d).", workdir,
                 config.train.num_steps)
    return False
  if train_fn is None:
    from vqjax import train  # heavy import only when training
    train_fn = train.train_and_evaluate
  os.makedirs(workdir, exist_ok=True)
  text = config.to_json_best_effort(indent=2)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != json.loads(text):
        logging.warning("%s differs from this run's config: overwriting it (the "
                        "checkpoints in %s are resumed as they are).", path, workdir)
  config_lib.write_config(config, path)
  result = train_fn(config, workdir)
  if isinstance(result, dict) and "stopped_at_step" in result:
    raise SweepStopped(f"{workdir} stopped at step {result['stopped_at_step']} on request "
                       "(checkpoint saved); the sweep stops here: resume with the same command.")
  return True


def run_sweep(base: ml_collections.ConfigDict, runs: list[Run], workdir: str,
              index: int | None = None, train_fn=None) -> list[str]:
  """Trains run `index` (or every run in turn); returns the workdirs trained."""
  if index is not None and not 0 <= index < len(runs):
    raise IndexError(f"--index={index}: the sweep has {len(runs)} runs (0..{len(runs) - 1}).")
  trained = []
  for i in range(len(runs)) if index is None else [index]:
    run = runs[i]
    config = run_config(base, run)
    run_dir = os.path.join(workdir, run.subdir)
    logging.info("sweep run %d/%d: %s seed %d -> %s", i, len(runs), run.overrides,
                 config.seed, run_dir)
    if run_one(config, run_dir, train_fn):
      trained.append(run_dir)
  return trained


def _define_flags() -> dict:
  """The command line's flags (defined only when run as a program)."""
  holders = dict(
      config=config_flags.DEFINE_config_file("config", None, "Base config file.",
                                             lock_config=False),
      sweep=flags.DEFINE_string("sweep", None, "Sweep file with get_sweep()."),
      workdir=flags.DEFINE_string("workdir", None, "Parent directory of the runs."),
      seeds=flags.DEFINE_string(
          "seeds", None, "Comma-separated seeds: every member once per seed, in "
          "WORKDIR/<member>/seed<s> (default: once, the config's seed, in WORKDIR/<member>)."),
      members=flags.DEFINE_list("members", None, "Only these members (default: all)."),
      index=flags.DEFINE_integer(
          "index", None, "Run to train, in the (member, seed) list of --list "
          "(default: $SLURM_ARRAY_TASK_ID, else all in turn)."),
      list=flags.DEFINE_bool("list", False, "Print the runs and exit."),
      report=flags.DEFINE_bool(
          "report", False, "Write WORKDIR/REPORT.md and figures (vqjax.experiments.report) and exit."),
  )
  flags.mark_flags_as_required(["config", "sweep", "workdir"])
  return holders


def main(argv, flag_values: dict):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = {name: holder.value for name, holder in flag_values.items()}
  from vqjax import parallel  # heavy import only when running
  parallel.configure_cpu_devices(f["config"])
  parallel.configure_cpu_backend()
  parallel.configure_compilation_cache(f["config"].get("compilation_cache_dir", ""))
  members = select_members(load_sweep(f["sweep"], f["config"]), f["members"])
  runs = expand_runs(members, parse_seeds(f["seeds"]))
  if f["list"]:
    for i, run in enumerate(runs):
      print(i, run.subdir, run.overrides)
    return
  if f["report"]:
    expected = run_results.expected_members(f["config"], members)
    print(report.write_report([f["workdir"]], f["workdir"], expected, parse_seeds(f["seeds"])))
    return
  index = f["index"]
  if index is None and os.environ.get("SLURM_ARRAY_TASK_ID"):
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
  try:
    run_sweep(f["config"], runs, f["workdir"], index)
  except SweepStopped as e:
    logging.warning("%s", e)
    sys.exit(128 + signal.SIGTERM)  # as if killed: scripts running sweeps in turn stop too


if __name__ == "__main__":
  _FLAGS = _define_flags()
  config_lib.run_app(lambda argv: main(argv, _FLAGS))
