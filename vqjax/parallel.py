"""Device mesh, shardings and multi-host start-up.

One mesh axis, `data`: the batch is sharded on its leading axis, everything
else (params, optimizer state, codebooks, PRNG key) is replicated. Reductions
over the batch inside a jitted step are then reductions over the *global* batch
(XLA inserts the all-reduces), which is what keeps codebook statistics, data
init and dead-code replacement identical to a single-device run.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def cluster_says_multiprocess() -> bool:
  """True when a launcher (SLURM, Open MPI, or JAX's own variables) started several tasks."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return any(int(os.environ.get(k, "1") or 1) > 1
             for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def maybe_initialize_distributed(coordinator_address: str = "",
                                 num_processes: int = 0,
                                 process_id: int = -1) -> None:
  """Calls `jax.distributed.initialize()` when the run is multi-process.

  Explicit arguments (from flags) win; otherwise JAX's own cluster detection
  (SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, ...) is used when the environment
  says there are several tasks. A single process does nothing.
  """
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
  elif cluster_says_multiprocess():
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def configure_cpu_devices(config, requested: int = 0) -> None:
  """On CPU, one XLA device per core (XLA:CPU runs a device's step mostly on one core).

  Sets XLA_FLAGS before JAX starts its backends: `requested` devices, or (0)
  the largest count <= the usable cores that divides both batch sizes
  (data.batch_size, or a prior config's train.batch_size, and eval.batch_size). Leaves
  an explicit --xla_force_host_platform_device_count alone and does nothing
  for multi-process runs or when JAX is told to use another platform. On a GPU
  machine the extra CPU devices exist but are not used.
  """
  xla_flags = os.environ.get("XLA_FLAGS", "")
  if ("xla_force_host_platform_device_count" in xla_flags
      or os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu")
      or cluster_says_multiprocess()):
    return
  cores = requested or len(os.sched_getaffinity(0))
  train_batch = config.data.batch_size if "data" in config else config.train.batch_size
  batches = math.gcd(train_batch, config.eval.batch_size)
  count = max(n for n in range(1, cores + 1) if batches % n == 0)
  if count > 1:
    os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={count}".strip()


# XLA:CPU flags vqjax sets for its runs (BENCHMARKS.md, "What the CPU train step
# spends its time on"): convolutions run on XLA's own (Eigen) kernels instead of
# YNNPACK fusions, whose weight-gradient convolutions (a window as large as the
# image, batch as features) run at a fraction of the speed; matrix products stay
# on YNNPACK. Only given to the jaxlib releases it was measured on (an unknown
# flag stops XLA at start-up).
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
CPU_XLA_FLAGS_JAXLIB = ("0.10.",)


def configure_cpu_backend() -> list[str]:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS (before JAX starts its backends); returns those added.

  A flag whose name XLA_FLAGS already sets is left as the user set it, and
  nothing is added for another jaxlib release or when VQJAX_CPU_XLA_FLAGS=0.
  The flags touch XLA:CPU only (GPU/TPU programs are unaffected).
  """
  import jaxlib  # pylint: disable=import-outside-toplevel
  version = getattr(jaxlib, "__version__", "") or getattr(
      getattr(jaxlib, "version", None), "__version__", "")
  if (os.environ.get("VQJAX_CPU_XLA_FLAGS", "1") == "0"
      or not version.startswith(CPU_XLA_FLAGS_JAXLIB)):
    return []
  xla_flags = os.environ.get("XLA_FLAGS", "")
  added = [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in xla_flags]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([xla_flags] + added).strip()
  return added


def configure_compilation_cache(cache_dir: str) -> str | None:
  """Turns on JAX's persistent compilation cache in `cache_dir` ('' = off).

  A second launch of the same configuration (a resumed run, a sweep member of
  the same shapes, the evaluation mode) then loads its compiled steps from
  disk instead of compiling them again. Every program is cached (no minimum
  compile time). Returns the absolute directory, or None when off. Call before
  anything is compiled.
  """
  if not cache_dir:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = os.path.abspath(os.path.expanduser(cache_dir))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (global) devices with axis `data`."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
  """Clear error (before any compilation) when the batch does not split evenly."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(
        f"config.{what}={global_batch_size} must be divisible by the number of "
        f"devices ({n}); use a multiple of {n}, e.g. "
        f"{max(n, global_batch_size // n * n)}.")
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"config.{what}={global_batch_size} must be divisible by the number of "
        f"processes ({jax.process_count()}).")


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch (this process's rows) -> globally sharded arrays."""
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def replicate(tree, mesh: Mesh):
  """Place a host pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))
