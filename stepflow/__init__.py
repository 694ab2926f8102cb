"""stepflow: an event-sourced workflow engine for Python on RabbitMQ.

The main entry points, imported lazily (so `import stepflow` stays cheap):

    from stepflow import Worker, JobContext, JobFailed          # write a worker
    from stepflow import load_definition, open_engine           # definitions, the store
    from stepflow import EmbeddedRuntime, AmqpRuntime           # run in-process / over RabbitMQ

`stepflow.__version__` is the installed distribution's version (`DISTRIBUTION`, whose one
source is pyproject.toml's `version`); "0.0.0+unknown" when the package is imported from a
checkout that was never installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Worker": "stepflow.adapters.worker",
    "JobContext": "stepflow.adapters.worker",
    "JobFailed": "stepflow.adapters.worker",
    "WorkflowEngine": "stepflow.engine.application",
    "load_definition": "stepflow.engine.definitions",
    "open_engine": "stepflow.adapters.persistence",
    "EmbeddedRuntime": "stepflow.adapters.embedded",
    "AmqpRuntime": "stepflow.adapters.amqp.runtime",
    "Backend": "stepflow.adapters.backend",
}

DISTRIBUTION = "stepflow-engine"  # the name on PyPI; the import name is `stepflow`

__all__ = ["AmqpRuntime", "Backend", "EmbeddedRuntime", "JobContext", "JobFailed", "Worker",
           "WorkflowEngine", "load_definition", "open_engine"]


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
