"""How a long-running command ends: SIGTERM or SIGINT, the same way for each of them.

`serve`, `serve --embedded` and `worker` each installed and removed their own handlers, with
their own watch loop; a fix to one (a handler left behind, a check forgotten) missed the
others. `stop_signals()` owns the handlers for the life of the command; `watch()` is the loop
that notices a dead part between signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

from stepflow.adapters.wakeup import woken

SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECK_EVERY_S = 1.0


@contextlib.asynccontextmanager
async def stop_signals(on_second: Callable[[], None] | None = None) -> AsyncIterator[asyncio.Event]:
    """An event set by the first SIGTERM/SIGINT; `on_second` runs on any further one.

    A supervisor's SIGTERM asks for a clean stop; a second one (an impatient operator) is the
    time to give up on what is still running, which only the command knows how to do.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set() and on_second is not None:
            on_second()
        stop.set()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


async def watch(stop: asyncio.Event, check: Callable[[], None], every_s: float = CHECK_EVERY_S) -> None:
    """Until `stop` is set, call `check` (which raises when a part has died) every `every_s`."""
    while not stop.is_set():
        check()
        await woken(stop, every_s)
