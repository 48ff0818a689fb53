"""The library (rsr/, data_pipelines/) never imports the binaries and presets in experiments/.

experiments/ sits on top: it parses flags and presets and calls the library. An import the other way makes
a cycle and means a library function depends on a binary's files; pass the value in instead.
"""

from __future__ import annotations

import ast
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
