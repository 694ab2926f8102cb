"""The layers and the absence of import circles, enforced in CI.

`lint-imports` checks the contracts of pyproject.toml's `[tool.importlinter]` (engine <
projections < adapters; only the CLI reaches the bootstrap; no cycles between siblings of a
layer). A contract between siblings does not see a circle that leaves the package and comes
back (http.server -> cli.run -> bootstrap -> http.server), so the second test walks grimp's
graph of every stepflow module, imports inside functions included, and finds no circle at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), f"{lint}: install the test extra (import-linter)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout, done.stdout


def circles(graph: grimp.ImportGraph) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_module_imports_itself_back() -> None:
    sys.path.insert(0, str(ROOT))  # the checkout's stepflow, whatever is installed
    try:
        graph = grimp.build_graph("stepflow", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    assert "stepflow.adapters.memory.broker" in graph.modules  # a namespace package would be invisible
    found = [sorted(c) for c in circles(graph)]
    assert found == [], found


def test_the_circle_finder_finds_circles() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in (("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")):
        graph.add_import(importer=importer, imported=imported)
    assert sorted(map(sorted, circles(graph))) == [["a", "b", "c"], ["d", "e"]]


def test_every_module_the_wiring_serves_is_forbidden_to_import_it() -> None:
    """The "only the CLI reaches the bootstrap" contract lists its modules by name: a module
    added later and not listed there could import the wiring unseen."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (wiring,) = [c for c in contracts if "stepflow.bootstrap" in c.get("forbidden_modules", [])]
    listed = set(wiring["source_modules"])
    package = ROOT / "stepflow"
    wired = {f"stepflow.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__", "bootstrap")}
    wired |= {f"stepflow.{p.name}" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()
              and p.name != "adapters"}
    adapters = package / "adapters"
    wired |= {f"stepflow.adapters.{p.stem}" for p in adapters.glob("*.py") if p.stem != "__init__"}
    wired |= {f"stepflow.adapters.{p.name}" for p in adapters.iterdir()
              if p.is_dir() and p.name not in ("cli", "__pycache__")}
    assert wired - listed == set()
