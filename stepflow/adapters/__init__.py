"""Adapters: brokers (RabbitMQ, in-process), persistence settings, the CLI, the backend.

The worker SDK moved to `stepflow.sdk` (import it from `stepflow`). `from stepflow.adapters
import Worker` (and JobContext, JobFailed) still works for one release, with a
`DeprecationWarning`; resolved lazily, so importing an adapter never imports the SDK.
"""

from __future__ import annotations

from typing import Any

_MOVED = ("JobContext", "JobFailed", "Worker")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'stepflow.adapters' has no attribute {name!r}")
    import stepflow.sdk
    from stepflow._deprecation import moved

    moved(f"stepflow.adapters.{name}", f"import {name} from stepflow (or stepflow.sdk)")
    return getattr(stepflow.sdk, name)
