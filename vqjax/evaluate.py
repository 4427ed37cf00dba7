"""Evaluation of a checkpoint (or of an in-memory state) over the validation split.

Reports per-image PSNR (pixels on [0, 1], reconstructions clipped), MSE (on
[0, 1]) and SSIM (`metrics.per_image_ssim`) as mean and std, and per quantizer
level the dataset-wide code histogram, perplexity = exp(entropy), normalized
perplexity = perplexity / K, unused codes, Gini coefficient and Lorenz curve;
stochastic levels add the soft perplexity of the data-set posterior marginal,
the mean posterior entropy and s^2. `config.eval.lpips` adds per-image LPIPS
and `config.eval.fid` a Fréchet distance named by its feature network
(`fid_lpips_alex`: the offline stand-in), both computed in the eval step
(vqjax/perceptual). Grouped levels (MGVQ) keep one histogram of
K codes, group i's K/G codes at offset i K/G, and add the usage of each group
under `levels.<level>.groups.group_<i>` (perplexity / (K/G) as its
normalized_perplexity); grouped models add `psnr_first_k_groups` {k: {mean,
std}}, the PSNR when every level decodes from only its first k groups (k =
1..G, the rest zeros); SEMANTICIST models add `psnr_first_k_tokens` {k: {mean,
std}} and `variance_explained_first_k_tokens` {k: EV}, the DDIM reconstruction
from the first k tokens (the rest null) for k in eval.first_k_tokens (() = 1..T),
EV(k) = 1 - sum_i |x_i - x_hat_i(k)|^2 / sum_i |x_i - mean image|^2 on the
[0, 1] pixels of the validation set; with eval.lpips on, both kinds add the
per-image LPIPS of the same reconstructions, `lpips_first_k_groups` and
`lpips_first_k_tokens` {k: {mean, std}}. FSQ/LFQ levels count their implicit codebook of
prod(levels) / 2^D codes (config_lib.MAX_HISTOGRAM_CODES bounds it). Writes
`workdir/eval/metrics.json`, `reconstructions.png` and `lorenz.png` (SEMANTICIST
also `first_k_tokens.png`).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.scipy.special import entr
from jax.experimental import multihost_utils

from vqjax import checkpointing, data, metrics, parallel, plots, writers
from vqjax.models import create_model, level_quantizers
from vqjax.models.factory import SEMANTICIST, num_groups
from vqjax.perceptual import PerceptualMetrics
from vqjax.quantizers import COLLECTION
from vqjax.state import create_state_for


def _gather(x: jax.Array) -> np.ndarray:
  """A batch-sharded global array -> the whole array on every host."""
  return multihost_utils.process_allgather(x, tiled=True)


def dataset_name(data_config: ml_collections.ConfigDict) -> str:
  if data_config.name == "tfds":
    return f"tfds:{data_config.tfds_name}"
  if data_config.name == "folder":
    return f"folder:{data_config.val_dir or data_config.train_dir}"
  return data_config.name


def eval_step(params, codebook, counts: dict, batch: dict, key=None, perceptual_params=None,
              *, model, quantizers: dict, perceptual: PerceptualMetrics | None = None) -> dict:
  """Frozen-codebook forward pass over one batch.

  Returns per-image `psnr` and `mse` [B] (pixels on [0, 1]), the reconstructions
  `x_hat` [B, H, W, 3] in [-1, 1], `counts` and `variance`. counts: the running
  per-level code histograms {level: [K]} (float32) plus this batch's codes of
  the images with batch['mask'] True; for a level whose quantizer returns a
  `posterior` [B, ..., K] (stochastic), counts may also hold '<level>/posterior'
  [K] (the summed posterior: the soft histogram) and '<level>/entropy' [] (the
  summed posterior entropy in nats), which are accumulated the same way.
  variance: {level: s^2 []} of the stochastic levels. key: the `sample` PRNG
  stream (sq_eval_mode='sample'); batch['image'] as in the train step.
  quantizers: {level: quantizer} (`level_quantizers`): a level's codes are
  counted in its joint index space (`flat_codes`, histogram_size entries:
  grouped group i at offset i K/G, residual stage l at l K). perceptual (with
  its weights perceptual_params) adds `perceptual`: per-image LPIPS [B] and FID
  features of x and x_hat [B, d] (`PerceptualMetrics.apply`).
  """
  x = data.to_model_range(batch["image"])
  rngs = {} if key is None else {"sample": key}
  x_hat, aux = model.apply({"params": params, COLLECTION: codebook}, x, train=False,
                           rngs=rngs)
  new_counts, variance = dict(counts), {}
  mask = batch["mask"].astype(jnp.float32)
  for name, level in aux["levels"].items():
    idx = quantizers[name].flat_codes(level["indices"]).reshape(x.shape[0], -1)
    weights = jnp.broadcast_to(mask[:, None], idx.shape)
    new_counts[name] = counts[name] + jax.ops.segment_sum(
        weights.reshape(-1), idx.reshape(-1), num_segments=counts[name].shape[0])
    if "posterior" not in level:
      continue
    variance[name] = level["metrics"]["variance"]
    post = level["posterior"].reshape(x.shape[0], -1, level["posterior"].shape[-1])
    post = post.astype(jnp.float32) * mask[:, None, None]
    if f"{name}/posterior" in counts:
      new_counts[f"{name}/posterior"] = counts[f"{name}/posterior"] + jnp.sum(post, (0, 1))
    if f"{name}/entropy" in counts:
      new_counts[f"{name}/entropy"] = counts[f"{name}/entropy"] + jnp.sum(entr(post))
  out = dict(psnr=metrics.per_image_psnr(x, x_hat), mse=metrics.per_image_mse(x, x_hat),
             counts=new_counts, x_hat=x_hat, variance=variance)
  if perceptual is not None:
    out["perceptual"] = perceptual.apply(perceptual_params, x, x_hat)
  return out


def first_k_groups_step(params, codebook, batch: dict, perceptual_params=None, *,
                        models: dict, perceptual: PerceptualMetrics | None = None) -> dict:
  """{'psnr': {k: per-image PSNR [B]}} of the models decoding from the first k
  groups; with perceptual (LPIPS on) also 'lpips': {k: per-image LPIPS [B]}."""
  x = data.to_model_range(batch["image"])
  out = {"psnr": {}, **({"lpips": {}} if perceptual is not None else {})}
  for k, model in models.items():
    x_hat, _ = model.apply({"params": params, COLLECTION: codebook}, x, train=False)
    out["psnr"][k] = metrics.per_image_psnr(x, x_hat)
    if perceptual is not None:
      out["lpips"][k] = perceptual.lpips_of(perceptual_params, x, x_hat)
  return out


def first_k_tokens_step(params, codebook, batch: dict, k, perceptual_params=None, *, model,
                        perceptual: PerceptualMetrics | None = None) -> dict:
  """Per-image `psnr` and `mse` [B] of the reconstructions from the first k tokens
  (k [] int32, traced: one compilation for every k); with perceptual (LPIPS on)
  also `lpips` [B]."""
  x = data.to_model_range(batch["image"])
  variables = {"params": params, COLLECTION: codebook}
  codes = model.apply(variables, x, method="encode_codes")
  x_hat = model.apply(variables, codes, num_tokens=k, method="decode_codes")
  out = dict(psnr=metrics.per_image_psnr(x, x_hat), mse=metrics.per_image_mse(x, x_hat))
  if perceptual is not None:
    out["lpips"] = perceptual.lpips_of(perceptual_params, x, x_hat)
  return out


def token_ladder(config) -> tuple[int, ...]:
  """The k of the first-k-tokens curve: eval.first_k_tokens, () = 1..T (sorted, T included)."""
  t = int(config.model.num_tokens)
  ks = tuple(config.eval.get("first_k_tokens", ()) or range(1, t + 1))
  if any(not 1 <= int(k) <= t for k in ks):
    raise ValueError(f"bad config: eval.first_k_tokens={ks} must lie in [1, {t}] "
                     "(model.num_tokens).")
  return tuple(sorted({int(k) for k in ks} | {t}))


class Evaluator:
  """The eval step, jitted once per run: every evaluation reuses the compiled step.

  Call with (params, codebook) -> (per-image psnr [N], mse [N], per-level code
  counts {level: int64 [K]}, (originals, reconstructions) of the first
  `config.eval.num_grid_images` images in [-1, 1], extra). extra: per-image
  `ssim` [N] and, per stochastic level, {'posterior': [K] summed posterior,
  'entropy': mean posterior entropy per position (nats), 'variance': s^2};
  grouped models add 'psnr_first_k_groups' {k: per-image PSNR [N]}, k = 1..G;
  'perceptual': the metrics.json entries of config.eval.lpips / .fid
  (`perceptual.Accumulator.summary`; {} when both are off);
  SEMANTICIST models 'psnr_first_k_tokens' {k: per-image PSNR [N]} and
  'variance_explained_first_k_tokens' {k: EV} (`token_ladder`; k = T is the main
  reconstruction); with eval.lpips on, both kinds add 'lpips_first_k_groups' /
  'lpips_first_k_tokens' {k: per-image LPIPS [N]}.
  The histograms are summed on the device (float32 counts are exact below
  2**24 per code). `step(params, codebook, counts, batch, key=None)` is the
  jitted eval_step.
  """

  def __init__(self, config: ml_collections.ConfigDict, model, mesh):
    self.config, self.mesh = config, mesh
    quantizers = level_quantizers(config.model)
    self.num_codes = {name: q.histogram_size for name, q in quantizers.items()}
    self.stochastic = config.model.quantizer.kind == "stochastic"
    repl, batch_sharding = parallel.replicated(mesh), parallel.data_sharding(mesh)
    self.perceptual = PerceptualMetrics.from_config(config.eval)
    perceptual = self.perceptual if self.perceptual.enabled else None
    jitted = jax.jit(
        functools.partial(eval_step, model=model, quantizers=quantizers, perceptual=perceptual),
        in_shardings=(repl, repl, repl, batch_sharding, repl, repl),
        out_shardings=dict(psnr=batch_sharding, mse=batch_sharding, counts=repl,
                           x_hat=batch_sharding, variance=repl,
                           **({"perceptual": batch_sharding} if perceptual else {})),
        donate_argnums=2)
    perceptual_params = parallel.replicate(self.perceptual.params, mesh)
    lpips_only = self.perceptual if self.perceptual.lpips else None  # for the first-k curves
    self.first_k = None  # grouped: the first k groups' PSNR (and LPIPS), k = 1..G
    groups = num_groups(config.model)
    if groups > 1:
      models = {k: create_model(config.model, active_groups=k) for k in range(1, groups + 1)}
      first_k = jax.jit(functools.partial(first_k_groups_step, models=models,
                                          perceptual=lpips_only),
                        in_shardings=(repl, repl, batch_sharding, repl),
                        out_shardings=batch_sharding)
      self.first_k = lambda params, codebook, batch: first_k(params, codebook, batch,
                                                             perceptual_params)
    self.token_ks, self.first_k_tokens = (), None
    if config.model.kind == SEMANTICIST:
      self.token_ks = token_ladder(config)
      first_k_tokens = jax.jit(
          functools.partial(first_k_tokens_step, model=model, perceptual=lpips_only),
          in_shardings=(repl, repl, batch_sharding, repl, repl), out_shardings=batch_sharding)
      self.first_k_tokens = lambda params, codebook, batch, k: first_k_tokens(
          params, codebook, batch, k, perceptual_params)
    self._base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)
    self.step = lambda params, codebook, counts, batch, key=None: jitted(
        params, codebook, counts, batch, self._base_key if key is None else key,
        perceptual_params)

  def _zero_counts(self) -> dict:
    counts = {name: jnp.zeros((k,), jnp.float32) for name, k in self.num_codes.items()}
    if self.stochastic:
      for name, k in self.num_codes.items():
        counts[f"{name}/posterior"] = jnp.zeros((k,), jnp.float32)
        counts[f"{name}/entropy"] = jnp.zeros((), jnp.float32)
    return parallel.replicate(counts, self.mesh)

  def _first_k_tokens(self, params, codebook, batch, mask, out) -> dict:
    """{k: {'psnr', 'mse'[, 'lpips']: per-image [n]}} of the batch's valid images,
    k = T from `out` (the main reconstruction)."""
    valid = lambda v: np.asarray(_gather(v))[mask]
    t = self.token_ks[-1]
    result = {t: {"psnr": valid(out["psnr"]), "mse": valid(out["mse"])}}
    if self.perceptual.lpips:
      result[t]["lpips"] = valid(out["perceptual"]["lpips"])
    for k in self.token_ks[:-1]:
      o = self.first_k_tokens(params, codebook, batch,
                              parallel.replicate(np.asarray(k, np.int32), self.mesh))
      result[k] = {name: valid(v) for name, v in o.items()}
    return result

  def __call__(self, params, codebook):
    config = self.config
    counts = self._zero_counts()
    psnr, mse, ssim, grid, variance, first_k = [], [], [], None, {}, []
    perceptual = self.perceptual.accumulator()
    tokens_k, moments = [], None  # first-k tokens; [sum x, sum x^2] per pixel on [0, 1]
    batches = data.create_eval_batches(
        config.data,
        batch_size=data.per_process_batch_size(config.eval.batch_size,
                                                         jax.process_count()),
        shard_index=jax.process_index(), shard_count=jax.process_count())
    for i, local in enumerate(batches):
      batch = parallel.global_batch(local, self.mesh)
      out = self.step(params, codebook, counts, batch,
                      jax.random.fold_in(self._base_key, i))
      counts, variance = out["counts"], out["variance"]
      mask = np.asarray(_gather(batch["mask"]))
      if self.first_k is not None:
        first_k.append(jax.tree.map(lambda v: np.asarray(_gather(v))[mask],
                                    self.first_k(params, codebook, batch)))
      if "perceptual" in out:
        perceptual.add(jax.tree.map(lambda v: np.asarray(_gather(v)), out["perceptual"]), mask)
      psnr.append(np.asarray(_gather(out["psnr"]))[mask])
      mse.append(np.asarray(_gather(out["mse"]))[mask])
      images = data.to_model_range(np.asarray(_gather(batch["image"])))[mask]
      x_hat = np.asarray(_gather(out["x_hat"]))[mask]
      ssim.append(metrics.per_image_ssim(images, x_hat))
      if self.first_k_tokens is not None:
        tokens_k.append(self._first_k_tokens(params, codebook, batch, mask, out))
        unit = (images.astype(np.float64) + 1.0) / 2.0
        sums = np.stack([unit.sum(0), (unit ** 2).sum(0)])
        moments = sums if moments is None else moments + sums
      if grid is None:
        n = min(config.eval.num_grid_images, len(images))
        grid = (images[:n], x_hat[:n])
    if not psnr:
      raise ValueError("the validation split is empty: check config.data.")
    counts = jax.device_get(counts)
    hard = {name: np.rint(np.asarray(counts[name])).astype(np.int64) for name in self.num_codes}
    levels = {}
    for name, s2 in jax.device_get(variance).items():
      soft = np.asarray(counts[f"{name}/posterior"], np.float64)
      levels[name] = dict(posterior=soft, variance=float(s2),
                          entropy=float(counts[f"{name}/entropy"]) / max(soft.sum(), 1.0))
    extra = dict(ssim=np.concatenate(ssim), levels=levels, perceptual=perceptual.summary())
    for name in first_k[0] if first_k else ():   # 'psnr', 'lpips'
      extra[f"{name}_first_k_groups"] = {k: np.concatenate([b[name][k] for b in first_k])
                                         for k in first_k[0][name]}
    if tokens_k:
      n = sum(len(p) for p in psnr)
      total = float(np.sum(moments[1] - moments[0] ** 2 / n))  # sum_i |x_i - mean|^2
      values = moments[0].size  # pixels x channels: per_image_mse is a mean over them
      per_k = {k: {name: np.concatenate([b[k][name] for b in tokens_k]) for name in tokens_k[0][k]}
               for k in self.token_ks}
      for name in ("psnr", "lpips"):
        if name in per_k[self.token_ks[0]]:
          extra[f"{name}_first_k_tokens"] = {k: v[name] for k, v in per_k.items()}
      extra["variance_explained_first_k_tokens"] = {
          k: 1.0 - float(np.sum(v["mse"])) * values / total for k, v in per_k.items()}
    return np.concatenate(psnr), np.concatenate(mse), hard, grid, extra


FIRST_K_KEYS = ("psnr_first_k_groups", "lpips_first_k_groups", "psnr_first_k_tokens",
                "lpips_first_k_tokens", "variance_explained_first_k_tokens")


def summarize(config, step: int, psnr, mse, counts, extra: dict | None = None) -> dict:
  """The metrics.json dictionary.

  extra (Evaluator): adds `ssim` {mean, std} and, to each stochastic level,
  perplexity_soft (exp H of the data-set posterior marginal), entropy (mean
  posterior entropy per position, nats) and variance (s^2). A level whose
  quantizer has several codebooks side by side (grouped, residual) adds their
  usage (`Quantizer.entries`: `groups` {group_<i>: ...}, `stages` {stage_<l>:
  ...}); grouped models, with extra, `psnr_first_k_groups` {'<k>': {mean, std}}
  (and `lpips_first_k_groups`), SEMANTICIST models `psnr_first_k_tokens`,
  `lpips_first_k_tokens` {'<k>': {mean, std}} and
  `variance_explained_first_k_tokens` {'<k>': EV}.
  extra's 'perceptual' adds `lpips` {mean, std, network} and `fid_<network>`
  {value, features, dim, num_images}.
  """
  result = {
      "checkpoint_step": int(step),
      "num_images": int(psnr.size),
      "dataset": dataset_name(config.data),
      "split": "validation" if config.data.name != "tfds" else config.data.val_split,
      "image_size": int(config.data.image_size),
      "pixel_range": "[0, 1] (reconstructions clipped)",
      "psnr": {"mean": float(psnr.mean()), "std": float(psnr.std())},
      "mse": {"mean": float(mse.mean()), "std": float(mse.std())},
      "levels": {name: metrics.code_usage_summary(c) for name, c in counts.items()},
  }
  model = getattr(config, "model", None)  # absent in configs that only name the data
  for name, q in (level_quantizers(model) if model is not None else {}).items():
    key, names = q.entries
    if names and name in counts:
      parts = np.split(np.asarray(counts[name]), len(names))
      result["levels"][name][key] = {
          entry: metrics.code_usage_summary(c) for entry, c in zip(names, parts)}
  if extra is None:
    return result
  for key in FIRST_K_KEYS:
    if key in extra:
      result[key] = {str(k): ({"mean": float(v.mean()), "std": float(v.std())}
                              if isinstance(v, np.ndarray) else float(v))
                     for k, v in extra[key].items()}
  result["ssim"] = {"mean": float(extra["ssim"].mean()), "std": float(extra["ssim"].std())}
  result.update(extra.get("perceptual", {}))  # 'lpips', 'fid_<network>'
  for name, soft in extra["levels"].items():
    result["levels"][name].update(
        perplexity_soft=metrics.perplexity(soft["posterior"]),
        entropy=soft["entropy"], variance=soft["variance"])
  return result


def _perceptual(result: dict) -> dict:
  """The metrics.json entries of vqjax.perceptual: 'lpips', 'fid_<network>'."""
  return {k: v for k, v in result.items() if k == "lpips" or k.startswith("fid_")}


def evaluate_state(config, evaluator: Evaluator, state, step: int, workdir: str, *,
                   writer=None, write_files: bool = True) -> dict:
  """Evaluates params + frozen codebooks of `state`; optionally writes the files."""
  psnr, mse, counts, grid, extra = evaluator(state.params, state.codebook)
  result = summarize(config, step, psnr, mse, counts, extra)
  line = ", ".join(
      [f"psnr={result['psnr']['mean']:.2f}±{result['psnr']['std']:.2f} dB",
       f"mse={result['mse']['mean']:.5f}", f"ssim={result['ssim']['mean']:.4f}"]
      + [f"lpips={v['mean']:.4f}" if k == "lpips" else f"{k}={v['value']:.3f}"
         for k, v in _perceptual(result).items()]
      + [f"{n}: perplexity={v['perplexity']:.1f} "
         f"({100 * v['normalized_perplexity']:.1f}% of K), unused={v['unused_codes']}"
         for n, v in result["levels"].items()]
      + [f"psnr first {k} groups={v['mean']:.2f} dB"
         for k, v in result.get("psnr_first_k_groups", {}).items()]
      + [f"psnr first {k} tokens={v['mean']:.2f} dB"
         for k, v in result.get("psnr_first_k_tokens", {}).items()]
      + [f"lpips first {k} {unit}={v['mean']:.4f}" for unit in ("groups", "tokens")
         for k, v in result.get(f"lpips_first_k_{unit}", {}).items()])
  logging.info("eval @ step %d on %d images: %s", step, result["num_images"], line)
  if writer is not None:
    scalars = {"eval/psnr": result["psnr"]["mean"], "eval/mse": result["mse"]["mean"],
               "eval/ssim": result["ssim"]["mean"]}
    for name, v in result["levels"].items():
      for key in ("perplexity", "normalized_perplexity", "unused_codes", "gini",
                  "perplexity_soft", "entropy", "variance"):
        if key in v:
          scalars[f"eval/{name}/{key}"] = v[key]
    for k, v in _perceptual(result).items():
      scalars[f"eval/{k}"] = v["mean"] if k == "lpips" else v["value"]
    for metric in ("psnr", "lpips"):
      for unit in ("groups", "tokens"):
        for k, v in result.get(f"{metric}_first_k_{unit}", {}).items():
          scalars[f"eval/{metric}_first_{k}_{unit}"] = v["mean"]
    writer.write_scalars(step, scalars)
    # TensorBoard at every evaluation: originals over reconstructions, and per
    # level the distribution of uses per code (a collapsed codebook piles up at 0).
    writer.write_images(step, {"eval/reconstructions": plots.reconstruction_grid(
        *grid, max_images=config.eval.num_grid_images)[None]})
    writer.write_histograms(step, {f"eval/{name}/uses_per_code": c
                                   for name, c in counts.items()})
  if write_files and jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
      json.dump(result, f, indent=2)
    plots.save_reconstruction_grid(*grid, os.path.join(out_dir, "reconstructions.png"),
                                   max_images=config.eval.num_grid_images)
    plots.save_lorenz_plot(counts, os.path.join(out_dir, "lorenz.png"))
    if "psnr_first_k_tokens" in result:
      lpips_k = result.get("lpips_first_k_tokens")
      plots.save_first_k_plot({"SEMANTICIST": result["psnr_first_k_tokens"]},
                              {"SEMANTICIST": result["variance_explained_first_k_tokens"]},
                              os.path.join(out_dir, "first_k_tokens.png"),
                              lpips={"SEMANTICIST": lpips_k} if lpips_k else None)
    np.savez(os.path.join(out_dir, "code_histograms.npz"), **counts)
    logging.info("wrote %s/{metrics.json,reconstructions.png,lorenz.png}", out_dir)
  return result


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Restores the latest (or config.eval.checkpoint_step) checkpoint and evaluates it."""
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  model = create_model(config.model)
  abstract = jax.eval_shape(lambda: create_state_for(config, model))
  abstract = checkpointing.abstract_like(abstract, parallel.replicated(mesh))
  manager = checkpointing.create_manager(workdir, config, read_only=True)
  state, step = checkpointing.restore_state(manager, abstract,
                                            config.eval.checkpoint_step)
  writer = writers.create_writer(workdir, just_logging=jax.process_index() != 0)
  result = evaluate_state(config, Evaluator(config, model, mesh), state, step, workdir,
                          writer=writer)
  writer.flush()
  return result
