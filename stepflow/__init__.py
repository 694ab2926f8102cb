"""stepflow: an event-sourced workflow engine for Python on RabbitMQ.

The public API, imported lazily (so `import stepflow` and `stepflow --version` stay cheap):

    from stepflow import Worker, JobContext, JobFailed          # write a worker (stepflow.sdk)
    from stepflow import load_definition, DefinitionError       # a definition, checked on load
    from stepflow import open_engine, WorkflowState             # the store; what `wait()` returns
    from stepflow import EmbeddedRuntime, AmqpRuntime           # run in-process / over RabbitMQ
    from stepflow.queries import open_views                     # read the read models

See docs/api.md. Other modules are the implementation: their paths may change.

`stepflow.__version__` is the installed distribution's version (`DISTRIBUTION`, whose one
source is pyproject.toml's `version`); "0.0.0+unknown" when the package is imported from a
checkout that was never installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time `__getattr__` imports on first use
    from stepflow.adapters.amqp.runtime import AmqpRuntime
    from stepflow.adapters.backend import Backend
    from stepflow.adapters.embedded import EmbeddedRuntime
    from stepflow.adapters.persistence import open_engine
    from stepflow.engine.application import WorkflowEngine
    from stepflow.engine.definitions import DefinitionError, load_definition
    from stepflow.engine.state import WorkflowState
    from stepflow.sdk import JobContext, JobFailed, Worker

_EXPORTS = {
    "Worker": "stepflow.sdk",
    "JobContext": "stepflow.sdk",
    "JobFailed": "stepflow.sdk",
    "WorkflowEngine": "stepflow.engine.application",
    "WorkflowState": "stepflow.engine.state",
    "DefinitionError": "stepflow.engine.definitions",
    "load_definition": "stepflow.engine.definitions",
    "open_engine": "stepflow.adapters.persistence",
    "EmbeddedRuntime": "stepflow.adapters.embedded",
    "AmqpRuntime": "stepflow.adapters.amqp.runtime",
    "Backend": "stepflow.adapters.backend",
}

DISTRIBUTION = "stepflow-engine"  # the name on PyPI; the import name is `stepflow`

__all__ = ["AmqpRuntime", "Backend", "DefinitionError", "EmbeddedRuntime", "JobContext", "JobFailed", "Worker",
           "WorkflowEngine", "WorkflowState", "load_definition", "open_engine"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stepflow' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, "__version__"})
