"""The prior's validation negative log-likelihood, against the unigram baseline.

NLL of a validation image = the sum over its tokens of -log2 p(token | the
tokens before it), p over the position's own segment (its level's and entry's
K codes; `model.segment_log_probs`). metrics.json (workdir/eval/):

  nll_bits_per_image        mean over validation images of that sum (and _std)
  bits_per_code             all validation tokens' bits / their number: compares
                            priors over different numbers of codes
  unigram_bits_per_code     entropy of the training codes' empirical unigram (per
                            level and entry; `layout.unigram_summary`): the
                            baseline a prior must beat
  unigram_validation_bits_per_code  the validation codes under that unigram
                            (add-one smoothing): the same kind of number as
                            bits_per_code
  uniform_bits_per_code     log2 K: what the codes cost with no model at all
  (each *_per_code also as *_per_image), tokens_per_image, num_images,
  train_num_images, vocab_size, codebook_size_source, and `levels` {name:
  shape, code_shape, codebook_size, num_tokens (per image), the same fields}.

Overall per-code values weight the levels by their tokens per image.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from vqjax import config_lib, parallel
from vqjax.prior import data
from vqjax.prior.layout import Layout
from vqjax.prior.model import segment_mask, shift_right, token_nll

LN2 = math.log(2.0)


def eval_step(params, batch: dict, *, model, layout: Layout) -> jax.Array:
  """float32 [B, L]: each image's NLL (nats) summed over the tokens of each level."""
  tokens = batch["tokens"]
  logits = model.apply({"params": params}, shift_right(tokens, layout.bos), train=False)
  nll = token_nll(logits, tokens, segment_mask(layout.lo, layout.hi, layout.num_code_tokens))
  return nll @ jax.nn.one_hot(layout.level_index, len(layout.levels), dtype=nll.dtype)


class Evaluator:
  """The eval step jitted once (batch sharded over `data`, params replicated).

  Call with (params, path) -> per-image NLL in nats per level, float64 [N, L]
  over the codes file at `path`.
  """

  def __init__(self, config, model, layout: Layout, mesh):
    self.config, self.layout, self.mesh = config, layout, mesh
    self.step = jax.jit(functools.partial(eval_step, model=model, layout=layout),
                        in_shardings=(parallel.replicated(mesh), parallel.data_sharding(mesh)),
                        out_shardings=parallel.data_sharding(mesh))

  def __call__(self, params, path: str) -> np.ndarray:
    local = self.config.eval.batch_size // jax.process_count()
    out = []
    for local_batch in data.eval_batches(path, self.layout, batch_size=local,
                                         shard_index=jax.process_index(),
                                         shard_count=jax.process_count()):
      batch = parallel.global_batch(local_batch, self.mesh)
      nll = multihost_utils.process_allgather(self.step(params, batch), tiled=True)
      mask = multihost_utils.process_allgather(batch["mask"], tiled=True)
      out.append(np.asarray(nll, np.float64)[np.asarray(mask)])
    if not out or not sum(len(o) for o in out):
      raise ValueError(f"the validation codes file {path} holds no records.")
    return np.concatenate(out)


def summarize(layout: Layout, nll_nats: np.ndarray, baselines: dict, step: int,
              extra: dict | None = None) -> dict:
  """metrics.json (module docstring) of per-image, per-level NLL [N, L] in nats."""
  bits = nll_nats / LN2                      # [N, L]
  per_image = bits.sum(1)
  result = dict(
      checkpoint_step=int(step), num_images=int(bits.shape[0]),
      tokens_per_image=layout.seq_len, vocab_size=layout.vocab_size,
      nll_bits_per_image=float(per_image.mean()), nll_bits_per_image_std=float(per_image.std()),
      bits_per_code=float(per_image.mean() / layout.seq_len))
  result.update({k: v for k, v in baselines.items() if k != "levels"})
  result.update(extra or {})
  levels = {}
  for i, l in enumerate(layout.levels):
    levels[l.name] = dict(
        shape=list(l.shape), code_shape=list(l.code_shape), codebook_size=l.codebook_size,
        num_tokens=l.num_tokens, nll_bits_per_image=float(bits[:, i].mean()),
        bits_per_code=float(bits[:, i].mean() / l.num_tokens),
        **baselines["levels"][l.name])
    for key in ("unigram_bits_per_code", "unigram_validation_bits_per_code",
                "uniform_bits_per_code"):
      if key in levels[l.name]:
        levels[l.name][key.replace("_per_code", "_per_image")] = (
            levels[l.name][key] * l.num_tokens)
  result["levels"] = levels
  return result


def log_line(result: dict) -> str:
  line = (f"{result['nll_bits_per_image']:.1f} bits per image, "
          f"{result['bits_per_code']:.4f} bits per code (unigram "
          f"{result['unigram_bits_per_code']:.4f}")
  if "unigram_validation_bits_per_code" in result:
    line += f", on validation {result['unigram_validation_bits_per_code']:.4f}"
  line += f", uniform {result['uniform_bits_per_code']:.4f})"
  return line + "; " + ", ".join(f"{n} {v['bits_per_code']:.4f}"
                                 for n, v in result["levels"].items())


def scalars(result: dict) -> dict[str, float]:
  out = {f"eval/{k}": result[k] for k in ("nll_bits_per_image", "bits_per_code",
                                          "unigram_bits_per_code")}
  for name, v in result["levels"].items():
    out[f"eval/{name}/bits_per_code"] = v["bits_per_code"]
  return out


def write_metrics(result: dict, workdir: str) -> str:
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "metrics.json")
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(path + ".tmp", path)
  logging.info("wrote %s", path)
  return path


def evaluate_params(config, evaluator: Evaluator, params, step: int, baselines: dict,
                    *, extra: dict | None = None, writer=None, workdir: str | None = None
                    ) -> dict:
  """Validation NLL of `params`; logged, to TensorBoard with a writer, and to
  workdir/eval/metrics.json with a workdir (process 0)."""
  path = config_lib.prior_validation_codes(config)
  result = summarize(evaluator.layout, evaluator(params, path), baselines, step,
                     dict(extra or {}, validation_codes=os.path.abspath(path)))
  logging.info("prior eval @ step %d on %d images: %s", step, result["num_images"],
               log_line(result))
  if writer is not None:
    writer.write_scalars(step, scalars(result))
  if workdir is not None and jax.process_index() == 0:
    write_metrics(result, workdir)
  return result
