"""Wait for a wake-up or a poll interval, whichever comes first, without losing a cancel.

`asyncio.wait_for(event.wait(), t)` on Python 3.11 returns normally when the event is set at
the moment the waiting task is cancelled: the cancellation is lost, and a loop built on it
never ends (`Backend.stop()` hung that way, about one run in ten under load). `asyncio.timeout`
tells its own timeout from a cancel that comes from outside.
"""

from __future__ import annotations

import asyncio


async def woken(event: asyncio.Event, timeout_s: float) -> bool:
    """True when `event` was set within `timeout_s` seconds, False when the time ran out."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
