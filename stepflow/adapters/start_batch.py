"""Group commit for workflow starts: concurrent callers share one transaction.

A start costs one store commit; with SQLite or PostgreSQL the commit (an fsync, a round trip)
is most of it, and the store thread runs one call at a time. So starts that arrive while a
commit runs wait for it anyway: they are collected and committed together by the next one
(`WorkflowEngine.start_workflows`), as the inbox does with the broker's deliveries.

No timer: an idle batcher commits the first start at once, and a batch is only as big as
what arrived during the previous commit (at most `max_batch`). Each caller gets its own
answer (its id, or the exception its start alone would raise) after the commit that holds
it. A caller that gives up (cancelled) does not cancel the commit of the others; its start
is stored all the same, as a start whose answer was lost would be.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import structlog

from stepflow.engine.application import Start

log = structlog.get_logger("stepflow.starts")

Commit = Callable[[Sequence[Start]], Awaitable[Sequence[UUID | Exception]]]
MAX_BATCH = 256


class StartBatcher:
    """Collects `start()` calls while a commit runs; `commit` stores a list of starts in one
    transaction and answers each (see `WorkflowEngine.start_workflows`)."""

    def __init__(self, commit: Commit, *, max_batch: int = MAX_BATCH) -> None:
        self.commit = commit
        self.max_batch = max_batch
        # one entry per caller: its starts and their answers, kept together in one batch
        self._pending: list[tuple[Sequence[Start], list[asyncio.Future[UUID]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # commits made (how much was grouped: started / batches)
        self.started = 0  # starts committed and answered with an id

    async def start(self, start: Start) -> UUID:
        """Store one start (grouped with whoever else is starting); its id, or its error."""
        (answer,) = await self.settle([start])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def settle(self, starts: Sequence[Start]) -> list[UUID | Exception]:
        """Store several starts in the same commit (a bulk request), with whatever else is
        waiting; every item's answer, its id or the exception its start alone would raise.
        A failure of the store itself (not of one item) is raised."""
        if not starts:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[UUID]] = [loop.create_future() for _ in starts]
        self._pending.append((starts, futures))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            # (another event loop's flusher, a test client's that ended: its entries are dead too)
            self._pending = [(s, fs) for s, fs in self._pending if fs[0].get_loop() is loop]
            self._flusher = asyncio.create_task(self._flush(), name="stepflow-start-batch")
        answers: list[UUID | Exception] = []
        for future in futures:
            try:
                answers.append(await future)
            except _StoreFailed as failed:
                raise failed.error from None
            except Exception as error:  # noqa: BLE001  this item's own answer
                answers.append(error)
        return answers

    def _take(self) -> list[tuple[Sequence[Start], list[asyncio.Future[UUID]]]]:
        """The next batch: whole entries, at least one, up to `max_batch` starts."""
        taken, size = 0, 0
        for starts, _ in self._pending:
            if taken and size + len(starts) > self.max_batch:
                break
            taken += 1
            size += len(starts)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    async def _flush(self) -> None:
        """Commit what is pending, then what arrived meanwhile, until nothing is left."""
        while self._pending:
            batch = self._take()
            starts = [start for entry, _ in batch for start in entry]
            futures = [future for _, entry_futures in batch for future in entry_futures]
            try:
                results = await self.commit(starts)
            except Exception as error:  # noqa: BLE001  the store failed: every caller of the batch hears it
                log.warning("start_batch_failed", starts=len(starts), error=repr(error))
                _answer(futures, exception=_StoreFailed(error))
                continue
            except BaseException:  # cancelled (shutting down): nobody waits forever
                left = futures + [f for _, fs in self._pending for f in fs]
                self._pending = []
                _answer(left, exception=_StoreFailed(RuntimeError("shutting down: the start was not answered")))
                raise
            self.batches += 1
            for future, result in zip(futures, results, strict=True):
                if isinstance(result, Exception):
                    _answer([future], exception=result)
                else:
                    self.started += 1
                    _answer([future], result=result)

    async def close(self) -> None:
        """Wait for the commit under way and for what is pending (nothing is dropped)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher


class _StoreFailed(Exception):
    """The whole batch failed (the store, not one item): raised to each caller as the error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _answer(futures: Sequence[asyncio.Future[UUID]], *, result: UUID | None = None,
            exception: Exception | None = None) -> None:
    for future in futures:
        if future.done():  # its caller gave up (cancelled): the start is stored all the same
            continue
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)  # type: ignore[arg-type]
