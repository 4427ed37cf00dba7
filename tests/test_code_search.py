"""Nearest-code search (vqjax.quantizers.code_search) against NumPy brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.quantizers import code_search


def np_assign(z, codebook):
  """Brute-force nearest code, ties to the lowest index."""
  d = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
  return d.argmin(1)


@pytest.mark.parametrize("use_argmin", [False, True])  # CPU's and accelerators' reduction
@pytest.mark.parametrize("chunk, rows", [(0, 0), (4, 0), (16, 0), (0, 64), (8, 7)])
def test_assignment_matches_numpy_brute_force_with_ties(chunk, rows, use_argmin):
  rng = np.random.default_rng(0)
  # Small integers: every distance is exact in float32, so ties are real ties.
  codebook = rng.integers(-3, 4, size=(32, 4)).astype(np.float32)
  codebook[7] = codebook[3]          # duplicate codes: exact ties
  codebook[20] = codebook[3]
  codebook[25] = codebook[11]
  z = rng.integers(-3, 4, size=(500, 4)).astype(np.float32)
  z[:50] = codebook[3]               # sits exactly on the tied codes
  z[50:60] = codebook[25]
  got = code_search.nearest_code(jnp.asarray(z), jnp.asarray(codebook), chunk or None, rows,
                                 use_argmin=use_argmin)
  want = np_assign(z, codebook)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert np.all(np.asarray(got)[:50] == 3)
  assert np.all(np.asarray(got)[50:60] == 11)


def test_chunked_search_equals_dense_on_random_floats():
  key1, key2 = jax.random.split(jax.random.key(1))
  z = jax.random.normal(key1, (1000, 8))
  codebook = jax.random.normal(key2, (1024, 8))
  dense = code_search.nearest_code(z, codebook)
  for chunk, rows in [(128, 0), (128, 100), (None, 250), (1024, 1000)]:
    blocked = code_search.nearest_code(z, codebook, chunk, rows)
    np.testing.assert_array_equal(np.asarray(dense), np.asarray(blocked))
  np.testing.assert_array_equal(np.asarray(dense),
                                np_assign(np.asarray(z), np.asarray(codebook)))


def test_default_row_blocks_bound_the_distance_block_on_accelerators():
  # CPU: cache-sized blocks regardless of K.
  assert code_search.default_rows_per_block(8192, backend="cpu", num_devices=1) == 128
  # GPU, paper single-level: K = 8192 -> 2**27 / 8192 = 16384 rows per device
  # (512 MiB of float32), so the 524,288 rows of a per-GPU batch of 128 at
  # 256x256 take 32 blocks instead of one 16 GiB matrix.
  assert code_search.default_rows_per_block(8192, backend="gpu", num_devices=1) == 16384
  assert code_search.default_rows_per_block(8192, backend="gpu", num_devices=4) == 4 * 16384
  # Code blocks of 4096 (search_chunk_size): twice the rows.
  assert code_search.default_rows_per_block(4096, backend="tpu", num_devices=1) == 32768
  # A block never has fewer than one row per device.
  assert code_search.default_rows_per_block(2**28, backend="gpu", num_devices=2) == 2


def test_chunk_size_must_divide_num_codes():
  with pytest.raises(ValueError, match="must divide num_codes"):
    code_search.nearest_code(jnp.zeros((4, 2)), jnp.zeros((10, 2)), 3)


def test_chunked_search_at_k65536_equals_dense_numpy():
  """The memory-bounded search (blocks of 4096 codes) against dense NumPy distances."""
  rng = np.random.default_rng(9)
  codebook = rng.normal(size=(65536, 8)).astype(np.float32)
  z = rng.normal(size=(512, 8)).astype(np.float32)
  got = code_search.nearest_code(jnp.asarray(z), jnp.asarray(codebook), 4096, 128)
  d = ((z.astype(np.float64) ** 2).sum(1)[:, None] - 2 * z.astype(np.float64) @ codebook.T.astype(np.float64)
       + (codebook.astype(np.float64) ** 2).sum(1)[None])
  want = d.argmin(1)
  got = np.asarray(got)
  # Equal except where float32 rounding may swap two codes at (nearly) equal distance.
  rows = np.arange(len(z))
  mismatch = got != want
  assert mismatch.mean() < 0.01
  np.testing.assert_allclose(d[rows, got], d[rows, want], rtol=1e-5, atol=1e-5)
