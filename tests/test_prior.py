"""vqjax.prior: the token layout, the transformer's causality and loss, learning a
known Markov chain, sampling, the codes-file loader, the config, and the whole
path from a smoke tokenizer through its codes to decoded samples."""

import functools
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vqjax import config_lib, export, parallel, writers
from vqjax.prior import data, evaluate, layout as layout_lib, model as model_lib, sample
from vqjax.prior import train as prior_train
from vqjax.prior.layout import Layout, Level

from conftest import main_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN2 = math.log(2.0)


def tiny_prior(**prior):
  """configs/prior.py's defaults at a width that compiles in seconds."""
  config = config_lib.prior_config()
  config.prior.update(num_layers=1, num_heads=2, width=16, mlp_ratio=2, dropout=0.0)
  config.prior.update(prior)
  return config


def params_of(layout: Layout, config, seed: int = 0):
  model = model_lib.create_model(config.prior, layout)
  params = model.init(jax.random.key(seed), jnp.zeros((1, layout.seq_len), jnp.int32))
  return model, params["params"]


def markov_chain(transition: np.ndarray, n: int, length: int, rng) -> np.ndarray:
  """int32 [n, length] chains, the first state from the stationary distribution."""
  pi = stationary(transition)
  x = np.zeros((n, length), np.int32)
  x[:, 0] = rng.choice(len(pi), size=n, p=pi)
  cumulative = np.cumsum(transition, axis=1)
  for t in range(1, length):
    x[:, t] = (rng.random(n)[:, None] > cumulative[x[:, t - 1]]).sum(1)
  return x


def stationary(transition: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eig(transition.T)
  pi = np.real(v[:, np.argmin(np.abs(w - 1))])
  return pi / pi.sum()


def entropy_rate(transition: np.ndarray) -> float:
  """H = -sum_i pi_i sum_j P_ij log2 P_ij (bits per step)."""
  pi = stationary(transition)
  return float(-(pi[:, None] * transition * np.log2(transition)).sum())


MARKOV_4 = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1],
                     [0.1, 0.1, 0.6, 0.2], [0.2, 0.1, 0.1, 0.6]])


def markov_prior_config(out_dir: str):
  """A 2-layer prior (dropout 0.1) for 6 steps on codes files of 4x4 maps of a
  4-state Markov chain written into out_dir/codes (the same every time)."""
  rng = np.random.default_rng(0)
  codes = os.path.join(out_dir, "codes")
  os.makedirs(codes, exist_ok=True)
  for split, n in (("train", 64), ("validation", 24)):
    export.write_codes_file(os.path.join(codes, f"{split}.array_record"),
                            {"codes": markov_chain(MARKOV_4, n, 16, rng).reshape(n, 4, 4)})
  config = tiny_prior(codes=os.path.join(codes, "train.array_record"), dropout=0.1,
                      num_layers=2)
  config.train.update(num_steps=6, batch_size=16, warmup_steps=2, learning_rate=3e-3,
                      log_every=2, checkpoint_every=3)
  config.eval.batch_size = 16
  config.sample.num_samples = 0
  return config


# -- the layout ---------------------------------------------------------------------

HIER = Layout((Level("top", (2, 2), (), 3), Level("bottom", (4, 4), (), 5)))
RESIDUAL = Layout((Level("codes", (2, 3), (2,), 4),))


def test_layout_puts_the_top_level_first_in_raster_order_with_one_vocabulary():
  rng = np.random.default_rng(0)
  top, bottom = rng.integers(0, 3, (2, 2, 2)), rng.integers(0, 5, (2, 4, 4))
  tokens = HIER.tokens({"bottom": bottom, "top": top})
  assert HIER.seq_len == 4 + 16 and HIER.num_code_tokens == 3 + 5 and HIER.bos == 8
  np.testing.assert_array_equal(tokens[:, :4], top.reshape(2, 4))          # raster order
  np.testing.assert_array_equal(tokens[:, 4:], bottom.reshape(2, 16) + 3)  # offset by K_top
  np.testing.assert_array_equal(HIER.lo, [0] * 4 + [3] * 16)
  np.testing.assert_array_equal(HIER.hi, [3] * 4 + [8] * 16)
  back = HIER.codes(tokens)
  np.testing.assert_array_equal(back["top"], top)
  np.testing.assert_array_equal(back["bottom"], bottom)
  # Residual codes: each stage its own token and segment, stages innermost.
  codes = rng.integers(0, 4, (1, 2, 3, 2))
  tokens = RESIDUAL.tokens({"codes": codes})
  np.testing.assert_array_equal(tokens[0, :4], [codes[0, 0, 0, 0], codes[0, 0, 0, 1] + 4,
                                                codes[0, 0, 1, 0], codes[0, 0, 1, 1] + 4])
  np.testing.assert_array_equal(RESIDUAL.codes(tokens)["codes"], codes)
  assert RESIDUAL.num_code_tokens == 8 and RESIDUAL.seq_len == 12
  bad = bottom.copy()
  bad[1, 2, 3] = 5
  with pytest.raises(ValueError, match=r"code index 5 out of range in level 'bottom': valid indices are 0 \.\. 4"):
    HIER.tokens({"top": top, "bottom": bad})
  # Levels are ordered coarsest first whatever the file's order.
  record = {"bottom": bottom[0], "top": top[0], "source": "x", "index": 0}
  assert [n for n, _, _ in layout_lib.record_levels(record)] == ["top", "bottom"]
  assert Layout.from_json(json.loads(json.dumps(HIER.to_json()))) == HIER


def test_unigram_baselines_are_the_numpy_entropies_of_the_training_codes():
  rng = np.random.default_rng(1)
  train = {"top": rng.integers(0, 3, (40, 2, 2)), "bottom": rng.integers(0, 2, (40, 4, 4))}
  val = {"top": rng.integers(0, 3, (10, 2, 2)), "bottom": rng.integers(0, 5, (10, 4, 4))}

  def counts(codes):
    c = layout_lib.CodeCounts()
    for i in range(len(codes["top"])):
      c.add({k: v[i] for k, v in codes.items()}, layout_lib.record_levels(
          {k: v[0] for k, v in codes.items()}))
    return c

  summary = layout_lib.unigram_summary(HIER, counts(train), counts(val))

  def h(x, k):
    p = np.bincount(x.ravel(), minlength=k) / x.size
    p = p[p > 0]
    return -(p * np.log2(p)).sum()

  top, bottom = h(train["top"], 3), h(train["bottom"], 5)
  assert summary["levels"]["top"]["unigram_bits_per_code"] == pytest.approx(top)
  assert summary["levels"]["bottom"]["unigram_bits_per_code"] == pytest.approx(bottom)
  assert summary["unigram_bits_per_image"] == pytest.approx(4 * top + 16 * bottom)
  assert summary["unigram_bits_per_code"] == pytest.approx((4 * top + 16 * bottom) / 20)
  # Validation codes 2..4 of the bottom level never occur in training: add-one smoothing.
  q = (np.bincount(train["bottom"].ravel(), minlength=5) + 1.0)
  q /= q.sum()
  want = -np.log2(q[val["bottom"].ravel()]).mean()
  assert summary["levels"]["bottom"]["unigram_validation_bits_per_code"] == pytest.approx(want)
  assert summary["uniform_bits_per_code"] == pytest.approx((4 * np.log2(3) + 16 * np.log2(5)) / 20)


# -- the transformer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hier_prior():
  """(model, params, jitted logits(params, tokens)) of a 2-layer prior on HIER."""
  model, params = params_of(HIER, tiny_prior(num_layers=2), seed=3)
  logits = jax.jit(lambda p, t: model.apply({"params": p}, model_lib.shift_right(t, HIER.bos)))
  return model, params, logits


def hier_tokens(n: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return HIER.tokens({"top": rng.integers(0, 3, (n, 2, 2)),
                      "bottom": rng.integers(0, 5, (n, 4, 4))})


def test_a_change_to_code_j_changes_no_logit_before_j_plus_1(hier_prior):
  _, params, logits = hier_prior
  tokens = hier_tokens(1)
  base = np.asarray(logits(params, tokens))
  for j in (0, 3, 4, 11, HIER.seq_len - 2):
    changed = tokens.copy()
    changed[0, j] = HIER.lo[j] + (tokens[0, j] - HIER.lo[j] + 1) % (HIER.hi[j] - HIER.lo[j])
    out = np.asarray(logits(params, changed))
    np.testing.assert_array_equal(out[:, :j + 1], base[:, :j + 1], err_msg=f"j={j}")
    assert np.abs(out[:, j + 1] - base[:, j + 1]).max() > 1e-6, j   # code j is seen next


def test_loss_equals_a_numpy_cross_entropy_on_a_hand_made_batch(hier_prior):
  model, params, logits_fn = hier_prior
  top = np.array([[[0, 1], [2, 0]], [[2, 2], [1, 0]]])
  bottom = np.arange(32).reshape(2, 4, 4) % 5
  tokens = HIER.tokens({"top": top, "bottom": bottom})
  logits = np.asarray(logits_fn(params, tokens), np.float64)        # [2, 20, 8]
  nll = np.zeros(tokens.shape)
  for b in range(2):
    for i in range(HIER.seq_len):
      lo, hi = HIER.lo[i], HIER.hi[i]                                 # the level's own codes
      z = logits[b, i, lo:hi]
      nll[b, i] = -(z[tokens[b, i] - lo] - np.log(np.exp(z - z.max()).sum()) - z.max())

  def loss_nll_levels_grads(p, t):  # one compiled program
    loss_fn = lambda p: prior_train.loss_and_nll(p, t, apply_fn=model.apply, layout=HIER,
                                                 train=False)
    (loss, per_token), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    return loss, per_token, evaluate.eval_step(p, {"tokens": t}, model=model, layout=HIER), grads

  loss, per_token, per_level, grads = jax.jit(loss_nll_levels_grads)(params, tokens)
  assert float(loss) == pytest.approx(nll.mean(), rel=1e-5)
  np.testing.assert_allclose(per_token, nll, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(per_level, np.stack([nll[:, :4].sum(1), nll[:, 4:].sum(1)], 1),
                             rtol=1e-5)
  # The gradient is finite although the other level's logits are -inf.
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_prior_reaches_the_entropy_rate_of_a_two_state_markov_chain():
  """Fast sibling of test_prior_slow's K = 4 chain: 2 states, 16 steps, in memory."""
  transition = np.array([[0.9, 0.1], [0.3, 0.7]])
  rng = np.random.default_rng(0)
  layout = Layout((Level("codes", (4, 4), (), 2),))
  train_seq, val_seq = markov_chain(transition, 4096, 16, rng), markov_chain(transition, 1024, 16, rng)
  config = tiny_prior()
  config.train.update(learning_rate=1e-2, lr_schedule="constant", warmup_steps=0,
                      num_steps=150, batch_size=64)
  model = model_lib.create_model(config.prior, layout)
  state = prior_train.create_state(model, prior_train.create_optimizer(config),
                                   layout.seq_len, 0)
  mesh = parallel.create_mesh()
  step = prior_train.jit_train_step(mesh, layout)
  state = parallel.replicate(state, mesh)
  for i in range(config.train.num_steps):
    rows = rng.integers(0, len(train_seq), 64)
    state, _ = step(state, parallel.global_batch({"tokens": train_seq[rows]}, mesh))
  _, nll = jax.jit(lambda p, t: prior_train.loss_and_nll(
      p, t, apply_fn=model.apply, layout=layout, train=False))(state.params, val_seq)
  bits = np.asarray(nll) / LN2
  rate = entropy_rate(transition)                                     # 0.5721 bits
  assert abs(bits[:, 1:].mean() - rate) < 0.05, (bits[:, 1:].mean(), rate)
  pi = stationary(transition)
  assert abs(bits[:, 0].mean() + (pi * np.log2(pi)).sum()) < 0.05     # first code: H(pi)


def test_top_k_1_sampling_is_greedy_and_a_seed_repeats_its_samples(hier_prior):
  model, params, logits_fn = hier_prior
  draw = lambda **kw: np.asarray(sample.make_sampler(model, HIER, batch_size=3, **kw)(
      params, jax.random.PRNGKey(7)))
  greedy = draw(temperature=1.0, top_k=1)
  # Greedy decoding written out: argmax over the position's segment, one position at a time.
  want = np.broadcast_to(HIER.lo, (3, HIER.seq_len)).copy()
  for t in range(HIER.seq_len):
    logits = np.asarray(logits_fn(params, want))[:, t]
    want[:, t] = HIER.lo[t] + np.argmax(logits[:, HIER.lo[t]:HIER.hi[t]], axis=-1)
  np.testing.assert_array_equal(greedy, want)
  sampled = draw(temperature=1.0, top_k=0)
  np.testing.assert_array_equal(sampled, draw(temperature=1.0, top_k=0))
  assert ((sampled >= HIER.lo) & (sampled < HIER.hi)).all()             # each in its segment
  assert not np.array_equal(sampled, greedy)
  HIER.codes(sampled)                                                   # valid codes


def test_cached_decoding_gives_the_full_causal_pass_logits_and_samples(hier_prior):
  """The sampler's key/value cache: fed the sequence one token at a time, position
  t's logits equal the full [B, T] causal pass's at t; the cached sampler draws
  what the uncached one (a full pass per position) draws with the same key."""
  model, params, logits_fn = hier_prior
  tokens = hier_tokens(3, seed=5)
  full = np.asarray(logits_fn(params, tokens))                         # [3, T, V]
  decoder = model.clone(decode=True)
  cache = model_lib.init_cache(model, 3)
  inputs = np.asarray(model_lib.shift_right(jnp.asarray(tokens), HIER.bos))
  step = jax.jit(lambda c, x: decoder.apply({"params": params, "cache": c}, x,
                                            mutable=["cache"]))
  for t in range(HIER.seq_len):
    out, variables = step(cache, inputs[:, t:t + 1])
    cache = variables["cache"]
    np.testing.assert_allclose(np.asarray(out)[:, 0], full[:, t], atol=2e-5, rtol=1e-5,
                               err_msg=f"position {t}")
  for top_k in (0, 2):
    kw = dict(model=model, layout=HIER, batch_size=4, temperature=1.0, top_k=top_k)
    key = jax.random.PRNGKey(11)
    cached = jax.jit(functools.partial(sample.sample_tokens, **kw))(params, key)
    uncached = jax.jit(functools.partial(sample.sample_tokens_uncached, **kw))(params, key)
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(uncached))


# -- the codes file -----------------------------------------------------------------


def test_codes_file_round_trips_through_the_grain_loader(tmp_path):
  rng = np.random.default_rng(2)
  codes = {"top": rng.integers(0, 3, (10, 2, 2)), "bottom": rng.integers(0, 5, (10, 4, 4))}
  path = export.write_codes_file(str(tmp_path / "train.array_record"), codes)
  dataset = export.codes_dataset(path)
  assert len(dataset) == 10 and dataset[3]["index"] == 3 and dataset[3]["source"] == "codes/3"
  levels, counts = data.scan(path)
  layout, source = data.make_layout(levels, [counts])
  assert layout == HIER and "largest code" in source
  want = HIER.tokens(codes)
  it = data.train_iterator(path, HIER, batch_size=5, seed=0)
  epoch = np.concatenate([next(it)["tokens"] for _ in range(2)])
  assert sorted(map(tuple, epoch)) == sorted(map(tuple, want))           # each record once
  state = it.get_state()
  ahead = [next(it)["tokens"] for _ in range(3)]
  it2 = data.train_iterator(path, HIER, batch_size=5, seed=0)
  it2.set_state(state)                                                  # a resumed position
  for a in ahead:
    np.testing.assert_array_equal(next(it2)["tokens"], a)
  batches = list(data.eval_batches(path, HIER, batch_size=4))
  assert len(batches) == 3 and [b["mask"].sum() for b in batches] == [4, 4, 2]
  got = np.concatenate([b["tokens"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(got, want)                              # in file order
  halves = [list(data.eval_batches(path, HIER, batch_size=4, shard_index=i, shard_count=2))
            for i in range(2)]
  assert len(halves[0]) == len(halves[1]) == 2
  got = np.concatenate([b["tokens"][b["mask"]] for h in halves for b in h])
  np.testing.assert_array_equal(got, want)


def test_codebook_sizes_and_entries_come_from_the_tokenizer_config(tmp_path):
  """A grouped hierarchical tokenizer (G = 2 groups of K / G = 16 codes per level):
  its config.json alone sizes the layout, two tokens per position."""
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config("hierarchical")
  config.model.quantizer = config_lib.quantizer_config("grouped", num_groups=2)
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  rng = np.random.default_rng(3)
  # Codes up to 9 only: the tokenizer's K / G = 16 is the size, not the largest code + 1.
  codes = {"bottom": rng.integers(0, 10, (4, 8, 8, 2)), "top": rng.integers(0, 10, (4, 4, 4, 2))}
  path = export.write_codes_file(str(tmp_path / "train.array_record"), codes)
  levels, counts = data.scan(path)
  layout, source = data.make_layout(levels, [counts], str(tmp_path))
  assert layout == Layout((Level("top", (4, 4), (2,), 16), Level("bottom", (8, 8), (2,), 16)))
  assert source.startswith("tokenizer") and layout.seq_len == 2 * (16 + 64)
  np.testing.assert_array_equal(layout.lo[:4], [0, 16, 0, 16])     # group 1, group 2, ...
  np.testing.assert_array_equal(layout.lo[32:34], [32, 48])        # bottom after 2 x 16
  np.testing.assert_array_equal(layout.codes(layout.tokens(codes))["bottom"], codes["bottom"])
  config.model.quantizer = config_lib.quantizer_config("grouped", num_groups=4)
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  with pytest.raises(ValueError, match=r"level 'top' has codes of shape \(2,\) in the file "
                                       r"and \(4,\) in the tokenizer"):
    data.make_layout(levels, [counts], str(tmp_path))


# -- the config ---------------------------------------------------------------------


def load_config(path: str, arg=None):
  """get_config(arg) of a config file (a path relative to the repository)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def load_prior_config(arg=None):
  return load_config("configs/prior.py", arg)


def test_prior_config_errors_name_the_key(tmp_path):
  config = load_prior_config()
  config_lib.validate(config)              # the values; the files are the modes' business
  config_lib.validate_mode(config, "sample")   # reads only the workdir
  with pytest.raises(ValueError, match=r"--config\.prior\.codes=PATH.*--mode=encode "
                                       r"--config\.encode\.split=train"):
    config_lib.validate_mode(config, "train")
  codes = export.write_codes_file(str(tmp_path / "train.array_record"),
                                  {"codes": np.zeros((2, 4, 4), np.int32)})
  config.prior.codes = codes
  with pytest.raises(ValueError, match=r"prior\.validation_codes=.*validation\.array_record"
                                       r".*--config\.encode\.split=validation"):
    config_lib.validate_mode(config, "eval")
  export.write_codes_file(str(tmp_path / "validation.array_record"),
                          {"codes": np.zeros((2, 4, 4), np.int32)})
  config_lib.validate_mode(config, "train")
  for key, value, message in [("prior.width", 30, r"prior\.width=30 .* prior\.num_heads=4"),
                              ("prior.tokenizer", str(tmp_path), r"prior\.tokenizer=.*config\.json"),
                              ("sample.top_k", -1, r"sample\.top_k=-1"),
                              ("sample.fid", "fid", r"sample\.fid='fid'; use one of"),
                              ("sample.fid", "lpips_alex", r"set prior\.tokenizer"),
                              ("train.lr_schedule", "step", r"train\.lr_schedule='step'")]:
    bad = config_lib.prior_config()
    bad.update(config.to_dict())
    section, field = key.split(".")
    bad[section][field] = value
    with pytest.raises(ValueError, match=message):
      config_lib.validate(bad)
  with pytest.raises(ValueError, match=r"--mode=encode is for a tokenizer"):
    config_lib.validate_mode(config, "encode")
  with pytest.raises(ValueError, match=r"a prior config has none"):
    load_prior_config("quantizer=fsq")
  smoke = load_prior_config("smoke")
  assert smoke.train.num_steps == 3 and smoke.prior.width == 32
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"--mode=sample samples a prior"):
    config_lib.validate_mode(tiny_config(), "sample")


# -- end to end: tokenizer -> codes -> prior -> samples ------------------------------


@pytest.fixture(scope="module")
def tokenizer_codes(tmp_path_factory):
  """A smoke tokenizer (configs/default.py:smoke, 2 steps) and its codes of both splits."""
  from vqjax import train  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("tokenizer")
  workdir = str(root / "run")
  config = load_config("configs/default.py", "smoke")
  config.data.builtin_val_images = ("chelsea",)   # 126 validation crops (chelsea and coffee: 342)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:   # as vqjax.main does
    f.write(config.to_json_best_effort(indent=2))
  train.train_and_evaluate(config, workdir)
  # The validation split's crops as both files: the train split's 3,890
  # would take ~10 s more to encode and scan (tests/test_inference.py encodes it).
  config.encode.split, config.encode.output = "validation", ""
  paths = {"validation": export.encode_split(config, workdir)}
  paths["train"] = os.path.join(workdir, "codes", "train.array_record")
  shutil.copy(paths["validation"], paths["train"])
  return workdir, paths


def test_smoke_tokenizer_codes_train_a_prior_that_samples_decoded_images(tokenizer_codes,
                                                                          tmp_path):
  from vqjax import main  # pylint: disable=import-outside-toplevel
  tokenizer, paths = tokenizer_codes
  assert paths["train"] == os.path.join(tokenizer, "codes", "train.array_record")
  config = load_prior_config("smoke")
  config.prior.codes, config.prior.tokenizer = paths["train"], tokenizer
  config.compilation_cache_dir = jax.config.jax_compilation_cache_dir or ""
  config.sample.fid = "lpips_alex"
  workdir = str(tmp_path / "prior")
  main.main(["vqjax.main"], main_flags(config, workdir, "train"))   # as the command line
  with open(os.path.join(workdir, "samples", "fid.json")) as f:
    fid = json.load(f)   # the 2 decoded samples against the tokenizer's validation crops
  assert fid["num_images"] == 2 and fid["num_real_images"] == 126 and fid["value"] > 0
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    result = json.load(f)
  n_val = len(export.codes_dataset(paths["validation"]))
  assert result["checkpoint_step"] == 3 and result["num_images"] == n_val
  assert result["tokens_per_image"] == 64 and result["vocab_size"] == 8192 + 1   # 8x8 codes, K
  assert result["codebook_size_source"].startswith("tokenizer")
  level = result["levels"]["codes"]
  assert level["codebook_size"] == 8192 and level["num_tokens"] == 64
  assert result["bits_per_code"] == pytest.approx(result["nll_bits_per_image"] / 64)
  assert result["uniform_bits_per_code"] == pytest.approx(13.0)
  assert 0 < result["unigram_bits_per_code"] <= 13.0
  for key in ("nll_bits_per_image", "bits_per_code", "unigram_bits_per_code",
              "unigram_validation_bits_per_code"):
    assert np.isfinite(result[key]) and np.isfinite(level[key]), key
  # Two samples, decoded by the tokenizer: a grid PNG, their codes file, TensorBoard.
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "samples.png")))
  assert grid.shape == (32 + 4, 2 * 32 + 6, 3)
  sampled = export.codes_dataset(os.path.join(workdir, "samples", "samples.array_record"))
  assert len(sampled) == 2 and sampled[0]["codes"].shape == (8, 8)
  tags = {v.tag for e in writers.read_events(workdir) for v in e.summary.value}
  assert {"samples", "eval/bits_per_code", "bits_per_code", "samples/fid_lpips_alex"} <= tags
  # --mode=eval restores the checkpoint and gets the same NLL; --mode=sample the
  # same samples (same seed); a longer run resumes from step 3.
  os.remove(os.path.join(workdir, "eval", "metrics.json"))
  main.main(["vqjax.main"], main_flags(config, workdir, "eval"))
  with open(os.path.join(workdir, "eval", "metrics.json")) as f:
    again = json.load(f)
  assert again["nll_bits_per_image"] == pytest.approx(result["nll_bits_per_image"], rel=1e-6)
  out = prior_train.sample_checkpoint(config, workdir)
  np.testing.assert_array_equal(out["tokens"], prior_train.read_codes_json(
      workdir)["layout"].tokens(
          {"codes": np.stack([sampled[i]["codes"] for i in range(2)])}))
  config.train.num_steps, config.sample.num_samples = 4, 0
  assert prior_train.train_and_evaluate(config, workdir)["checkpoint_step"] == 4
