"""Training the prior: state, the jitted data-parallel step, the loop, checkpoints.

The state is flax's TrainState (step, params, AdamW state) plus the PRNG key
(dropout: fold_in(rng, step)), as vqjax.state.TrainState without codebooks;
the step is one `jax.jit` over the mesh (batch sharded on `data`, state
replicated and donated). Checkpoints are vqjax.checkpointing's
(workdir/checkpoints/<step>/{state,data}: the state and the grain iterator
position); a run resumes from the latest. The workdir also holds codes.json:
the sequence layout, the unigram baselines and the codes files they came from
(`prepare`; checked on resume, read by --mode=eval and --mode=sample).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from vqjax import checkpointing, config_lib, parallel, writers
from vqjax.prior import data, evaluate, sample
from vqjax.prior.layout import Layout, unigram_summary
from vqjax.prior.model import create_model, segment_mask, shift_right, token_nll
from vqjax.state import count_params

CODES_FILE = "codes.json"   # the layout, baselines and files the prior was trained on


class PriorState(train_state.TrainState):
  """step [] int32, params, opt_state (AdamW), rng [2] uint32 (never changes)."""

  rng: Any


def learning_rate_schedule(config: ml_collections.ConfigDict):
  """step -> rate: linear warm-up over warmup_steps (from lr / warmup_steps),
  then constant ('constant') or a cosine from learning_rate to 0 at num_steps."""
  t = config.train
  lr, warm, total = float(t.learning_rate), int(t.warmup_steps), int(t.num_steps)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    rate = lr * (jnp.minimum(1.0, (step + 1) / warm) if warm else 1.0)
    if t.lr_schedule == "constant":
      return rate
    progress = jnp.clip((step - warm) / max(total - warm, 1), 0.0, 1.0)
    return rate * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

  return schedule


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Gradient clipping (global norm train.grad_clip, 0 = off), then AdamW (b2 0.95)
  with weight decay on the matrices (kernels, embeddings; not biases or LayerNorm)."""
  t = config.train
  adamw = optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.95,
                      weight_decay=t.weight_decay,
                      mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))
  return optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw) if t.grad_clip else adamw


def create_state(model, tx, seq_len: int, seed: int) -> PriorState:
  """A fresh state, built under jit."""

  def init():
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init({"params": init_key}, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return PriorState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=params,
                      tx=tx, opt_state=tx.init(params), rng=train_key)

  return jax.jit(init)()


# -- the train step -----------------------------------------------------------------


def loss_and_nll(params, tokens: jax.Array, *, apply_fn, layout: Layout, train: bool,
                 rngs=None) -> tuple[jax.Array, jax.Array]:
  """(mean NLL per token in nats, NLL [B, T]) of int32 tokens [B, T]."""
  logits = apply_fn({"params": params}, shift_right(tokens, layout.bos), train=train,
                    rngs=rngs or {})
  nll = token_nll(logits, tokens, segment_mask(layout.lo, layout.hi, layout.num_code_tokens))
  return jnp.mean(nll), nll


def train_step(state: PriorState, batch: dict, *, layout: Layout,
               learning_rate_fn=None) -> tuple[PriorState, dict]:
  """One AdamW step on the cross-entropy of batch['tokens'] [B, T] (sharded).

  Logged: loss (nats per token), bits_per_code, <level>/bits_per_code,
  grad_norm, learning_rate (with learning_rate_fn). PRNG: 'dropout' =
  fold_in(rng, step).
  """
  rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}
  (loss, nll), grads = jax.value_and_grad(
      functools.partial(loss_and_nll, apply_fn=state.apply_fn, layout=layout, train=True,
                        rngs=rngs), has_aux=True)(state.params, batch["tokens"])
  new_state = state.apply_gradients(grads=grads)
  metrics = dict(loss=loss, bits_per_code=loss / math.log(2.0),
                 grad_norm=optax.tree.norm(grads))
  for name, s in layout.level_slices().items():
    metrics[f"{name}/bits_per_code"] = jnp.mean(nll[:, s]) / math.log(2.0)
  if learning_rate_fn is not None:
    metrics["learning_rate"] = learning_rate_fn(state.step)
  return new_state, metrics


def jit_train_step(mesh, layout: Layout, learning_rate_fn=None):
  """train_step jitted over the mesh: batch sharded, state replicated and donated."""
  repl = parallel.replicated(mesh)
  return jax.jit(functools.partial(train_step, layout=layout,
                                   learning_rate_fn=learning_rate_fn),
                 in_shardings=(repl, parallel.data_sharding(mesh)),
                 out_shardings=(repl, repl), donate_argnums=0)


# -- the codes: layout and baselines ------------------------------------------------


def file_identity(path: str) -> list:
  """[absolute path, size, mtime in ns]: a codes file as codes.json records it."""
  st = os.stat(path)
  return [os.path.abspath(path), int(st.st_size), int(st.st_mtime_ns)]


def read_codes_json(workdir: str) -> dict | None:
  path = os.path.join(workdir, CODES_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    saved = json.load(f)
  saved["layout"] = Layout.from_json(saved["layout"])
  return saved


def prepare(config: ml_collections.ConfigDict, workdir: str | None = None
            ) -> tuple[Layout, dict]:
  """(layout, baselines) of the config's codes files.

  Scans the training and validation files (levels, code counts: one pass
  over each), sizes the vocabulary (`data.make_layout`) and computes the
  unigram baselines (`layout.unigram_summary`). With a workdir, the result is
  kept in workdir/codes.json with the files' path, size and mtime: the same
  files are not scanned again (resume, --mode=eval); other files must give
  the same layout (a run resumed or evaluated on other codes stops).
  """
  p = config.prior
  val_path = config_lib.prior_validation_codes(config)
  files = {"train": file_identity(p.codes), "validation": file_identity(val_path)}
  saved = read_codes_json(workdir) if workdir is not None else None
  if saved is not None and saved["files"] == files and saved["tokenizer"] == p.tokenizer:
    return saved["layout"], saved["baselines"]
  levels, train_counts = data.scan(p.codes)
  _, val_counts = data.scan(val_path, levels)
  layout, source = data.make_layout(levels, [train_counts, val_counts], p.tokenizer)
  baselines = unigram_summary(layout, train_counts, val_counts)
  baselines.update(train_num_images=train_counts.num_images,
                   codes=os.path.abspath(p.codes), codebook_size_source=source)
  if saved is not None and saved["layout"] != layout:
    raise ValueError(f"the codes of this config ({layout.describe()}) differ from those "
                     f"the prior in {workdir} was trained on ({saved['layout'].describe()}, "
                     f"{os.path.join(workdir, CODES_FILE)}): pass the same "
                     "--config.prior.codes (and tokenizer), or another --workdir.")
  if workdir is not None and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CODES_FILE)
    with open(path + ".tmp", "w") as f:
      json.dump({"layout": layout.to_json(), "baselines": baselines, "files": files,
                 "tokenizer": p.tokenizer}, f, indent=2)
    os.replace(path + ".tmp", path)
  return layout, baselines


# -- the loop -----------------------------------------------------------------------


def _mean(history: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the prior (resuming from workdir's latest checkpoint), evaluates,
  samples. Returns the final metrics (also workdir/eval/metrics.json).

  Every train.log_every steps: the means of the step metrics; every
  train.eval_every steps (0: only at the end) the validation NLL; checkpoints
  every train.checkpoint_every steps and at the end; then
  config.sample.num_samples samples (workdir/samples, `sample.write_samples`).
  """
  started = time.monotonic()
  config_lib.validate(config)
  config_lib.validate_mode(config, "train")
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  is_main = jax.process_index() == 0
  checkpointing.check_writable(workdir)
  writer = writers.create_writer(workdir, just_logging=not is_main)

  layout, baselines = prepare(config, workdir)
  logging.info("codes %s: %s; %d training images; unigram %.4f bits per code",
               config.prior.codes, layout.describe(), baselines["train_num_images"],
               baselines["unigram_bits_per_code"])
  model = create_model(config.prior, layout)
  tx = create_optimizer(config)
  state = create_state(model, tx, layout.seq_len, config.seed)
  train_iter = data.train_iterator(
      config.prior.codes, layout,
      batch_size=config.train.batch_size // jax.process_count(), seed=config.seed,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  manager = checkpointing.create_manager(workdir, config)
  state, train_iter = checkpointing.restore_latest(
      manager, state, train_iter, sharding=parallel.replicated(mesh))
  initial_step = int(state.step)
  if initial_step:
    logging.info("Resumed from checkpoint at step %d.", initial_step)
  else:
    logging.info("prior: %s parameters (%s).", f"{count_params(state.params):,}",
                 ", ".join(f"{k}={v}" for k, v in sorted(config.prior.items())))
    writer.write_hparams({k: v for k, v in config.prior.items()
                          if isinstance(v, (int, float, str, bool))})
  state = parallel.replicate(state, mesh)
  step_fn = jit_train_step(mesh, layout, learning_rate_schedule(config))
  evaluator = evaluate.Evaluator(config, model, layout, mesh)

  t = config.train
  report = writers.periodic_actions().ReportProgress(
      num_train_steps=t.num_steps, writer=writer, every_steps=t.log_every, every_secs=None)
  history, step = [], initial_step
  try:
    while step < t.num_steps:
      with report.timed("data", wait_jax_async_dispatch=False):
        batch = parallel.global_batch(next(train_iter), mesh)
      with report.timed("train_step"):
        state, metrics = step_fn(state, batch)
      history.append(metrics)
      step += 1
      if step == initial_step + 1:
        jax.block_until_ready(metrics)
        logging.info("First train step done %.1f s after start.", time.monotonic() - started)
      report(step)
      is_last = step == t.num_steps
      if step % t.log_every == 0 or is_last:
        summary = _mean(history)
        history = []
        if not np.isfinite(summary["loss"]):
          raise FloatingPointError(
              f"the prior's loss is {summary['loss']} at step {step}; the last checkpoint "
              f"is step {manager.latest_step()}. Lower config.train.learning_rate.")
        writer.write_scalars(step, summary)
      if t.eval_every and step % t.eval_every == 0 and not is_last:
        with report.timed("eval"):
          evaluate.evaluate_params(config, evaluator, state.params, step, baselines,
                                   writer=writer)
      if manager.should_save(step) or is_last:
        with report.timed("checkpoint"):
          checkpointing.save(manager, step, state, train_iter, force=is_last)
  finally:
    manager.wait_until_finished()
  result = evaluate.evaluate_params(config, evaluator, state.params, step, baselines,
                                    writer=writer, workdir=workdir)
  if config.sample.num_samples:
    sample_state(config, workdir, model, layout, state.params, step, writer)
  writer.close()  # tensorboardX writes its queue only on close
  return result


# -- --mode=eval / --mode=sample ----------------------------------------------------


def restore(config: ml_collections.ConfigDict, workdir: str, mesh, mode: str):
  """(layout, baselines, model, state, step) of workdir's checkpoint
  config.eval.checkpoint_step (-1: latest). --mode=eval checks the config's
  codes files against codes.json (`prepare`); --mode=sample reads only the workdir."""
  saved = read_codes_json(workdir)
  if saved is None:
    raise FileNotFoundError(f"no {CODES_FILE} in {workdir}: train the prior first "
                            "(python -m vqjax.main --config=configs/prior.py --workdir=... "
                            "--config.prior.codes=...).")
  if mode == "eval":
    layout, baselines = prepare(config, workdir)
  else:
    layout, baselines = saved["layout"], saved["baselines"]
  model = create_model(config.prior, layout)
  abstract = jax.eval_shape(lambda: create_state(model, create_optimizer(config),
                                                 layout.seq_len, config.seed))
  abstract = checkpointing.abstract_like(abstract, parallel.replicated(mesh))
  manager = checkpointing.create_manager(workdir, config, read_only=True)
  state, step = checkpointing.restore_state(manager, abstract, config.eval.checkpoint_step)
  return layout, baselines, model, state, step


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=eval: the validation NLL of a checkpoint -> workdir/eval/metrics.json."""
  config_lib.validate(config)
  config_lib.validate_mode(config, "eval")
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  layout, baselines, model, state, step = restore(config, workdir, mesh, "eval")
  writer = writers.create_writer(workdir, just_logging=jax.process_index() != 0)
  result = evaluate.evaluate_params(config, evaluate.Evaluator(config, model, layout, mesh),
                                    state.params, step, baselines, writer=writer,
                                    workdir=workdir)
  writer.close()
  return result


def sample_state(config, workdir: str, model, layout: Layout, params, step: int,
                 writer=None) -> dict:
  """config.sample.num_samples samples of params -> config.sample.output
  (default workdir/samples): samples.array_record, samples.png (with a tokenizer)."""
  s = config.sample
  tokens = sample.draw(params, layout, model, s)
  if jax.process_index() != 0:
    return {"tokens": tokens}
  out_dir = s.output or os.path.join(workdir, "samples")
  out = sample.write_samples(tokens, layout, out_dir, tokenizer=config.prior.tokenizer,
                             step=step, writer=writer)
  if s.get("fid", "") and out["images"] is not None:
    out["fid"] = sample.samples_fid(out["images"], config.prior.tokenizer, s.fid,
                                    config.eval.get("inception_weights", ""))
    out["fid"]["checkpoint_step"] = int(step)
    with open(os.path.join(out_dir, "fid.json"), "w") as f:
      json.dump(out["fid"], f, indent=2)
    if writer is not None:
      writer.write_scalars(step, {f"samples/fid_{s.fid}": out["fid"]["value"]})
    logging.info("Fréchet distance (%s) of %d samples to %d validation images: %.4g",
                 s.fid, len(out["images"]), out["fid"]["num_real_images"], out["fid"]["value"])
  return dict(out, tokens=tokens)


def sample_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=sample: draws config.sample.num_samples samples of a checkpoint (the
  codes files are not read: the layout is the one in workdir/codes.json)."""
  config_lib.validate(config)
  layout, _, model, state, step = restore(config, workdir, parallel.create_mesh(), "sample")
  writer = writers.create_writer(workdir, just_logging=jax.process_index() != 0)
  out = sample_state(config, workdir, model, layout, state.params, step, writer)
  writer.close()
  return out


def run(config: ml_collections.ConfigDict, workdir: str, mode: str):
  """vqjax.main's --mode for a prior config: train | eval | sample."""
  return {"train": train_and_evaluate, "eval": evaluate_checkpoint,
          "sample": sample_checkpoint}[mode](config, workdir)
