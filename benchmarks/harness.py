"""What the benchmark scripts share: the configurations, the child processes
(benchmarks/child.py) and how they are timed, the machine's description, and
writing a section of BENCHMARKS.md.

`run_interleaved` starts every child and warms it up in turn (compilations never
overlap a timed block), then times them taking turns in blocks of steps (order
reversed every round), so a changing background load hits all alike; `pin_cpus`
(`--cpus 1`) compares one core each, which holds up on a shared machine.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from child import BLOCK_PREFIX, READY_PREFIX, RESULT_PREFIX, build_model_config

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CHILD = BENCH_DIR / "child.py"
NOT_INSTALLED = "not installed"


# -- configurations (parent process) -------------------------------------------------


@dataclasses.dataclass
class Case:
  name: str
  description: str
  recipe: tuple  # (config_lib function name, args): builds vqjax's config.model
  image_size: int
  batch: int


CASES = {
    "a": [Case("a", "single D=8 K=8192", ("single_model", (4096, 8, 64)), 64, 32)],
    "b": [Case("b", "hier D=8 Kh=4096", ("hierarchical_model", (4096, 8)), 64, 32)],
    "c": [Case("c-single", "single D=64 K=1024", ("single_model", (512, 64, 64)), 64, 32),
          Case("c-hier", "hier D=64 Kh=512", ("hierarchical_model", (512, 64)), 64, 32)],
    "d": [Case("d", "single D=8 K=8192 256px", ("single_model", (4096, 8, 256)), 256, 4)],
}
# K_s = 2 * 32768 * 8 / 8 = 65536 (Eq. 5), D = 8, C_s = 160.
MEMORY_RECIPE = ("single_model", (32768, 8, 64))


# -- child processes and their timing ------------------------------------------------


def pin_cpus(spec: str) -> None:
  """--cpus: run this process and its children on these CPUs only ('1', '0,1', '0-3').

  One CPU with one thread per implementation compares per-core speed, which
  holds up on a machine shared with other jobs; several threads sharing busy
  cores do not (a thread that waits for a descheduled peer)."""
  if not spec:
    return
  cpus = set()
  for part in spec.split(","):
    lo, _, hi = part.partition("-")
    cpus.update(range(int(lo), int(hi or lo) + 1))
  os.sched_setaffinity(0, cpus)


def reference_available() -> bool:
  return all(importlib.util.find_spec(m) is not None
             for m in ("torch", "vector_quantize_pytorch"))


def spawn_child(script: Path, spec: dict, timeout: float, result_prefix: str,
                label: str) -> dict:
  """Runs `script --child SPEC_JSON` (repo on PYTHONPATH) and returns the JSON after
  `result_prefix` in its stdout, with `wall_s`; or {'error': ...} (tail printed)."""
  cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
  env = _child_env()
  print(f"[{script.stem}] {label} ...", flush=True)
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO), check=False)
  except subprocess.TimeoutExpired:
    return dict(error=f"timed out after {timeout:.0f} s")
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(result_prefix):
      result = json.loads(line[len(result_prefix):])
      result["wall_s"] = time.perf_counter() - t0
      return result
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
  print(f"[{script.stem}] {label} FAILED (rc={proc.returncode}):\n  " + "\n  ".join(tail),
        flush=True)
  return dict(error=f"rc={proc.returncode}: " + (tail[-1] if tail else "no output"))


def run_child(spec: dict, timeout: float) -> dict:
  label = f"{spec['impl']}:{spec['label']}"
  result = spawn_child(CHILD, spec, timeout, RESULT_PREFIX, label)
  _announce(label, result)
  return result


def _child_env(repo: str | None = None) -> dict:
  """The environment of a child: `repo` (default: this checkout) first on PYTHONPATH,
  so a child can time another checkout's vqjax with this file's code."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(repo or REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return env


class ServedChild:
  """A child in serve mode: warmed up once, then timed in blocks on request."""

  def __init__(self, spec: dict, timeout: float):
    self.label = f"{spec['impl']}:{spec['label']}"
    self.timeout = timeout
    self.error = None
    self.t0 = time.perf_counter()
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(
        [sys.executable, str(CHILD), "--child",
         json.dumps(dict(spec, serve=True, launched_at=time.time()))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        env=dict(_child_env(spec.get("repo")), **spec.get("env", {})), cwd=str(REPO))
    self.lines: queue.Queue = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()
    print(f"[benchmark] {self.label} (served) ...", flush=True)

  def _read(self):
    for line in self.proc.stdout:
      self.lines.put(line)
    self.lines.put(None)

  def _expect(self, prefix: str):
    deadline = time.monotonic() + self.timeout
    while True:
      try:
        line = self.lines.get(timeout=max(1.0, deadline - time.monotonic()))
      except queue.Empty:
        line = None
        self.proc.kill()
      if line is None:
        self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-15:]
        self.error = f"rc={self.proc.returncode}: " + (tail[-1] if tail else "no output")
        print(f"[benchmark] {self.label} FAILED:\n  " + "\n  ".join(tail), flush=True)
        return None
      if line.startswith(prefix):
        return json.loads(line[len(prefix):])

  def _send(self, cmd: dict) -> bool:
    if self.error:
      return False
    try:
      self.proc.stdin.write(json.dumps(cmd) + "\n")
      self.proc.stdin.flush()
      return True
    except (BrokenPipeError, OSError) as e:
      self.error = f"child gone: {e}"
      return False

  def ready(self):
    """Waits for the warm-up; records the time from the launch to its end."""
    out = self._expect(READY_PREFIX)
    self.ready_s = time.perf_counter() - self.t0
    return out

  def run(self, op: str, n: int):
    return self._expect(BLOCK_PREFIX) if self._send(dict(op=op, n=n)) else None

  def finish(self) -> dict:
    if not self._send(dict(op="finish")):
      return dict(error=self.error)
    result = self._expect(RESULT_PREFIX)
    self.proc.wait()
    if result is None:
      return dict(error=self.error)
    result["wall_s"] = time.perf_counter() - self.t0
    return result


def run_interleaved(specs: list[dict], args, pause: float = 0.05) -> list[dict]:
  """Each spec's child is started and warmed up in turn (compilations never overlap
  a timed block); then `args.steps` timed steps per child in blocks of
  `args.block`, the children taking turns (order reversed every round), so a
  changing background load hits every one alike. Eval blocks follow the same way."""
  children = []
  for spec in specs:
    child = ServedChild(spec, args.timeout)
    child.ready()
    children.append(child)
  ops = ["train"] + (["eval"] if any(s.get("eval") for s in specs) else [])
  for op in ops:
    done = 0
    r = 0
    while done < args.steps:
      n = min(args.block, args.steps - done)
      order = children if r % 2 == 0 else children[::-1]
      for child, spec in ((c, specs[children.index(c)]) for c in order):
        if op == "train" or spec.get("eval"):
          time.sleep(pause)  # the other children's worker threads go idle
          child.run(op, n)
      done += n
      r += 1
  results = []
  for child in children:
    result = child.finish()
    _announce(child.label, result)
    results.append(result)
  return results


def _announce(label: str, result: dict) -> None:
  if "error" in result:
    return
  result["load_1min_after"] = os.getloadavg()[0]
  tr = result["train"]
  ev = result.get("eval")
  print(f"[benchmark] {label}: train {tr['img_per_s']:.1f} img/s"
        + (f", eval {ev['img_per_s']:.1f} img/s" if ev else "")
        + f", peak RSS {result['peak_rss_mib']:.0f} MiB, {result['wall_s']:.0f} s", flush=True)


def add_timing_args(parser, steps: int, steps_help: str = "timed steps per run") -> None:
  """The arguments that make_spec and run_interleaved read (steps, warm-up, turns,
  CPUs, threads and devices, timeout); apply them with `apply_timing_args`."""
  parser.add_argument("--steps", type=int, default=steps, help=steps_help)
  parser.add_argument("--warmup", type=int, default=2, help="warm-up steps (>= 2 for reports)")
  parser.add_argument("--block", type=int, default=2,
                      help="timed steps per turn: the runs take turns in blocks of this many "
                           "steps")
  parser.add_argument("--cpus", default="", help="pin the run to these CPUs (e.g. '1'); "
                      "the thread and device counts follow")
  parser.add_argument("--torch-threads", type=int, default=0, help="0: one per usable core")
  parser.add_argument("--vqjax-cpu-devices", type=int, default=0,
                      help="XLA CPU devices for vqjax (0: one per core, as vqjax.main runs)")
  parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")


def apply_timing_args(args) -> None:
  """Pins this process (and so its children) to --cpus and fills --torch-threads' default:
  one thread per usable core."""
  pin_cpus(args.cpus)
  args.torch_threads = args.torch_threads or len(os.sched_getaffinity(0))


def make_spec(impl: str, label: str, recipe, image_size: int, batch: int, args,
              steps: int | None = None, overrides: dict | None = None,
              **extra) -> dict:
  """A child's spec: implementation ('vqjax' | 'torch'), model recipe and overrides,
  image size, batch, warm-up and timed steps, threads and devices from `args`."""
  if impl == "vqjax" and getattr(args, "xla_flags", ""):
    extra.setdefault("xla_flags", args.xla_flags)
  if impl == "vqjax" and getattr(args, "vqjax_repo", ""):
    extra.setdefault("repo", args.vqjax_repo)
  return dict(impl=impl, label=label, recipe=recipe, overrides=overrides or {},
              model=build_model_config(recipe, overrides).to_dict(),
              image_size=image_size, batch=batch, warmup=args.warmup,
              steps=steps or args.steps, threads=args.torch_threads,
              cpu_devices=extra.pop("cpu_devices", args.vqjax_cpu_devices), **extra)


def package_version(pkg: str) -> str:
  """The installed version of `pkg`, or NOT_INSTALLED."""
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return NOT_INSTALLED


def cpu_model() -> str:
  """The CPU's model name (lscpu), else platform.processor()."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def mem_total_gib() -> float:
  """Total memory in GiB (/proc/meminfo), NaN where unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return float("nan")


def write_section(path: Path, section: str, begin: str, end: str) -> None:
  """Replaces the text between `begin` and `end` in `path` (appends it if absent)."""
  text = path.read_text() if path.exists() else "# Benchmarks\n\n"
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1].lstrip("\n")
    text = head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
  else:
    text = text.rstrip("\n") + "\n\n" + section
  path.write_text(text)


def fmt(value, digits=1) -> str:
  """A number with thousands separators and `digits` decimals; anything else as str."""
  return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)
