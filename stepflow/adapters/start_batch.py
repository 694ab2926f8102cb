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

Under load the starts need no commit of their own: the inbox `hold`s the batcher once it has
deliveries in hand, and its commit `take`s the waiting starts along
(`WorkflowEngine.execute_and_start`). While held, the batcher's own commits wait; whatever the
inbox's commit did not take is committed once it `release`s (or, if two held commits in a row
took none, at once). A start that comes within `window_s` of a release waits that long for
the next batch (the inbox was busy a moment ago, and a start committed alone would hold up the
store thread that batch needs); an idle inbox holds nothing, so a start then waits for nothing
but its own commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import structlog

from stepflow.engine.application import Start, WorkflowEngine

log = structlog.get_logger("stepflow.starts")

Commit = Callable[[Sequence[Start]], Awaitable[Sequence[UUID | Exception]]]
MAX_BATCH = 256
T = TypeVar("T")


def with_position(engine: WorkflowEngine, fn: Callable[..., T], *args: Any) -> tuple[T, int]:
    """`fn(*args)` in the store thread, and a log position that includes what it stored: its
    commit's (read in the thread that made it), or the log's end when it stored nothing (a
    start found stored already was stored before). A caller can read its own start back."""
    before = engine.committed_position()
    result = fn(*args)
    after = engine.committed_position()
    return result, after if after != before else engine.max_notification_id()


class StartBatcher:
    """Collects `start()` calls while a commit runs; `commit` stores a list of starts in one
    transaction and answers each (see `WorkflowEngine.start_workflows`)."""

    def __init__(self, commit: Commit, *, max_batch: int = MAX_BATCH, window_s: float = 0.0) -> None:
        self.commit = commit
        self.max_batch = max_batch
        self.window_s = window_s
        # one entry per caller: its starts and their answers, kept together in one batch
        self._pending: list[tuple[Sequence[Start], list[asyncio.Future[UUID]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # commits made (how much was grouped: started / batches)
        self.started = 0  # starts committed and answered with an id
        self.ridden = 0  # of those, committed with an inbound batch
        self.position = 0  # a log position that includes every start answered so far
        self._held = False
        self._holder: asyncio.AbstractEventLoop | None = None
        self._releases = 0
        self._released = asyncio.Event()
        self._holding = asyncio.Event()
        self._released_at = 0.0

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

    def committed_at(self, position: int) -> None:
        """A commit that held starts is at `position` (positions only grow)."""
        self.position = max(self.position, position)

    def hold(self) -> None:
        """A commit that will `take` the waiting starts is coming: do not commit them apart.
        (Only the starts of the holder's event loop: a test client's own loop is not held.)"""
        self._held = True
        self._holder = asyncio.get_running_loop()
        self._released.clear()
        self._holding.set()

    def release(self) -> None:
        """That commit is over (or never came): commit what it left."""
        self._held = False
        self._releases += 1
        self._released.set()
        self._holding.clear()
        if self._holder is not None:
            self._released_at = self._holder.time()

    def take(self) -> Riders | None:
        """The waiting starts (a batch of them), for a commit that is not the batcher's own;
        the taker answers them with `Riders.answer` after its commit, or gives them back."""
        if not self._pending:
            return None
        loop = asyncio.get_running_loop()
        batch = self._take()
        if any(futures[0].get_loop() is not loop for _, futures in batch):
            self._pending[:0] = batch  # another loop's callers: their own flusher commits them
            return None
        return Riders(self, batch)

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
        try:
            await self._flush_pending()
        except BaseException:  # cancelled while it waited for a holder: nobody waits forever
            left = [f for _, fs in self._pending for f in fs]
            self._pending = []
            _answer(left, exception=_StoreFailed(RuntimeError("shutting down: the start was not answered")))
            raise

    async def _flush_pending(self) -> None:
        waited_from: int | None = None
        windowed = False
        while self._pending:
            if self._held and self._holder is asyncio.get_running_loop():
                # The commit under way may have taken its starts before these came; the next
                # takes them. Past two, the holder's batches take none (nothing but workers'
                # announcements, say): commit apart rather than wait on.
                waited_from = self._releases if waited_from is None else waited_from
                if self._releases - waited_from < 2:
                    await self._released.wait()
                    continue
            waited_from = None
            loop = asyncio.get_running_loop()
            if (not windowed and self.window_s and self._holder is loop
                    and loop.time() - self._released_at < self.window_s):
                windowed = True  # the inbox was busy a moment ago: its next batch may come
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._holding.wait(), self.window_s)
                continue
            windowed = False
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
            self._answer_all(futures, results)

    def _answer_all(self, futures: Sequence[asyncio.Future[UUID]], results: Sequence[UUID | Exception]) -> None:
        for future, result in zip(futures, results, strict=True):
            if isinstance(result, Exception):
                _answer([future], exception=result)
            else:
                self.started += 1
                _answer([future], result=result)

    def _give_back(self, batch: list[tuple[Sequence[Start], list[asyncio.Future[UUID]]]]) -> None:
        self._pending[:0] = batch
        flusher = self._flusher
        if flusher is None or flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="stepflow-start-batch")

    async def close(self) -> None:
        """Wait for the commit under way and for what is pending (nothing is dropped)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher


class Riders:
    """Starts taken by another commit: answered after it, or given back to the batcher."""

    def __init__(self, batcher: StartBatcher,
                 batch: list[tuple[Sequence[Start], list[asyncio.Future[UUID]]]]) -> None:
        self._batcher = batcher
        self._batch = batch
        self.starts = [start for entry, _ in batch for start in entry]

    def answer(self, results: Sequence[UUID | Exception], position: int) -> None:
        """Committed (at `position`): each caller hears its id or its own error."""
        self._batcher.ridden += len(self.starts)
        self._batcher.committed_at(position)
        self._batcher._answer_all([f for _, fs in self._batch for f in fs], results)

    def fail(self, error: BaseException) -> None:
        """The commit failed as a whole (the store), or nobody can tell whether it was made
        (cancelled while it ran): every caller hears it rather than waiting forever."""
        failure = error if isinstance(error, Exception) else RuntimeError(
            "shutting down: the start was not answered")
        _answer([f for _, fs in self._batch for f in fs], exception=_StoreFailed(failure))

    def give_back(self) -> None:
        """Not committed (the commit raised with nothing stored): the batcher commits them."""
        self._batcher._give_back(self._batch)


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
