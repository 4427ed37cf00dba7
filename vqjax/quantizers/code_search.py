"""Nearest-code search: index of the closest of K codes for each of N vectors.

Distances are |z|^2 - 2 z.E^T + |E|^2 in float32, ties go to the lowest index.
The search can run over blocks of codes (`chunk_size`, a running min/argmin)
and over blocks of rows (`rows_per_block`, sequential steps whose rows are
strided over N so a batch-sharded z stays sharded), so memory stays bounded
at large K and N (BENCHMARKS.md, "Paper scale"). The EMA, learned and grouped
quantizers search with it, in training and evaluation. The stochastic
quantizer searches with it for its evaluation codes (eval_mode 'det'); its
posterior softmax over the K codes needs the dense [N, K] distances
(`squared_distances`) in every mode, and its training codes are the first
minimum of those (`first_minimum`, the same rule): stochastic.py says which
output needs which.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """|z|^2 - 2 z.E^T + |E|^2 in float32. z: [N, D], codebook: [K, D] -> [N, K]."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  return (jnp.sum(z**2, axis=1, keepdims=True)
          - 2.0 * jnp.dot(z, codebook.T, precision=jax.lax.Precision.HIGHEST)
          + jnp.sum(codebook**2, axis=1)[None, :])


def first_minimum(dist: jax.Array,
                  use_argmin: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """(min [n], index of the first minimum [n] int32) of each row of dist [n, c].

  use_argmin: one variadic (value, index) reduction, a single pass over the
  [n, c] distances (None: on accelerators). Otherwise min + first-equal-index:
  two vectorised reductions, several times faster than XLA:CPU's variadic
  argmin, but two passes. Same result either way; NaN rows give an index in
  range.
  """
  if use_argmin is None:
    use_argmin = jax.default_backend() != "cpu"
  if use_argmin:
    idx = jnp.argmin(dist, axis=1).astype(jnp.int32)
    return jnp.take_along_axis(dist, idx[:, None], axis=1)[:, 0], idx
  best = jnp.min(dist, axis=1)
  num = dist.shape[1]
  idx = jnp.min(jnp.where(dist == best[:, None], jnp.arange(num, dtype=jnp.int32), num), axis=1)
  return best, jnp.minimum(idx, num - 1)  # NaN rows: clamp into range


def _nearest_in_block(z: jax.Array, codes: jax.Array,
                      use_argmin: bool) -> tuple[jax.Array, jax.Array]:
  """(min squared distance [n], index of the first minimum [n]) of z [n, D] over codes [c, D]."""
  return first_minimum(squared_distances(z, codes), use_argmin)


def check_chunk_size(chunk_size: int | None, num_codes: int,
                     key: Callable[[str], str] = lambda name: name) -> None:
  """ValueError unless `nearest_code` can search num_codes codes in blocks of
  chunk_size (0 / None: no blocks; >= num_codes: one block; else a divisor).

  `config_lib.validate` runs it per level, `key` naming the config keys.
  """
  if chunk_size and (chunk_size < 0 or (chunk_size < num_codes and num_codes % chunk_size)):
    raise ValueError(
        f"{key('search_chunk_size')}={chunk_size} must divide {key('num_codes')}="
        f"{num_codes}; pick a divisor of num_codes (e.g. a power of two) or 0 to disable.")


def _nearest_over_code_blocks(z: jax.Array, codebook: jax.Array,
                              chunk_size: int | None, use_argmin: bool) -> jax.Array:
  """Nearest code of z [n, D]; codes scanned in blocks with a running min/argmin."""
  num_codes = codebook.shape[0]
  if chunk_size is None or chunk_size >= num_codes:
    return _nearest_in_block(z, codebook, use_argmin)[1]
  check_chunk_size(chunk_size, num_codes)
  blocks = codebook.reshape(num_codes // chunk_size, chunk_size, -1)

  def scan_block(carry, block_and_offset):
    best_dist, best_idx = carry
    block, offset = block_and_offset
    dist, idx = _nearest_in_block(z, block, use_argmin)
    better = dist < best_dist  # strict: earlier blocks win ties
    return (jnp.where(better, dist, best_dist),
            jnp.where(better, idx + offset, best_idx)), None

  n = z.shape[0]
  init = (jnp.full((n,), jnp.inf, jnp.float32), jnp.zeros((n,), jnp.int32))
  offsets = jnp.arange(0, num_codes, chunk_size, dtype=jnp.int32)
  (_, best_idx), _ = jax.lax.scan(scan_block, init, (blocks, offsets))
  return best_idx


# Distances one device holds at a time on an accelerator: 2**27 float32 = 512 MiB.
# The paper's per-GPU batch (128 at 256x256: 524,288 rows) against K = 8192 codes
# would otherwise materialise a 16 GiB [N, K] matrix.
ACCELERATOR_BLOCK_ELEMENTS = 2**27


def default_rows_per_block(codes_per_block: int, backend: str | None = None,
                           num_devices: int | None = None) -> int:
  """Rows of z per distance block for `nearest_code` (0: all rows at once).

  CPU: 128 rows, so a block stays in cache. Accelerators: one large matrix
  product per block, as many rows as keep each device's [rows, codes_per_block]
  float32 block within ACCELERATOR_BLOCK_ELEMENTS; z is sharded over all
  `num_devices` devices (the data mesh), so the global row count scales with it.
  """
  backend = backend or jax.default_backend()
  if backend == "cpu":
    return 128
  num_devices = num_devices or jax.device_count()
  return max(1, ACCELERATOR_BLOCK_ELEMENTS // codes_per_block) * num_devices


def search_vectors(z_e: jax.Array, code_dim: int) -> jax.Array:
  """A quantizer's input z_e [..., code_dim] as the [N, code_dim] float32 vectors
  it searches; ValueError if its last axis is not code_dim wide."""
  if z_e.shape[-1] != code_dim:
    raise ValueError(f"quantizer input has {z_e.shape[-1]} channels, "
                     f"expected code_dim={code_dim}.")
  return z_e.reshape(-1, code_dim).astype(jnp.float32)


def resolve_rows_per_block(rows_per_block: int, num_codes: int,
                           chunk_size: int | None) -> int:
  """A quantizer's search_rows_per_block setting as `nearest_code` takes it: -1
  (auto) -> `default_rows_per_block` of its blocks of min(K, chunk_size) codes."""
  if rows_per_block >= 0:
    return rows_per_block
  return default_rows_per_block(min(num_codes, chunk_size or num_codes))


def nearest_code(z: jax.Array, codebook: jax.Array, chunk_size: int | None = None,
                 rows_per_block: int | None = None,
                 use_argmin: bool | None = None) -> jax.Array:
  """Index of the nearest code for each row of z, ties to the lowest index.

  Args:
    z: [N, D] vectors (may be sharded over N).
    codebook: [K, D] codes.
    chunk_size: if set and smaller than K, the distances are computed over
      blocks of `chunk_size` codes with a running min/argmin, so memory is
      O(rows * chunk_size) instead of O(rows * K). K must divide by it.
    rows_per_block: process z in `N / rows_per_block` sequential steps of
      `rows_per_block` rows (0 or None: all rows at once). The rows of a step
      are strided over N, so a batch sharded over N stays sharded.
    use_argmin: reduce each distance block with argmin (one pass) instead of
      min + first index (two passes); None: argmin except on CPU, where
      XLA's variadic reduction is slow.

  Returns:
    [N] int32 indices.
  """
  if use_argmin is None:
    use_argmin = jax.default_backend() != "cpu"
  n = z.shape[0]
  if not rows_per_block or rows_per_block >= n:
    return _nearest_over_code_blocks(z, codebook, chunk_size, use_argmin)
  steps = -(-n // rows_per_block)
  while n % steps:  # the smallest number of steps that divides N
    steps += 1
  # Row r * steps + s is handled in step s: each step sees rows from every
  # shard of a batch-sharded z.
  z_steps = jnp.moveaxis(z.reshape(n // steps, steps, -1), 1, 0)
  idx = jax.lax.map(
      lambda zz: _nearest_over_code_blocks(zz, codebook, chunk_size, use_argmin), z_steps)
  return jnp.moveaxis(idx, 0, 1).reshape(n)
