"""Command-line entry point.

  python -m vqjax.main --config=configs/default.py --workdir=runs/default
  python -m vqjax.main --config=configs/default.py --workdir=runs/default --mode=eval
  python -m vqjax.main --config=configs/paper_single.py --workdir=runs/x \\
      --config.model.code_dim=16 --config.model.num_codes=4096

  python -m vqjax.main --config=configs/default.py --workdir=runs/default \\
      --mode=encode --config.encode.split=train --config.encode.output=codes.array_record
  python -m vqjax.main --config=configs/default.py --workdir=runs/default \\
      --mode=decode --config.decode.input=codes.array_record --config.decode.output=decoded
  python -m vqjax.main --config=configs/default.py --workdir=runs/default \\
      --mode=reconstruct --config.reconstruct.input=photos/ --config.reconstruct.output=recon

  python -m vqjax.main --config=configs/prior.py --workdir=runs/prior \\
      --config.prior.codes=runs/default/codes/train.array_record --config.prior.tokenizer=runs/default
  python -m vqjax.main --config=configs/prior.py --workdir=runs/prior --mode=sample ... (the same flags)

`train` resumes from the latest checkpoint in --workdir and evaluates at the
end; `eval` evaluates the latest (or --config.eval.checkpoint_step) checkpoint.
encode / decode / reconstruct use the model of --workdir (its config.json and
checkpoint, vqjax.export) and leave its config.json as it is; so do eval (which
writes its config to WORKDIR/eval/config.json) and sample (samples/). A prior config
(configs/prior.py) runs vqjax.prior: train (+ eval + samples), eval, sample.
"""

from __future__ import annotations

import logging as logging_std
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from vqjax import config_lib, evaluate, export, parallel, prior, train

def _define_flags() -> dict:
  """The command line's flags; defined only when run as a program, so importing
  vqjax.main (tests, other entry points) leaves absl's flags alone."""
  fv = dict(
      config=config_flags.DEFINE_config_file(
          "config", None, "Experiment config file (configs/*.py).", lock_config=True),
      workdir=flags.DEFINE_string(
          "workdir", None, "Directory for checkpoints, logs and eval outputs."),
      mode=flags.DEFINE_enum(
          "mode", "train", list(config_lib.MODES),
          "train (+ final eval) | eval | encode (a split -> codes file) | decode "
          "(codes file -> PNGs) | reconstruct (image files -> reconstructions, PSNR CSV) | "
          "sample (a prior config: samples of its checkpoint)."),
      coordinator=flags.DEFINE_string(
          "coordinator_address", "",
          "Multi-host: host:port of process 0 (else from the cluster env)."),
      num_processes=flags.DEFINE_integer("num_processes", 0,
                                         "Multi-host: number of processes."),
      process_id=flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index."),
      cpu_devices=flags.DEFINE_integer(
          "cpu_devices", 0,
          "On CPU only: split the host into this many XLA devices (0: one per core, "
          "the largest count that divides the batch sizes). XLA:CPU runs one device's "
          "step mostly on one core; one device per core uses them all (data parallel)."),
  )
  flags.mark_flags_as_required(["config", "workdir"])
  return fv


class _QuietLibraries(logging_std.Filter):
  """Drops orbax's per-save INFO chatter (warnings and errors still show)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv, fv: dict):
  """Runs --mode for --config in --workdir; fv: the flag holders of _define_flags."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = fv["config"].value
  config_lib.validate(config)
  mode = fv["mode"].value
  config_lib.validate_mode(config, mode)
  parallel.configure_compilation_cache(config.compilation_cache_dir)
  parallel.configure_cpu_backend()
  if mode in ("encode", "decode", "reconstruct"):  # one process, one device
    workdir = os.path.abspath(fv["workdir"].value)
    logging.info("JAX %s on %s; model of %s", jax.__version__, jax.local_devices()[0], workdir)
    {"encode": export.encode_split, "decode": export.decode_file,
     "reconstruct": export.reconstruct_images}[mode](config, workdir)
    return  # the run's own config.json stays as it is
  if not fv["coordinator"].value:
    parallel.configure_cpu_devices(config, fv["cpu_devices"].value)
  parallel.maybe_initialize_distributed(fv["coordinator"].value, fv["num_processes"].value,
                                        fv["process_id"].value)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  workdir = os.path.abspath(fv["workdir"].value)
  os.makedirs(workdir, exist_ok=True)
  logging.info("JAX %s on %d %s device(s), %d process(es); workdir %s",
               jax.__version__, jax.device_count(), jax.default_backend(),
               jax.process_count(), workdir)
  if jax.process_index() == 0:  # eval and sample leave the run's config.json as trained
    config_lib.write_config(config, os.path.join(workdir, config_lib.CONFIG_FILES[mode]))
  if config_lib.is_prior_config(config):
    prior.run(config, workdir, mode)
  elif mode == "train":
    train.train_and_evaluate(config, workdir)
  else:
    evaluate.evaluate_checkpoint(config, workdir)


if __name__ == "__main__":
  _FLAGS = _define_flags()
  config_lib.run_app(lambda argv: main(argv, _FLAGS))
