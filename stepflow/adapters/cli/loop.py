"""The event loop of stepflow's long-running processes (`serve`, `worker`, `run`).

uvloop where it is installed (a dependency on Linux and macOS): the backend's event loop does
the broker's work (frames in, orders out with their confirms) and the HTTP API's, and it runs
that with less CPU a message than asyncio's own loop; on 2 shared cores that CPU is what the
step path waits for. Elsewhere (Windows, PyPy) asyncio's loop, which behaves the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's loop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
