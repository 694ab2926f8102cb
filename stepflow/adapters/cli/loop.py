"""The event loop of stepflow's long-running processes (`serve`, `worker`, `run`).

uvloop where it is installed (a dependency on Linux and macOS): the backend's event loop does
the broker's work (frames in, orders out with their confirms) and the HTTP API's, and it runs
that with less CPU a message than asyncio's own loop; on 2 shared cores that CPU is what the
step path waits for. Elsewhere (Windows, PyPy) asyncio's loop, which behaves the same.

These processes also run the cycle collector less often (`GC_THRESHOLDS`). With Python's
defaults a backend at half load made three full collections in 15 s, of 45-75 ms each, during
which nothing moves: every step under way waits, and they set the job gap's p99 (issue #14).
A young generation of 10,000 objects instead of 700 keeps each collection to a few ms, and
the older generations are reached 20 and 100 times more rarely. Nearly everything a message
allocates is freed by its reference count anyway; the collector only finds cycles. An
embedding service keeps its own settings: only these entry points change them.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
GC_THRESHOLDS = (10_000, 20, 100)  # Python's: (700, 10, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's loop where it is installed, with `GC_THRESHOLDS`."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    finally:
        gc.set_threshold(*before)
