"""Attribution of a JAX profiler trace of vqjax's train step (benchmarks/profile_step.py).

Every executed thunk's self time per step is attributed by its HLO metadata
(op_name) to encoder / decoder (forward, backward), quantizers, the optimizer and
the rest; all-reduces (and the rendezvous waits inside them) count as cross-device
reduction, and core time with no thunk running (devices x wall - busy) as host
overhead / idle. Needs `--xla_cpu_enable_xprof_traceme=true` in XLA_FLAGS.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time


def classify(op_name: str, instr: str) -> str:
  if instr.startswith("all-reduce") or instr.startswith("all-gather") \
      or instr.startswith("reduce-scatter") or instr.startswith("collective"):
    return "cross-device reduction"
  backward = "transpose(jvp(" in op_name
  for key, piece in (("quantizer", "quantizers"), ("encoder", "encoder"),
                     ("pre_quant", "encoder"), ("upsample_top", "decoder"),
                     ("decoder", "decoder")):
    if f"/{key}" in op_name:
      if piece == "quantizers":
        return piece
      return f"{piece} {'backward' if backward else 'forward'}"
  if "/adam" in op_name or "scale_by_adam" in op_name or "apply_updates" in op_name:
    return "optimizer"
  return "other (loss, optimizer, metrics, copies)"


def hlo_metadata(hlo_text: str, shapes: dict | None = None) -> dict[str, str]:
  """instruction name -> op_name metadata (a fusion's: the first op_name inside it)."""
  comps: dict[str, list[str]] = {}
  shapes = {} if shapes is None else shapes
  current = None
  instr_meta: dict[str, str] = {}
  instr_calls: dict[str, str] = {}
  users: dict[str, list[str]] = collections.defaultdict(list)
  for line in hlo_text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      comps[current] = []
      continue
    mi = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = ", line)
    if mi and current is not None:
      name = mi.group(1)
      comps[current].append(name)
      op = re.search(r'op_name="([^"]*)"', line)
      if op:
        instr_meta[name] = op.group(1)
      calls = re.search(r"calls=%?([\w.\-]+)", line)
      if calls:
        instr_calls[name] = calls.group(1)
      body = line.split(" = ", 1)[1].split("metadata=")[0]
      for operand in re.findall(r"%([\w.\-]+)", body.split("calls=")[0]):
        users[operand].append(name)
      shapes[name] = body[:160]
  def own(name):
    meta = instr_meta.get(name)
    if meta is None and name in instr_calls:
      for inner in comps.get(instr_calls[name], []):
        if inner in instr_meta:
          return instr_meta[inner]
    return meta

  for name, comp in instr_calls.items():  # a fusion: show its root too
    if comps.get(comp):
      shapes[name] = shapes.get(name, "")[:80] + " :: " + shapes.get(comps[comp][-1], "")
  out = {}
  for name in set(instr_meta) | set(instr_calls):
    meta = own(name)
    if meta is None:  # e.g. a library (YNNPACK) fusion of a bare convolution: its users'
      meta = next((own(u) for u in users.get(name, ()) if own(u)), None)
    out[name] = meta or ""
  return out


def trace_step(ctx: dict, steps: int, devices: int, top: int = 25) -> dict:
  """Per-step core-milliseconds by piece from a JAX profiler trace of `steps` train
  steps: ctx = {step_fn, holder: {state}, x} (profile_step.vqjax_pieces), `devices`
  XLA devices, the `top` most expensive instructions listed."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax._src.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  step_fn, holder, x = ctx["step_fn"], ctx["holder"], ctx["x"]
  shapes: dict[str, str] = {}
  meta = hlo_metadata(step_fn.lower(holder["state"], {"image": x}).compile().as_text(), shapes)
  logdir = tempfile.mkdtemp(prefix="vqjax_trace_")
  jax.profiler.start_trace(logdir)
  t0 = time.perf_counter()
  for _ in range(steps):
    holder["state"], m = step_fn(holder["state"], {"image": x})
    jax.block_until_ready((holder["state"], m))
  wall = (time.perf_counter() - t0) / steps
  jax.profiler.stop_trace()
  pd = ProfileData.from_file(glob.glob(logdir + "/**/*.xplane.pb", recursive=True)[0])
  by_piece = collections.Counter()
  by_instr = collections.Counter()
  by_kind = collections.Counter()
  dispatch_ns = 0
  for plane in pd.planes:
    for line in plane.lines:
      if line.name == "python":
        dispatch_ns += sum(e.duration_ns for e in line.events
                           if e.name.startswith("PjitFunction(train_step"))
      if not line.name.startswith("tf_XLAEigen"):
        continue
      events = sorted(((e.start_ns, e.start_ns + e.duration_ns, e.name) for e in line.events),
                      key=lambda t: (t[0], -t[1]))
      # self time: an event's duration minus that of the events nested in it
      stack: list[list] = []
      selfs = []
      for s, e, name in events:
        while stack and stack[-1][1] <= s:
          selfs.append(stack.pop())
        if stack:
          stack[-1][3] -= (e - s)
        stack.append([s, e, name, e - s])
      selfs += stack
      for s, e, name, self_ns in selfs:
        if name in ("Rendezvous",) or name.startswith("Wait: pending"):
          by_piece["cross-device reduction"] += self_ns
          continue
        instr = name
        if instr in meta:
          by_piece[classify(meta[instr], instr)] += self_ns
          by_instr[instr] += self_ns
          by_kind[op_kind(instr, shapes.get(instr, ""))] += self_ns
  # busy = top-level ThunkExecutor::Execute spans (one per device per step)
  busy_total = 0
  for plane in pd.planes:
    for line in plane.lines:
      if line.name.startswith("tf_XLAEigen"):
        spans = sorted((e.start_ns, e.start_ns + e.duration_ns) for e in line.events
                       if e.name == "ThunkExecutor::Execute")
        end = -1
        for s, e in spans:
          if s >= end:
            busy_total += e - s
            end = e
  n = devices
  ms = {k: v / 1e6 / steps for k, v in by_piece.items()}
  ms["host overhead / idle"] = max(0.0, n * wall * 1e3 - busy_total / 1e6 / steps)
  top = [(k, meta.get(k, ""), v / 1e6 / steps, shapes.get(k, ""))
         for k, v in by_instr.most_common(top)]
  kinds = {k: v / 1e6 / steps for k, v in by_kind.items()}
  return dict(wall_ms=wall * 1e3, devices=n, core_ms=ms, top_instructions=top,
              core_ms_by_kind=kinds, dispatch_ms=dispatch_ns / 1e6 / steps,
              traced_ms=sum(v for k, v in ms.items() if k != "host overhead / idle"))


def op_kind(instr: str, hlo: str) -> str:
  """What an executed instruction mostly is: convolution, dot, copy/transpose/pad,
  collective, control flow or other (elementwise/reduction fusions)."""
  root = hlo.split(" :: ")[-1]
  if instr.startswith(("all-reduce", "all-gather", "reduce-scatter", "collective")):
    return "collective"
  if " convolution(" in root or instr.startswith(("convolution", "conv_general")):
    return "convolution"
  if " dot(" in root or instr.startswith("dot"):
    return "dot"
  if any(t in instr for t in ("copy", "transpose", "pad", "concatenate", "slice", "bitcast")):
    return "copy / transpose / pad / slice"
  if instr.startswith(("while", "conditional", "call")):
    return "control flow"
  return "other (elementwise, reductions, scatter/gather)"


def print_trace(tr: dict, show_hlo: bool = False) -> None:
  """Prints trace_step's result: core-ms by piece, by kind of operation, top instructions."""
  print(f"\nvqjax trace: {tr['wall_ms']:.1f} ms per step, {tr['devices']} devices, "
        f"Python dispatch of the step {tr.get('dispatch_ms', 0):.1f} ms; "
        "core-ms per step (sum over devices). XLA's own (Eigen) convolution thunks emit "
        "no trace events: with them, their time falls under 'host overhead / idle'.")
  for k, v in sorted(tr["core_ms"].items(), key=lambda kv: -kv[1]):
    print(f"  {k:45s} {v:8.1f}  ({v / tr['devices']:.1f} ms of wall)")
  print("  by kind of operation:")
  for k, v in sorted(tr.get("core_ms_by_kind", {}).items(), key=lambda kv: -kv[1]):
    print(f"  {k:45s} {v:8.1f}")
  print("  top instructions:")
  for k, meta, v, shape in tr["top_instructions"]:
    print(f"    {v:7.1f}  {k:28s} {meta.split('HierarchicalVQVAE._run/')[-1][-70:]}")
    if show_hlo:
      print(f"             {shape}")
