"""Use a trained model: load a checkpoint, images -> codes -> images.

  model = vqjax.load("runs/default")            # latest checkpoint; step=... for another
  codes = model.encode(images)                  # uint8 [N, H, W, 3] -> {level: int32 [N, h, w, ...]}
  images_hat = model.decode(codes)              # -> uint8 [N, H, W, 3]
  images_hat = model.reconstruct(images)        # the same as decode(encode(images))
  model.codebooks                               # {level: float32 [K, D]} (one code per position)

Every model kind and quantizer kind loads. Levels are named as in metrics.json:
`codes` (single-level, h = H/4), `top` (H/8) and `bottom` (H/4), or the HQ-VAE
layers `layer_1`.. (coarsest first). A SEMANTICIST model (1D tokens) has the one
level `tokens`: encode takes images of exactly its image_size S and gives
[N, T, *code_shape] int32 codes, or float32 [N, T, D] continuous tokens;
decode(codes, num_tokens=k, seed=...) decodes from the first k tokens (the rest
null) by DDIM from the seeded noise; reconstruct cuts other sizes into S x S tiles. A level's codes are [N, h, w, *code_shape]
of its quantizer (vqjax.quantizers.base: () for VQ/FSQ/LFQ, (G,) grouped, (L,)
residual), every entry in [0, codebook_size); decoding goes through the
quantizer's own `decode`. Only params and codebooks are restored (no optimizer
state, no data source), onto the first local device, so a checkpoint written on
8 devices loads on 1. Every function is jitted once per image (or code map)
shape: batches of any size are cut into, and padded up to, `batch_size` images.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vqjax import checkpointing, config_lib, data
from vqjax.models import create_model, level_names, level_quantizers
from vqjax.models.factory import SEMANTICIST, is_continuous
from vqjax.quantizers import COLLECTION, registry
from vqjax.quantizers.base import check_code_range

# Codebooks larger than this are not enumerated by Model.codebooks (LFQ: 2^D codes).
MAX_ENUMERATED_CODES = 2**20


def level_downsampling(model_config) -> dict[str, int]:
  """{level: image pixels per code along each side}: single 4, hierarchical
  top 8 / bottom 4, HQ-VAE 2^(stem + pools) for the top layer (injected layer
  l halves it l - 1 times)."""
  m = model_config
  names = level_names(m)
  if m.kind == SEMANTICIST:  # one token sequence per S x S image
    return {names[0]: int(m.image_size)}
  if m.kind == "single":
    return {"codes": 4}
  if m.kind == "hierarchical":
    return {"top": 8, "bottom": 4}
  top = 2 ** (m.stem_downsamples + m.num_pools)
  if m.kind == "injected_topdown":
    return {name: top // 2**l for l, name in enumerate(names)}
  return {name: top for name in names}


def downsampling(model_config) -> int:
  """The coarsest level's pixels per code: H and W must divide by it."""
  return max(level_downsampling(model_config).values())


def to_uint8(x_hat: jax.Array) -> jax.Array:
  """Model range [-1, 1] -> uint8 [0, 255] (clipped, rounded half to even)."""
  return jnp.round((jnp.clip(x_hat, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def _merge(defaults: dict, saved: dict) -> dict:
  """`saved` over `defaults`, recursively (fields added since the run keep
  defaults); a saved quantizer config of another kind starts from its own kind's
  defaults."""
  if "kind" in saved and defaults.get("kind") not in (None, saved["kind"]) \
      and saved["kind"] in registry.KINDS:
    defaults = registry.default_config(saved["kind"]).to_dict()
  out = dict(defaults)
  for key, value in saved.items():
    out[key] = (_merge(out[key], value) if isinstance(value, dict)
                and isinstance(out.get(key), dict) else value)
  return out


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with: workdir/config.json (written by vqjax.main and sweep)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no config.json in {workdir}: vqjax.load needs a run directory written by "
        "`python -m vqjax.main --workdir=...` (or vqjax.experiments.sweep).")
  with open(path) as f:
    saved = json.load(f)
  if "model" in saved:  # runs from before model.quantizer was nested
    saved["model"] = config_lib.upgrade_model_config(saved["model"])
  defaults = config_lib.base_config().to_dict()
  kind = saved.get("model", {}).get("kind", "single")
  defaults["model"] = (config_lib.semanticist_model() if kind == SEMANTICIST
                       else config_lib.hierarchical_model(2, 1)).to_dict()
  defaults["model"]["kind"] = kind
  return ml_collections.ConfigDict(_merge(defaults, saved))


def _check_checkpoint_shapes(state_dir: str, abstract: dict) -> None:
  """ValueError naming the first params/codebook array that the checkpoint lacks
  or holds with another shape (the run's config.json does not match it)."""
  metadata = ocp.StandardCheckpointer().metadata(state_dir)
  metadata = getattr(metadata, "item_metadata", metadata)
  saved = {checkpointing._path_name(p): tuple(m.shape)  # pylint: disable=protected-access
           for p, m in jax.tree_util.tree_leaves_with_path(metadata) if hasattr(m, "shape")}
  for path, x in jax.tree_util.tree_leaves_with_path(abstract):
    name = checkpointing._path_name(path)  # pylint: disable=protected-access
    if saved.get(name) != tuple(x.shape):
      found = "no such array" if name not in saved else f"shape {saved[name]}"
      raise ValueError(f"the checkpoint in {state_dir} does not fit the run's "
                       f"config.json: {name} has {found} there and shape "
                       f"{tuple(x.shape)} in the model config.json describes.")


def load(workdir: str, step: int | None = None, batch_size: int = 16) -> "Model":
  """A trained model from `workdir` (its config.json and orbax checkpoints).

  Args:
    workdir: a run directory (`--workdir` of vqjax.main).
    step: checkpoint step; None (or < 0): the latest.
    batch_size: images per compiled call (inputs are cut and padded to it).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"no run directory {workdir}.")
  config = load_config(workdir)
  if config.model.quantizer.get("eval_mode", "det") != "det":  # codes = the nearest code
    config.model.quantizer.eval_mode = "det"
  model = create_model(config.model)
  size = downsampling(config.model) * (1 if config.model.kind == SEMANTICIST else 2)
  variables = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)), train=False))
  device = jax.local_devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  abstract = {"params": variables["params"], "codebook": variables.get(COLLECTION, {})}
  abstract = checkpointing.abstract_like(abstract, sharding)

  directory = checkpointing.checkpoint_dir(workdir)
  steps = []
  if os.path.isdir(directory):
    manager = checkpointing.create_manager(workdir, config, read_only=True)
    steps = list(manager.all_steps())
  if not steps:
    raise FileNotFoundError(
        f"no checkpoint in {directory}: train first (python -m vqjax.main "
        f"--config=... --workdir={workdir}) or point at a run that has one.")
  if step is None or step < 0:
    step = max(steps)
  elif step not in steps:
    raise ValueError(f"checkpoint step {step} not in {directory}; available steps: "
                     f"{sorted(steps)}.")
  _check_checkpoint_shapes(os.path.join(directory, str(step), "state"), abstract)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True)))["state"]
  return Model(config, restored["params"], restored["codebook"], step, batch_size)


class Model:
  """A restored model: encode / decode / reconstruct uint8 images, frozen codebooks.

  Attributes: config (the run's), step (checkpoint), level_names, quantizers
  ({level: quantizer}: code_shape, codebook_size, bits_per_position),
  downsampling, batch_size, traces ({function: times traced}, for tests).
  """

  def __init__(self, config, params, codebook, step: int, batch_size: int = 16):
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1.")
    self.config, self.step, self.batch_size = config, int(step), int(batch_size)
    self.level_names = level_names(config.model)
    self.quantizers = level_quantizers(config.model)
    self.level_downsampling = level_downsampling(config.model)
    self.downsampling = downsampling(config.model)
    self.variables = {"params": params, COLLECTION: codebook}
    self.traces = {"encode": 0, "decode": 0, "reconstruct": 0}
    model = self._model = create_model(config.model)
    # SEMANTICIST: images of exactly image_size, codes [N, T, ...] (1D tokens).
    self.tokens_1d = config.model.kind == SEMANTICIST
    self.continuous = self.tokens_1d and is_continuous(config.model)

    def encode(variables, images):
      self.traces["encode"] += 1
      x = data.to_model_range(images)
      return model.apply(variables, x, method="encode_codes")

    def decode(variables, codes, *first_k_and_seed):
      self.traces["decode"] += 1
      kwargs = dict(zip(("num_tokens", "seed"), first_k_and_seed))
      return to_uint8(model.apply(variables, codes, method="decode_codes", **kwargs))

    def reconstruct(variables, images):
      self.traces["reconstruct"] += 1
      x_hat, _ = model.apply(variables, data.to_model_range(images), train=False)
      return to_uint8(x_hat)

    self._encode, self._decode = jax.jit(encode), jax.jit(decode)
    self._reconstruct = jax.jit(reconstruct)

  def __repr__(self) -> str:
    kinds = {level: type(q).__name__ for level, q in self.quantizers.items()}
    return f"Model(kind={self.config.model.kind!r}, step={self.step}, quantizers={kinds})"

  @property
  def codebooks(self) -> dict[str, np.ndarray]:
    """{level: float32 [K, D]}: what each code index decodes to (the quantizer's
    `decode` of 0..K-1, so implicit codebooks such as FSQ's are listed too),
    for the levels with one code per position and K <= MAX_ENUMERATED_CODES."""
    shown = [level for level, q in self.quantizers.items()
             if not q.code_shape and q.codebook_size <= MAX_ENUMERATED_CODES]
    out = {}
    for level in shown:
      codes = {name: np.zeros((1, 1, 1) + tuple(q.code_shape), np.int32)
               for name, q in self.quantizers.items()}
      codes[level] = np.arange(self.quantizers[level].codebook_size, dtype=np.int32)[None, None]
      decoded = self._model.apply(self.variables, codes, method="decode_quantized")
      out[level] = np.asarray(decoded[level], np.float32)[0, 0]
    return out

  def _check_images(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
      raise ValueError(f"images must be a batch [N, H, W, 3]; got one image {images.shape} "
                       "(use images[None]).")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be uint8 [N, H, W, 3]; got {images.dtype} {images.shape}.")
    return images

  def _batched(self, fn, tree, n: int):
    """fn over `tree` (leaves [n, ...]) in padded batches of batch_size; numpy out."""
    outs = []
    for start in range(0, n, self.batch_size):
      chunk = jax.tree.map(lambda a: a[start:start + self.batch_size], tree)
      k = jax.tree.leaves(chunk)[0].shape[0]
      pad = lambda a: np.concatenate(  # zero rows up to batch_size (results dropped)
          [a, np.zeros((self.batch_size - k,) + a.shape[1:], a.dtype)])
      out = fn(self.variables, jax.tree.map(pad, chunk) if k < self.batch_size else chunk)
      outs.append(jax.tree.map(lambda a: np.asarray(a)[:k], out))
    if not outs:
      raise ValueError("got an empty batch (N = 0).")
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)

  def encode(self, images) -> dict[str, np.ndarray]:
    """uint8 [N, H, W, 3] (H, W divisible by `downsampling`) -> {level: int32
    [N, h, w, *code_shape]} (h = H / level_downsampling[level]); SEMANTICIST:
    H = W = image_size -> {'tokens': int32 [N, T, *code_shape] or float32 [N, T, D]}."""
    images = self._check_images(images)
    h, w = images.shape[1:3]
    if self.tokens_1d and (h, w) != (self.downsampling,) * 2:
      raise ValueError(f"image size {h}x{w}: this 1D tokenizer encodes images of exactly "
                       f"{self.downsampling}x{self.downsampling} (reconstruct() tiles "
                       "other sizes).")
    if h % self.downsampling or w % self.downsampling:
      raise ValueError(
          f"image size {h}x{w} is not divisible by {self.downsampling}, the model's "
          "downsampling; crop or pad the images (reconstruct() pads by itself).")
    codes = self._batched(self._encode, images, images.shape[0])
    return {name: codes[name] for name in self.level_names}

  def check_codes(self, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """codes as int32 arrays; ValueError for missing levels, shapes that do not
    fit the quantizers and one image size, or out-of-range indices."""
    missing = [n for n in self.level_names if n not in codes]
    if missing:
      raise ValueError(f"codes lack level(s) {missing}; this model needs "
                       f"{list(self.level_names)}.")
    if self.tokens_1d:
      return self._check_tokens(codes)
    out, sizes = {}, {}
    for name in self.level_names:
      c, q = np.asarray(codes[name]), self.quantizers[name]
      want = 3 + len(q.code_shape)
      if (c.ndim != want or not np.issubdtype(c.dtype, np.integer)
          or tuple(c.shape[3:]) != tuple(q.code_shape)):
        raise ValueError(f"codes[{name!r}] must be integer [N, h, w"
                         f"{''.join(f', {n}' for n in q.code_shape)}] ({type(q).__name__}); "
                         f"got {c.dtype} {c.shape}.")
      check_code_range(c, q.codebook_size, name)
      out[name] = c.astype(np.int32)
      f = self.level_downsampling[name]
      sizes[name] = (c.shape[0], c.shape[1] * f, c.shape[2] * f)
    if len(set(sizes.values())) > 1:
      raise ValueError("the levels' code maps do not describe one batch of images of one "
                       "size: " + ", ".join(f"{n} {out[n].shape[:3]} (x{self.level_downsampling[n]})"
                                            for n in self.level_names) + ".")
    return out

  def _check_tokens(self, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """SEMANTICIST codes: int [N, T, *code_shape] in range, or float [N, T, D] continuous."""
    name = self.level_names[0]
    m, c = self.config.model, np.asarray(codes[name])
    if self.continuous:
      if c.ndim != 3 or c.shape[1:] != (m.num_tokens, m.code_dim) or \
          not np.issubdtype(c.dtype, np.floating):
        raise ValueError(f"codes[{name!r}] must be float [N, {m.num_tokens}, {m.code_dim}] "
                         f"(continuous tokens); got {c.dtype} {c.shape}.")
      return {name: c.astype(np.float32)}
    q = self.quantizers[name]
    want = (m.num_tokens, *q.code_shape)
    if c.ndim != 1 + len(want) or tuple(c.shape[1:]) != want or \
        not np.issubdtype(c.dtype, np.integer):
      raise ValueError(f"codes[{name!r}] must be integer [N, {', '.join(map(str, want))}] "
                       f"({type(q).__name__}); got {c.dtype} {c.shape}.")
    check_code_range(c, q.codebook_size, name)
    return {name: c.astype(np.int32)}

  def decode(self, codes: Mapping[str, np.ndarray], num_tokens: int | None = None,
             seed: int | None = None) -> np.ndarray:
    """{level: int [N, h, w, *code_shape]} -> uint8 [N, H, W, 3].

    SEMANTICIST: {'tokens': [N, T, ...]} -> uint8 [N, S, S, 3] from the first
    num_tokens tokens (default T) and the sampler's noise of `seed` (default the
    config's model.decoder.sample_seed); one compilation for every k and seed.
    """
    codes = self.check_codes(codes)
    n = next(iter(codes.values())).shape[0]
    if not self.tokens_1d:
      if num_tokens is not None or seed is not None:
        raise ValueError("num_tokens and seed are for SEMANTICIST models (1D tokens).")
      return self._batched(self._decode, codes, n)
    m = self.config.model
    k = m.num_tokens if num_tokens is None else int(num_tokens)
    if not 0 <= k <= m.num_tokens:
      raise ValueError(f"num_tokens={num_tokens} must be in [0, {m.num_tokens}].")
    seed = m.decoder.sample_seed if seed is None else int(seed)
    return self._batched(lambda v, c: self._decode(v, c, np.int32(k), np.int32(seed)),
                         codes, n)

  def reconstruct(self, images) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 reconstructions of the same shape.

    Any H, W: images whose size is not divisible by `downsampling` are padded
    (edge values) at the bottom/right and the result cropped back.
    """
    images = self._check_images(images)
    n, h, w = images.shape[:3]
    m = self.downsampling
    padded = np.pad(images, ((0, 0), (0, -h % m), (0, -w % m), (0, 0)), mode="edge")
    if not self.tokens_1d or padded.shape[1:3] == (m, m):
      return self._batched(self._reconstruct, padded, n)[:, :h, :w]
    # A 1D tokenizer of S x S images: every S x S tile on its own, then stitched.
    rows, cols = padded.shape[1] // m, padded.shape[2] // m
    tiles = padded.reshape(n, rows, m, cols, m, 3).transpose(0, 1, 3, 2, 4, 5)
    out = self._batched(self._reconstruct, tiles.reshape(-1, m, m, 3), n * rows * cols)
    out = out.reshape(n, rows, cols, m, m, 3).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(padded.shape)[:, :h, :w]
