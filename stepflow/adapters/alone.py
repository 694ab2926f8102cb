"""`Alone`: a redelivered message applied alone has the backend's publishing to itself.

The crash-loop breaker (`stepflow.adapters.inbox_batch`) blames a backend's death on the
message it was applying alone. That is only fair if nothing else was running: a backend that
dies at start-up while it publishes its orders again would otherwise get the messages it was
applying quarantined, innocent as they are, since redelivered messages come exactly then. So
the outbox's work is `shared` (its rounds, its position writes, each publish until confirmed)
and the breaker's is `alone`: it waits until no shared work runs, and none starts meanwhile.
Nothing waits while nobody is alone, which is nearly always.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from stepflow.adapters.wakeup import woken

log = structlog.get_logger("stepflow.backend")

# How long `alone` waits for the shared work under way; past that it goes on regardless (a
# broker that holds back confirms must not stop the inbox too).
ALONE_WAIT_S = 5.0


class Alone:
    def __init__(self, wait_s: float = ALONE_WAIT_S) -> None:
        self.wait_s = wait_s
        self._shared = 0
        self._waiting = 0  # shared work waiting for its turn
        self._idle = asyncio.Event()  # no shared work runs
        self._idle.set()
        self._open = asyncio.Event()  # nobody is alone: shared work may start
        self._open.set()
        self._one = asyncio.Lock()  # one alone at a time
        self._share = _Share(self)

    async def enter(self) -> None:
        """Start shared work (waits while someone is alone); `leave` when it ends."""
        if not self._open.is_set():
            self._waiting += 1
            try:
                while not self._open.is_set():
                    await self._open.wait()
            finally:
                self._waiting -= 1
        self.entered()

    def entered(self) -> None:
        """Shared work that starts now, without waiting: the caller already holds a share
        (waiting then would wait for itself)."""
        self._shared += 1
        self._idle.clear()

    def leave(self) -> None:
        self._shared -= 1
        if self._shared == 0:
            self._idle.set()

    def shared(self) -> _Share:
        """`async with alone.shared():` shared work (one object for all: the outbox takes a
        share at every round, so no generator is made each time)."""
        return self._share

    @asynccontextmanager
    async def aside(self) -> AsyncIterator[None]:
        """Shared work that only waits (for another batch's confirm, for the workers to go
        quiet after a take-over) steps aside meanwhile: the inbox must not wait for the
        workers through it. It takes its share back after, waiting while someone is alone."""
        self.leave()
        try:
            yield
        finally:
            try:
                await self.enter()
            except BaseException:
                self.entered()  # cancelled while waiting: its `leave` is still to come
                raise

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        while self._waiting and self._open.is_set():  # shared work that waited for the last one goes first
            await asyncio.sleep(0)
        async with self._one:
            self._open.clear()
            try:
                if not await woken(self._idle, self.wait_s):
                    log.warning("alone_despite_shared_work", running=self._shared, waited_s=self.wait_s)
                yield
            finally:
                self._open.set()


class _Share:
    __slots__ = ("_alone",)

    def __init__(self, alone: Alone) -> None:
        self._alone = alone

    async def __aenter__(self) -> None:
        await self._alone.enter()

    async def __aexit__(self, *_: object) -> None:
        self._alone.leave()
