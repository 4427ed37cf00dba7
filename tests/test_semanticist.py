"""SEMANTICIST's parts against references written here: the causal mask by
perturbation (and an explicit loop), the nested-CFG cutoff by a NumPy loop and
a chi-square frequency test, the noise schedule and one DDIM step re-derived in
NumPy (float64), and the jitted sampler against a Python loop of NumPy DDIM
steps around the same network (which also checks guidance)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vqjax.models import diffusion, semanticist
from vqjax.models.semanticist import CausalViTEncoder

T = 6  # concept tokens of the tiny encoder


def np_concept_mask(num_image, num_tokens):
  """Written out: image rows see the image; concept i sees the image and concepts <= i."""
  size = num_image + num_tokens
  mask = np.zeros((size, size), bool)
  for q in range(size):
    for k in range(size):
      if q < num_image:
        mask[q, k] = k < num_image
      else:
        mask[q, k] = k < num_image or k <= q
  return mask


def test_concept_mask_is_the_written_out_rule():
  np.testing.assert_array_equal(semanticist.concept_mask(17, T), np_concept_mask(17, T))


@pytest.fixture(scope="module")
def encoder():
  enc = CausalViTEncoder(patch_size=4, width=16, depth=2, num_heads=2, num_tokens=T,
                         token_dim=3)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  params = enc.init(jax.random.key(1), x)["params"]

  @jax.jit
  def run(params):  # tokens [B, T, 3] and the last block's outputs [B, 1 + 16 + T, 16]
    tokens, state = enc.apply({"params": params}, x, capture_intermediates=True)
    return tokens, state["intermediates"][f"block_{enc.depth - 1}"]["__call__"][0]

  return params, run


@pytest.mark.parametrize("j", [0, 2, T - 1])
def test_changing_concept_token_j_changes_no_output_before_j(encoder, j):
  params, run = encoder
  tokens, blocks = run(params)
  changed = jax.tree.map(lambda a: a, params)
  changed["concept_queries"] = params["concept_queries"].at[0, j].add(1.0)
  new_tokens, new_blocks = run(changed)
  np.testing.assert_array_equal(new_tokens[:, :j], tokens[:, :j])       # bit for bit
  assert np.abs(np.asarray(new_tokens[:, j]) - np.asarray(tokens[:, j])).min() > 0
  # cls and patch outputs never see a concept token.
  np.testing.assert_array_equal(new_blocks[:, :17], blocks[:, :17])


def np_apply_cutoff(tokens, k, null):
  out = tokens.copy()
  for b in range(tokens.shape[0]):
    for i in range(tokens.shape[1]):  # 0-based position i is token i + 1
      if i + 1 > k[b]:
        out[b, i] = null[i]
  return out


def test_cutoff_replaces_exactly_the_suffix_after_k_with_the_null_tokens():
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(T + 1, T, 3)).astype(np.float32)
  null = rng.normal(size=(T, 3)).astype(np.float32)
  k = np.arange(T + 1)  # every cutoff, 0 (all null) .. T (none)
  got = np.asarray(semanticist.apply_cutoff(jnp.asarray(tokens), jnp.asarray(k), null))
  np.testing.assert_array_equal(got, np_apply_cutoff(tokens, k, null))
  assert (got[0] == null).all() and (got[T] == tokens[T]).all()


@pytest.mark.parametrize("null_prob", [0.1, 0.0])
def test_cutoff_k_follows_its_distribution(null_prob):
  n = 200_000
  k = np.asarray(semanticist.sample_cutoff(jax.random.key(3), n, T, null_prob))
  counts = np.bincount(k, minlength=T + 1)
  expected = n * np.array([null_prob] + [(1 - null_prob) / T] * T)
  if null_prob == 0:
    assert counts[0] == 0
    counts, expected = counts[1:], expected[1:]
  assert stats.chisquare(counts, expected).pvalue > 1e-3, counts
  # Before nest_start_step: all T tokens, the all-null share kept.
  k = np.asarray(semanticist.sample_cutoff(jax.random.key(4), n, T, 0.1, nested=False))
  assert set(np.unique(k)) == {0, T}
  assert abs(np.mean(k == 0) - 0.1) < 4 * np.sqrt(0.1 * 0.9 / n)


def np_alphas_cumprod(num_timesteps, beta_start, beta_end):
  """DDPM's linear schedule, one step at a time in float64."""
  abar, out = 1.0, []
  for t in range(num_timesteps):
    beta = beta_start + (beta_end - beta_start) * t / (num_timesteps - 1)
    abar *= 1.0 - beta
    out.append(abar)
  return np.array(out)


def test_linear_schedule_and_forward_process_match_numpy():
  abar = diffusion.alphas_cumprod(diffusion.linear_betas(1000, 1e-4, 0.02))
  np.testing.assert_allclose(abar, np_alphas_cumprod(1000, 1e-4, 0.02), rtol=1e-12)
  assert abar[0] == pytest.approx(1 - 1e-4) and abar[-1] == pytest.approx(4.04e-5, rel=0.01)
  rng = np.random.default_rng(1)
  x0, noise = rng.uniform(-1, 1, (3, 4, 4, 3)), rng.normal(size=(3, 4, 4, 3))
  t = np.array([0, 500, 999])
  want = (np.sqrt(abar[t])[:, None, None, None] * x0
          + np.sqrt(1 - abar[t])[:, None, None, None] * noise)
  got = diffusion.q_sample(jnp.asarray(x0, jnp.float32), jnp.asarray(abar[t], jnp.float32),
                           jnp.asarray(noise, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)  # float32 sqrt(abar)
  np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 5), [999, 749, 500, 250, 0])


def np_ddim_step(x_t, eps, a_t, a_prev, clip):
  """Song et al. 2021, Eq. 12 with sigma = 0; clip: x0 to [-1, 1] and eps re-derived."""
  x0 = (x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
  if clip:
    x0 = np.clip(x0, -1, 1)
    eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
  return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps


@pytest.mark.parametrize("clip", [False, True])
def test_one_ddim_step_matches_numpy(clip):
  rng = np.random.default_rng(2)
  x_t, eps = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  a_t, a_prev = 0.3, 0.7
  got, _ = diffusion.ddim_step(jnp.asarray(x_t, jnp.float32), jnp.asarray(eps, jnp.float32),
                               a_t, a_prev, clip_x0=clip)
  np.testing.assert_allclose(np.asarray(got), np_ddim_step(x_t, eps, a_t, a_prev, clip),
                             atol=1e-5)


def test_v_parametrisation_matches_numpy():
  """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022) and the eps it implies."""
  rng = np.random.default_rng(5)
  x0, eps = rng.uniform(-1, 1, (2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  a = np.array([0.2, 0.9])[:, None, None, None]
  x_t, v = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps, np.sqrt(a) * eps - np.sqrt(1 - a) * x0
  f32 = lambda z: jnp.asarray(z, jnp.float32)
  np.testing.assert_allclose(diffusion.v_target(f32(x0), f32(eps), f32(a[:, 0, 0, 0])), v,
                             atol=1e-6)
  np.testing.assert_allclose(diffusion.eps_from_v(f32(x_t), f32(v), f32(a[:, 0, 0, 0])), eps,
                             atol=1e-5)


def test_guidance_scale_one_is_the_conditioned_prediction():
  rng = np.random.default_rng(3)
  eps_c, eps_u = (jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32) for _ in range(2))
  for scale in (1.0, jnp.float32(1.0)):
    np.testing.assert_array_equal(diffusion.guided(eps_c, eps_u, scale), eps_c)
  np.testing.assert_allclose(diffusion.guided(eps_c, eps_u, 3.0),
                             np.asarray(eps_u) + 3.0 * (np.asarray(eps_c) - np.asarray(eps_u)),
                             atol=1e-5)


def test_sampler_is_a_loop_of_numpy_ddim_steps_with_guidance(scale=2.5):
  """v-prediction (the config's): the network's v turned into eps in NumPy, guided."""
  dec = diffusion.DiffusionDecoder(image_size=8, patch_size=4, width=16, depth=1,
                                   num_heads=2, num_timesteps=100, sample_steps=4,
                                   prediction="v")
  rng = np.random.default_rng(4)
  cond, uncond = (jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32) for _ in range(2))
  x8 = jnp.zeros((2, 8, 8, 3))
  params = dec.init(jax.random.key(0), x8, jnp.zeros((2,), jnp.int32), cond)["params"]
  # A non-zero final layer, so the network's prediction depends on its inputs.
  params = jax.tree.map(lambda p: p + 0.3 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                        params)
  got = np.asarray(jax.jit(lambda p: dec.apply({"params": p}, cond, uncond, 7, scale,
                                               method="sample"))(params))
  eps_fn = jax.jit(lambda x, t, c: dec.apply({"params": params}, x, t, c))
  abar = np_alphas_cumprod(100, 1e-4, 0.02)
  steps = np.round(np.linspace(99, 0, 4)).astype(int)
  x = np.broadcast_to(np.asarray(jax.random.normal(jax.random.key(7), (1, 8, 8, 3))),
                      (2, 8, 8, 3)).astype(np.float64)
  for i, t in enumerate(steps):
    tt = jnp.full((2,), t)
    v_c = np.asarray(eps_fn(jnp.asarray(x, jnp.float32), tt, cond), np.float64)
    v_u = np.asarray(eps_fn(jnp.asarray(x, jnp.float32), tt, uncond), np.float64)
    e_c, e_u = (np.sqrt(1 - abar[t]) * x + np.sqrt(abar[t]) * v for v in (v_c, v_u))
    eps = e_u + scale * (e_c - e_u)
    a_prev = abar[steps[i + 1]] if i + 1 < len(steps) else 1.0
    x = np_ddim_step(x, eps, abar[t], a_prev, clip=True)
  np.testing.assert_allclose(got, x, atol=2e-4)
  assert np.abs(got[0] - got[1]).max() > 1e-3  # the tokens matter
