"""The layers hold: the library (rsr/, data_pipelines/) never imports the binaries and presets in
experiments/, and no two of the library's packages import each other, directly or round a longer loop.

experiments/ sits on top: it parses flags and presets and calls the library. An import the other way makes
a cycle and means a library function depends on a binary's files; pass the value in instead. Inside the
library a package cycle (say world_model -> rewards -> world_model) means neither can be read, tested or
moved without the other; the module that needs both belongs above them.
"""

from __future__ import annotations

import ast
import collections
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ("rsr", "data_pipelines")
FORBIDDEN = "experiments"


def imports_of(source: str, forbidden: str = FORBIDDEN) -> list[tuple[int, str]]:
  """(line, module) of every absolute import of `forbidden` or its submodules, at any depth (functions too)."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == forbidden]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      if node.module.split(".")[0] == forbidden:
        found.append((node.lineno, node.module))
  return found


def package_of(module: str) -> str | None:
  """The library package a module belongs to: rsr.X for rsr/X/..., data_pipelines; None outside the library."""
  parts = module.split(".")
  if parts[0] == "rsr":
    return "rsr." + parts[1] if len(parts) > 1 else None
  return parts[0] if parts[0] in LIBRARY else None


def package_graph(sources: dict[str, str]) -> dict[tuple[str, str], list[str]]:
  """{module name: source} -> {(package, imported package): the modules that import it}, at any depth."""
  edges = collections.defaultdict(list)
  for module, source in sources.items():
    here = package_of(module)
    for node in ast.walk(ast.parse(source)):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from rsr import stages`
      for there in {package_of(n) for n in names} - {None, here}:
        edges[(here, there)].append(module)
  return edges


def cycles(edges) -> list[list[str]]:
  """The strongly connected groups of more than one package (Tarjan), each sorted."""
  graph = collections.defaultdict(set)
  for a, b in edges:
    graph[a].add(b)
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while not group or group[-1] != v:
        group.append(stack.pop())
        on.discard(group[-1])
      if len(group) > 1:
        out.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_check_finds_a_loop_through_three_packages():
  sources = {"rsr.a.x": "from rsr.b import y\n", "rsr.b.y": "def f():\n  import rsr.c.z\n",
             "rsr.c.z": "from rsr import a\n", "rsr.d.w": "from rsr.a import x\nimport numpy\n"}
  edges = package_graph(sources)
  assert edges[("rsr.c", "rsr.a")] == ["rsr.c.z"] and ("rsr.d", "rsr.a") in edges
  assert cycles(edges) == [["rsr.a", "rsr.b", "rsr.c"]]
  assert cycles(package_graph({k: v for k, v in sources.items() if k != "rsr.c.z"})) == []


def test_library_packages_import_each_other_in_one_direction_only():
  sources = {".".join(f.relative_to(ROOT).with_suffix("").parts): f.read_text()
             for package in LIBRARY for f in sorted((ROOT / package).rglob("*.py"))}
  edges = package_graph(sources)
  assert ("rsr.stages", "rsr.world_model") in edges  # the graph is read at all
  found = cycles(edges)
  detail = [f"{' <-> '.join(c)}: " + "; ".join(f"{a} -> {b} in {', '.join(sorted(set(edges[(a, b)])))}"
                                                 for a in c for b in c if (a, b) in edges) for c in found]
  assert not found, "package import cycles:\n" + "\n".join(detail)


def test_the_check_finds_imports_anywhere():
  source = ("import os\nimport experiments.common\n\ndef f():\n  from experiments.configs import collect\n"
            "  from experimentsx import y\n  from . import experiments\n")
  assert imports_of(source) == [(2, "experiments.common"), (5, "experiments.configs")]


@pytest.mark.parametrize("package", LIBRARY)
def test_library_does_not_import_experiments(package):
  files = sorted((ROOT / package).rglob("*.py"))
  assert files, f"no Python files under {ROOT / package}"
  bad = [f"{f.relative_to(ROOT)}:{line}: imports {module}"
         for f in files for line, module in imports_of(f.read_text())]
  assert not bad, "the library imports experiments/ (pass the value in instead):\n" + "\n".join(bad)
