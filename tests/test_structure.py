"""The import graph of vqjax has no cycle and runs one way.

  python tests/test_structure.py      # prints the graph, module -> what it imports

Every `import vqjax.x` / `from vqjax import x` / `from vqjax.x import y` counts,
also inside functions (a deferred import is still a dependency).
"""

import ast
import os
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vqjax")
# Sub-packages count as one node each (their modules import each other freely).
PACKAGES = ("models", "quantizers", "data", "experiments", "prior")
# Who may import whom: main -> train -> evaluate -> everything below.
LAYERS = ["main", "train", "evaluate"]
# The paper tooling (sweeps, reports, HQ-VAE configs, prepare) sits on top of
# the library; nothing in the library imports it.
EXPERIMENTS = "experiments"
# The prior on the codes (vqjax/prior/) sits on the library too; only main runs it.
PRIOR = "prior"


def node_of(dotted: str) -> str:
  parts = dotted.split(".")
  if parts[0] != "vqjax" or len(parts) == 1:
    return ""
  return parts[1]


def imports_of(path: str) -> set[str]:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for n in ast.walk(tree):
    if isinstance(n, ast.Import):
      found.update(node_of(a.name) for a in n.names)
    elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
      if n.module == "vqjax":
        found.update(a.name for a in n.names)
      else:
        found.add(node_of(n.module))
  return {f for f in found if f}


def import_graph() -> dict[str, set[str]]:
  graph: dict[str, set[str]] = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(root, name), PACKAGE)
      top = rel.split(os.sep)[0]
      node = top if top in PACKAGES else os.path.splitext(top)[0]
      if node == "__init__":
        continue
      graph.setdefault(node, set()).update(imports_of(os.path.join(root, name)))
  for node in graph:
    graph[node].discard(node)
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if not state.get(nxt):
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = 2
    stack.pop()
    return None

  for node in sorted(graph):
    if not state.get(node):
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_import_graph_has_no_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, " -> ".join(cycle)


def test_imports_run_one_way():
  graph = import_graph()
  for i, upper in enumerate(LAYERS):
    for lower in LAYERS[i + 1:]:
      assert upper not in graph.get(lower, ()), f"{lower} imports {upper}"
  for node, deps in graph.items():
    if node not in LAYERS and node not in (EXPERIMENTS, PRIOR):
      assert not deps & set(LAYERS), f"library module {node} imports {deps & set(LAYERS)}"


def test_the_library_never_imports_the_experiments():
  graph = import_graph()
  assert EXPERIMENTS in graph  # the package is seen (its modules import the library)
  users = sorted(node for node, deps in graph.items() if EXPERIMENTS in deps)
  assert users == [], f"library modules importing vqjax.experiments: {users}"
  assert {"config_lib", "train"} <= graph[EXPERIMENTS]


def test_only_main_imports_the_prior():
  graph = import_graph()
  assert PRIOR in graph and {"export", "inference", "checkpointing"} <= graph[PRIOR]
  assert not graph[PRIOR] & set(LAYERS), graph[PRIOR] & set(LAYERS)
  users = sorted(node for node, deps in graph.items() if PRIOR in deps)
  assert users == ["main"], f"modules importing vqjax.prior: {users}"


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def _modules_with_all() -> list[str]:
  """Dotted names of the vqjax modules that declare __all__ (read with ast, not imported)."""
  names = []
  for root, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path) as f:
          tree = ast.parse(f.read())
        if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                  for t in n.targets) for n in tree.body):
          rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
          names.append(rel.removesuffix(".__init__"))
  return names


@pytest.mark.parametrize("module", _modules_with_all())
def test_every_name_in_all_exists(module):
  """`from module import *` works: __all__ names only what the module defines."""
  import importlib  # pylint: disable=import-outside-toplevel
  mod = importlib.import_module(module)
  assert [n for n in mod.__all__ if not hasattr(mod, n)] == []


if __name__ == "__main__":
  graph = import_graph()
  for node in sorted(graph):
    print(f"{node:14s} -> {', '.join(sorted(graph[node])) or '-'}")
  cycle = find_cycle(graph)
  print("cycle:", " -> ".join(cycle) if cycle else "none")
  sys.exit(1 if cycle else 0)
