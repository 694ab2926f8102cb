"""Wait for a wake-up or a poll interval, whichever comes first, without losing a cancel;
and cancel tasks and see them end.

`asyncio.wait_for(event.wait(), t)` on Python 3.11 returns normally when the event is set at
the moment the waiting task is cancelled: the cancellation is lost, and a loop built on it
never ends (`Backend.stop()` hung that way, about one run in ten under load). `asyncio.timeout`
tells its own timeout from a cancel that comes from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def woken(event: asyncio.Event, timeout_s: float) -> bool:
    """True when `event` was set within `timeout_s` seconds, False when the time ran out."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancelled(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks, then wait until each has ended, whatever it raised on the way out."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
