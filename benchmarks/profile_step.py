"""Where a train step's time goes, piece by piece, vqjax beside the PyTorch reference.

    python benchmarks/profile_step.py [--config c-hier] [--rounds 7] [--xla-flags ...]

One process holds both implementations (the same model as benchmarks/benchmark.py's
configuration, same batch) and times them interleaved, round by round, so a
changing background load hits both alike; medians over the rounds are reported.

Pieces, timed in isolation with the same method on both sides (each one a
jitted function on vqjax's data mesh, one XLA CPU device per core; PyTorch eager
with `torch.set_num_threads(cores)`), every call waited for:
  encoder     forward + backward of the encoder(s) and the 1x1 pre-quant convs
              (parameter gradients from a fixed cotangent of the latents);
  quantizers  the quantizer(s) in train mode (search, EMA update, dead-code
              reset) forward + backward of (sum(z_q * g) + commitment) to z;
  decoder     forward + backward of (top upsampling +) decoder and the MSE loss,
              gradients to the parameters and to the codes;
  optimizer   one Adam update of all parameters from given gradients;
  step        the whole train step (benchmark.py's);
  glue        step - the four pieces (loss assembly, metrics, Python/dispatch).
vqjax's isolated pieces include their own cross-device gradient all-reduce.

vqjax's whole step is also traced with the JAX profiler
(--xla_cpu_enable_xprof_traceme) and each executed thunk's self time attributed
to the pieces (benchmarks/trace_attribution.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="c-hier", help="a, b, c-single, c-hier or d")
  p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--trace-steps", type=int, default=3, help="traced vqjax steps (0: no trace)")
  p.add_argument("--cpu-devices", type=int, default=0, help="XLA CPU devices (0: one per core)")
  p.add_argument("--batch", type=int, default=0, help="global batch (0: the configuration's)")
  p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for vqjax")
  p.add_argument("--reference", choices=("auto", "off"), default="auto")
  p.add_argument("--json", default="", help="write the results here")
  p.add_argument("--top", type=int, default=15, help="instructions listed from the trace")
  p.add_argument("--show-hlo", action="store_true", help="with each listed instruction's HLO")
  p.add_argument("--only-trace", action="store_true", help="vqjax trace only, no timing")
  p.add_argument("--repo", default="", help="import vqjax from this checkout (before/after)")
  p.add_argument("--cpus", default="", help="pin to these CPUs (e.g. '1')")
  return p.parse_args(argv)


ARGS = parse_args()
if ARGS.cpus:
  os.sched_setaffinity(0, {int(c) for c in ARGS.cpus.split(",")})
CORES = len(os.sched_getaffinity(0))
DEVICES = ARGS.cpu_devices or CORES
os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={DEVICES}",
    "--xla_cpu_enable_xprof_traceme=true" if ARGS.trace_steps else "", ARGS.xla_flags]))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, ARGS.repo or str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import child  # noqa: E402
import harness  # noqa: E402
import trace_attribution  # noqa: E402
from vqjax import config_lib, parallel, train  # noqa: E402
from vqjax import state as state_lib  # noqa: E402
from vqjax.models import create_model  # noqa: E402
from vqjax.models.blocks import Decoder, Encoder, up_conv  # noqa: E402
from vqjax.models.factory import create_quantizer  # noqa: E402
from vqjax.quantizers.ema_vq import COLLECTION  # noqa: E402

if hasattr(parallel, "configure_cpu_backend"):  # as vqjax.main (VQJAX_CPU_XLA_FLAGS=0: without)
  parallel.configure_cpu_backend()

PIECES = ("encoder", "quantizers", "decoder", "optimizer")


def find_case(name):
  for cases in harness.CASES.values():
    for case in cases:
      if case.name == name:
        return case
  raise SystemExit(f"unknown configuration {name!r}")


# -- vqjax ---------------------------------------------------------------------------


def vqjax_pieces(case, batch, images):
  """{piece: zero-argument callable that runs it once and waits} for vqjax."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  config = config_lib.base_config()
  config.model = child.build_model_config(case.recipe)
  config.data.image_size, config.data.batch_size = case.image_size, batch
  config.train.steps_per_epoch = 1000
  m = config.model
  mesh = parallel.create_mesh()
  parallel.check_batch_size(batch, mesh)
  model = create_model(m)
  tx = state_lib.create_optimizer(config)
  state = parallel.replicate(state_lib.create_train_state(model, tx, case.image_size, 0), mesh)
  shard, repl = parallel.data_sharding(mesh), parallel.replicated(mesh)
  x = parallel.global_batch({"image": images}, mesh)["image"]
  step_fn = train.jit_train_step(mesh)
  hier = m.kind == "hierarchical"
  c, res, nrb, d = m.channels, m.res_channels or m.channels // 2, m.num_res_blocks, m.code_dim

  def encode(p, x):
    if hier:
      eb = Encoder(c, res, nrb, 4).apply({"params": p["encoder_bottom"]}, x)
      et = Encoder(c, res, nrb, 2).apply({"params": p["encoder_top"]}, eb)
      conv = nn.Conv(d, (1, 1))
      return (conv.apply({"params": p["pre_quant_top"]}, et),
              conv.apply({"params": p["pre_quant_bottom"]}, eb))
    h = Encoder(c, res, nrb, 4).apply({"params": p["encoder"]}, x)
    return (nn.Conv(d, (1, 1)).apply({"params": p["pre_quant"]}, h),)

  def decode(p, codes):
    if hier:
      q_t, q_b = codes
      up = up_conv(d, jnp.float32).apply({"params": p["upsample_top"]}, q_t)
      z = jnp.concatenate([up, q_b], -1)
    else:
      z, = codes
    return Decoder(c, res, 3, nrb, 4).apply({"params": p["decoder"]}, z)

  # Copies: the train step donates (and so deletes) `state`.
  params = jax.tree.map(jnp.copy, state.params)
  opt_state = jax.tree.map(jnp.copy, state.opt_state)
  zs = jax.jit(encode, out_shardings=shard)(params, x)
  cot = tuple(jax.device_put(jnp.full(z.shape, 1e-3, z.dtype), shard) for z in zs)
  names = ("quantizer_top", "quantizer_bottom") if hier else ("quantizer",)
  quantizer = create_quantizer(m)()

  @jax.jit
  def encoder_piece(p, x):
    _, vjp = jax.vjp(lambda p: encode(p, x), p)
    return vjp(cot)[0]

  @jax.jit
  def quantizer_piece(codebooks, zs, key):
    out = {}
    grads = []
    for name, z, g in zip(names, zs, cot):
      def f(z, name=name, g=g):
        (z_q, aux), upd = quantizer.apply({COLLECTION: codebooks[name]}, z, train=True,
                                          mutable=[COLLECTION], rngs={COLLECTION: key})
        return jnp.sum(z_q * g) + aux["losses"]["commitment"], upd[COLLECTION]
      (_, upd), gz = jax.value_and_grad(f, has_aux=True)(z)
      out[name] = upd
      grads.append(gz)
    return out, grads

  @jax.jit
  def decoder_piece(p, codes, x):
    def loss(p, codes):
      return jnp.mean((decode(p, codes) - x) ** 2)
    return jax.grad(loss, argnums=(0, 1))(p, codes)

  grads = jax.jit(lambda p: jax.tree.map(lambda a: 1e-3 * jnp.ones_like(a), p),
                  out_shardings=repl)(params)

  @jax.jit
  def optimizer_piece(p, opt_state, g):
    updates, opt_state = tx.update(g, opt_state, p)
    return jax.tree.map(lambda a, u: a + u, p, updates), opt_state

  codebooks = {n: jax.tree.map(jnp.copy, state.codebook[n]) for n in names}
  key = jax.random.PRNGKey(3)
  holder = dict(state=state, codebooks=codebooks)

  def run_step():
    holder["state"], metrics = step_fn(holder["state"], {"image": x})
    jax.block_until_ready((holder["state"], metrics))

  def run_quantizers():
    # Keeps the codebooks' evolving state (so the dead-code window fills as in training).
    holder["codebooks"], g = quantizer_piece(holder["codebooks"], zs, key)
    jax.block_until_ready((holder["codebooks"], g))

  fns = dict(
      encoder=lambda: jax.block_until_ready(encoder_piece(params, x)),
      quantizers=run_quantizers,
      decoder=lambda: jax.block_until_ready(decoder_piece(params, zs, x)),
      optimizer=lambda: jax.block_until_ready(optimizer_piece(params, opt_state, grads)),
      step=run_step,
  )
  return fns, dict(step_fn=step_fn, holder=holder, x=x, mesh=mesh)


# -- the reference -------------------------------------------------------------------


def torch_pieces(case, batch, images, threads):
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  import torch_reference as ref  # pylint: disable=import-outside-toplevel
  try:
    from loguru import logger  # pylint: disable=import-outside-toplevel
    logger.remove()
  except ImportError:
    pass
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = ref.create_model(child.build_model_config(case.recipe).to_dict())
  opt = ref.create_optimizer(model)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  model.train()
  hier = isinstance(model, ref.HierarchicalVQVAE)
  for _ in range(2):  # the k-means init of the codebooks happens here
    ref.train_step(model, opt, x)

  def encode():
    if hier:
      eb = model.encoder_bottom(x)
      et = model.encoder_top(eb)
      return model.pre_quant_top(et), model.pre_quant_bottom(eb)
    return (model.pre_quant(model.encoder(x)),)

  with torch.no_grad():
    zs = [z.detach() for z in encode()]
  cot = [torch.full_like(z, 1e-3) for z in zs]
  vqs = [model.quantizer_top, model.quantizer_bottom] if hier else [model.quantizer]

  def encoder_piece():
    model.zero_grad(set_to_none=True)
    torch.autograd.backward(list(encode()), cot)

  def quantizer_piece():
    for vq, z, g in zip(vqs, zs, cot):
      z = z.clone().requires_grad_(True)
      z_q, _, commit = ref.quantize(vq, z)
      ((z_q * g).sum() + commit.sum()).backward()

  def decoder_piece():
    model.zero_grad(set_to_none=True)
    codes = [z.clone().requires_grad_(True) for z in zs]
    if hier:
      z = torch.cat([model.upsample_top(codes[0]), codes[1]], dim=1)
    else:
      z = codes[0]
    F.mse_loss(model.decoder(z), x).backward()

  # gradients for the optimizer piece
  ref.train_step(model, opt, x)
  saved = [p.grad.clone() for p in model.parameters()]

  def optimizer_piece():
    for p, g in zip(model.parameters(), saved):
      p.grad = g
    opt.step()

  def step():
    ref.train_step(model, opt, x)

  return dict(encoder=encoder_piece, quantizers=quantizer_piece, decoder=decoder_piece,
              optimizer=optimizer_piece, step=step)


# -- main ----------------------------------------------------------------------------


def time_once(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def main():
  case = find_case(ARGS.config)
  batch = ARGS.batch or case.batch
  images = child.fixed_images(batch, case.image_size)
  jfns, ctx = vqjax_pieces(case, batch, images)
  impls = {"vqjax": jfns}
  use_ref = ARGS.reference == "auto" and harness.reference_available()
  if ARGS.only_trace:
    for _ in range(ARGS.warmup):
      jfns["step"]()
    names, use_ref = ["step"], False
    times = {"vqjax": {"step": [time_once(jfns["step"]) for _ in range(ARGS.rounds)]}}
    print("vqjax step ms:", [round(1e3 * t) for t in times["vqjax"]["step"]],
          "median", round(1e3 * statistics.median(times["vqjax"]["step"])))
    tr = trace_attribution.trace_step(ctx, ARGS.trace_steps, DEVICES, ARGS.top)
    trace_attribution.print_trace(tr, ARGS.show_hlo)
    return
  if use_ref:
    impls["torch"] = torch_pieces(case, batch, images, CORES)
  names = list(PIECES) + ["step"]
  for impl, fns in impls.items():  # compile / warm up
    for name in names:
      for _ in range(ARGS.warmup if name != "quantizers" else max(ARGS.warmup, 11)):
        fns[name]()
  times = {impl: {n: [] for n in names} for impl in impls}
  for r in range(ARGS.rounds):
    order = list(impls) if r % 2 == 0 else list(reversed(impls))
    for name in names:
      for impl in order:
        time.sleep(0.02)  # let the other side's worker threads go idle
        times[impl][name].append(time_once(impls[impl][name]))
  result = dict(config=case.name, batch=batch, devices=DEVICES, cores=CORES,
                xla_flags=os.environ["XLA_FLAGS"], load=os.getloadavg(), ms={})
  for impl in impls:
    med = {n: 1e3 * statistics.median(times[impl][n]) for n in names}
    med["glue"] = med["step"] - sum(med[n] for n in PIECES)
    result["ms"][impl] = med
    result.setdefault("all_ms", {})[impl] = {n: [round(1e3 * t, 1) for t in times[impl][n]]
                                            for n in names}
  if ARGS.trace_steps:
    result["trace"] = trace_attribution.trace_step(ctx, ARGS.trace_steps, DEVICES, ARGS.top)

  print(f"\n{case.name} ({case.description}), batch {batch}, {DEVICES} XLA devices, "
        f"{CORES} cores, load {result['load']}")
  print(f"XLA_FLAGS={result['xla_flags']}")
  cols = list(impls)
  print("| piece | " + " | ".join(f"{c} ms" for c in cols) + " | vqjax / torch |")
  for n in names + ["glue"]:
    vals = [result["ms"][c][n] for c in cols]
    ratio = f"{vals[0] / vals[1]:.2f}" if len(vals) == 2 and vals[1] else "-"
    print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {ratio} |")
  if "trace" in result:
    trace_attribution.print_trace(result["trace"], ARGS.show_hlo)
  if ARGS.json:
    Path(ARGS.json).write_text(json.dumps(result, indent=1))




if __name__ == "__main__":
  main()
