"""Sampling the prior, position by position, and decoding the samples to images.

`make_sampler` jits one fixed-length loop (`lax.fori_loop` over the T
positions of the layout): at position t the transformer, with its key/value
cache (`PriorTransformer(decode=True)`), reads the previous token (BOS at t = 0)
and gives position t's logits; they are restricted to t's segment, divided by
the temperature, cut to the top_k most likely tokens (top_k > 0) and sampled
with the PRNG key folded with t. temperature 0 or top_k 1 is greedy (argmax); a
fixed seed gives the same samples for the same batch size. `sample_tokens_uncached`
reruns the whole [B, T] buffer at every step instead (T full causal passes,
quadratic in T): the reference the cached sampler is tested against.

`samples_fid`: the Fréchet distance (config.sample.fid) of decoded samples to the
tokenizer's validation images. `write_samples` decodes the codes with the tokenizer (`vqjax.load(...)
.decode`), writes samples.png (a grid), the codes as a codes file
(samples.array_record, the format of vqjax.export: `--mode=decode` reads it)
and the images to TensorBoard.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vqjax import export, inference, plots
from vqjax.prior.layout import Layout
from vqjax.prior.model import init_cache, segment_mask, shift_right


def choose(logits: jax.Array, key: jax.Array, *, temperature: float, top_k: int) -> jax.Array:
  """int32 [B]: a token per row of logits [B, V] (-inf = not allowed)."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k > 0:
    values, indices = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))
    pick = jax.random.categorical(key, values, axis=-1)
    return jnp.take_along_axis(indices, pick[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _choose_at(t, logits, key, layout: Layout, temperature: float, top_k: int):
  """Position t's token from its logits [B, V]: t's segment only (module docstring)."""
  lo, hi = jnp.asarray(layout.lo), jnp.asarray(layout.hi)
  allowed = segment_mask(lo[t], hi[t], layout.num_code_tokens)
  logits = jnp.where(allowed, logits, -jnp.inf)
  return choose(logits, jax.random.fold_in(key, t), temperature=temperature, top_k=top_k)


def sample_tokens(params, key: jax.Array, *, model, layout: Layout, batch_size: int,
                  temperature: float, top_k: int) -> jax.Array:
  """int32 [batch_size, seq_len] tokens drawn from the prior, one cached step per
  position (module docstring)."""
  decoder = model.clone(decode=True)
  start = jnp.broadcast_to(jnp.asarray(layout.lo), (batch_size, layout.seq_len))

  def step(t, carry):
    tokens, cache, previous = carry                      # previous: int32 [B]
    logits, variables = decoder.apply({"params": params, "cache": cache},
                                      previous[:, None], train=False, mutable=["cache"])
    token = _choose_at(t, logits[:, 0], key, layout, temperature, top_k)
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, token, t, axis=1)
    return tokens, variables["cache"], token

  bos = jnp.full((batch_size,), layout.bos, jnp.int32)
  carry = (start, init_cache(model, batch_size), bos)
  return jax.lax.fori_loop(0, layout.seq_len, step, carry)[0]


def sample_tokens_uncached(params, key: jax.Array, *, model, layout: Layout,
                           batch_size: int, temperature: float, top_k: int) -> jax.Array:
  """As `sample_tokens`, by a full causal pass over the [B, T] buffer per position."""
  start = jnp.broadcast_to(jnp.asarray(layout.lo), (batch_size, layout.seq_len))

  def step(t, tokens):
    logits = model.apply({"params": params}, shift_right(tokens, layout.bos), train=False)
    logits = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)  # [B, V]
    token = _choose_at(t, logits, key, layout, temperature, top_k)
    return jax.lax.dynamic_update_index_in_dim(tokens, token, t, axis=1)

  return jax.lax.fori_loop(0, layout.seq_len, step, start)


def make_sampler(model, layout: Layout, *, batch_size: int, temperature: float,
                 top_k: int):
  """(params, key) -> int32 [batch_size, seq_len], jitted once (one device)."""
  return jax.jit(functools.partial(sample_tokens, model=model, layout=layout,
                                   batch_size=batch_size, temperature=float(temperature),
                                   top_k=int(top_k)))


def draw(params, layout: Layout, model, sample_config) -> np.ndarray:
  """int32 [num_samples, seq_len]: sample_config.num_samples tokens in batches of
  sample_config.batch_size; batch i uses fold_in(PRNGKey(seed), i)."""
  s = sample_config
  sampler = make_sampler(model, layout, batch_size=s.batch_size,
                         temperature=s.temperature, top_k=s.top_k)
  params = jax.device_put(params, jax.local_devices()[0])
  key = jax.random.PRNGKey(s.seed)
  out = [np.asarray(sampler(params, jax.random.fold_in(key, i)))
         for i in range(-(-s.num_samples // s.batch_size))]
  return np.concatenate(out)[:s.num_samples]


def samples_fid(images: np.ndarray, tokenizer: str, fid_network: str,
                inception_weights: str = "") -> dict:
  """`perceptual.image_set_fid` of decoded samples uint8 [N, H, W, 3] against the
  tokenizer's validation images (the crops its evaluation reads)."""
  from vqjax import perceptual  # pylint: disable=import-outside-toplevel
  data_config = inference.load_config(tokenizer).data
  real = np.stack([image for _, image in export.split_records(data_config, "validation")])
  return perceptual.image_set_fid(real, images, fid_network, inception_weights)


def write_samples(tokens: np.ndarray, layout: Layout, out_dir: str, *, tokenizer: str = "",
                  step: int = 0, writer=None, ncols: int = 8) -> dict:
  """Writes the samples' codes (samples.array_record) and, with a tokenizer
  workdir, their images (samples.png, TensorBoard 'samples'). Returns
  {'codes': path, 'png': path or None, 'images': uint8 [N, H, W, 3] or None}."""
  os.makedirs(out_dir, exist_ok=True)
  codes = layout.codes(tokens)
  out = {"codes": export.write_codes_file(
      os.path.join(out_dir, "samples.array_record"), codes,
      [f"sample/{i}" for i in range(len(tokens))]),
         "png": None, "images": None}
  if not tokenizer:
    logging.info("wrote %d sampled codes to %s (no prior.tokenizer: not decoded; "
                 "--mode=decode of the tokenizer decodes them)", len(tokens), out["codes"])
    return out
  images = inference.load(tokenizer, batch_size=min(len(tokens), 16)).decode(codes)
  out["images"] = images
  out["png"] = os.path.join(out_dir, "samples.png")
  plots.save_image_grid(images, out["png"], ncols=ncols)
  if writer is not None:
    writer.write_images(step, {"samples": images})
  logging.info("wrote %d samples to %s and %s", len(images), out["png"], out["codes"])
  return out
