"""The prior's sampler with its key/value cache vs a full causal pass per position.

    nice python benchmarks/prior_sampler.py [--tokens 256] [--batch 16] [--rounds 3]

configs/prior.py's transformer (4 layers, width 128, 4 heads) with random weights on
the layout of a single-level tokenizer's 16x16 codes of K = 1024 (T = 256; --tokens
320: the hierarchical 8x8 + 16x16 of 2 x 512), one batch of --batch samples per call:
`vqjax.prior.sample.sample_tokens` (cached) and `sample_tokens_uncached`, both jitted
once, warmed up, then timed taking turns (--rounds each, the order reversed every
round), every call waited for. Prints the median seconds per batch and the ratio
uncached / cached (> 1: the cache is faster), and checks that both drew the same tokens.
One process on whatever cores it has: run it pinned (`taskset -c 0`) for one core.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import jax  # noqa: E402
import numpy as np  # noqa: E402

from vqjax.prior import model as model_lib, sample  # noqa: E402
from vqjax.prior.layout import Layout, Level  # noqa: E402

LAYOUTS = {256: (("codes", (16, 16), 1024),),
           320: (("top", (8, 8), 512), ("bottom", (16, 16), 512))}


def prior_config():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "prior.py")
  spec = importlib.util.spec_from_file_location("prior_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(None)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=256, choices=sorted(LAYOUTS))
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  layout = Layout(tuple(Level(n, hw, (), k) for n, hw, k in LAYOUTS[args.tokens]))
  config = prior_config()
  model = model_lib.create_model(config.prior, layout)
  params = model.init(jax.random.PRNGKey(0),
                      np.zeros((1, layout.seq_len), np.int32))["params"]
  kw = dict(model=model, layout=layout, batch_size=args.batch, temperature=1.0, top_k=0)
  samplers = {"cached": jax.jit(functools.partial(sample.sample_tokens, **kw)),
              "uncached": jax.jit(functools.partial(sample.sample_tokens_uncached, **kw))}
  key = jax.random.PRNGKey(1)
  drawn = {name: np.asarray(fn(params, key)) for name, fn in samplers.items()}  # warm-up
  same = np.array_equal(drawn["cached"], drawn["uncached"])
  times = {name: [] for name in samplers}
  order = list(samplers)
  for _ in range(args.rounds):
    for name in order:
      t0 = time.perf_counter()
      samplers[name](params, key).block_until_ready()
      times[name].append(time.perf_counter() - t0)
    order.reverse()
  median = {name: statistics.median(t) for name, t in times.items()}
  print(f"prior sampler, T = {layout.seq_len}, batch {args.batch}, {config.prior.num_layers} "
        f"layers, width {config.prior.width}, JAX {jax.__version__}, "
        f"{jax.device_count()} device(s):")
  for name, t in times.items():
    print(f"  {name:9s} median {median[name]:.3f} s per batch ({min(t):.3f}-{max(t):.3f})")
  print(f"  uncached / cached: {median['uncached'] / median['cached']:.1f}x; "
        f"same tokens: {same}")


if __name__ == "__main__":
  main()
