"""Finding the `Worker`s a process should run, from `MODULE:ATTR` specs or beside a definition.

Its own module because three entry points need it (`stepflow run`, `serve --embedded`,
`stepflow worker`) and the bootstrap with them: kept in the CLI, it made the HTTP server
import the CLI, which imports the server.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stepflow.sdk import Worker


def load_workers(specs: list[str], definition_path: Path) -> list[Worker]:
    """The workers named by `specs`; with none, every `Worker` in workers.py beside the definition."""
    if not specs:
        beside = definition_path.parent / "workers.py"
        if not beside.exists():
            return []
        module = import_target(str(beside))
        return [value for value in vars(module).values() if isinstance(value, Worker)]
    workers: list[Worker] = []
    for spec in specs:
        target, _, attr = spec.rpartition(":")
        if not target:
            raise ValueError(f"--worker expects MODULE:ATTR, got {spec!r}")
        worker = getattr(import_target(target), attr)
        if not isinstance(worker, Worker):
            raise TypeError(f"{spec} is a {type(worker).__name__}, not a stepflow Worker")
        workers.append(worker)
    return workers


def load_worker(target: str) -> Worker:
    """One worker from `MODULE:ATTR` (`stepflow worker`): TypeError if ATTR is no Worker."""
    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {target!r}")
    worker = getattr(import_target(module), attr, None)
    if not isinstance(worker, Worker):
        raise TypeError(f"{target} is {type(worker).__name__}, not a stepflow Worker")
    return worker


def import_target(target: str) -> ModuleType:
    """A module by dotted name, or a .py file by path (imported once per path)."""
    if target.endswith(".py"):
        path = Path(target).resolve()
        name = f"stepflow_workers_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)
