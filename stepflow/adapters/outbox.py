"""The outbox: job orders are published from stored events, never straight from a command.

Orders go out from what was COMMITTED, by two paths that meet in one position:

- from memory: the engine hands over the events of each commit made in this process
  (`JustStored`, fed by `WorkflowEngine.on_saved`), and the pump publishes their orders at
  once, without reading them back, when the commit follows on from what was already handled
  (its first notification id is the next one): the step path then has no log read and no
  thread hop between the commit and the publish;
- from the log (`OutboxReader`, a `LogFollower` with its tracked position `Tracking("outbox",
  id)`): at start, after a gap (another process or thread committed in between), when a
  commit holds a stop (its jobs' instances are read from the store), and when woken by
  another process's write or the poll. The log stays the recovery path: the position is only
  ever written over orders the broker confirmed, so a crash between store and publish, or
  between publish and the position write, republishes on restart (at least once, never
  lost). Duplicates are harmless because an order's message id is its job id, which workers
  remember.

What goes where is read from the events (`Dispatch`): a job to the broker, a notification
step's call to the `Notifier`, and a clock for each order with a timeout (`Deadlines`). The
broker builds the wire message at its edge; nothing here encodes.

Confirms are pipelined (`OutboxPump`): a confirm for a persistent message comes only once the
broker has written it to disk or a worker has acked it, which for a job order means the job
is done; waiting for one batch's confirms before publishing the next would put that whole
wait in front of every other workflow's next step. So batches are published while earlier
ones await their confirms, and the position advances only over a prefix of batches that are
all confirmed, in the order they were handled. The position write runs beside the publishing
(its own lock), at most once every `POSITION_EVERY_S`: one write covers every batch
confirmed since the last, and no order waits for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from stepflow.adapters.alone import Alone
from stepflow.adapters.deadlines import Deadlines
from stepflow.adapters.faults import FAULT, crash
from stepflow.adapters.notify.notifications import NOTIFICATION, Notifier
from stepflow.adapters.wakeup import cancelled, woken
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.follower import CommitsSeen, LogFollower
from stepflow.engine.ports import BackendBroker, StopJob
from stepflow.engine.state import WorkflowState

OUTBOX = "outbox"
TOPICS = ("JobSubmitted", "WorkflowStopped", "WorkflowDeleted", "JobTimedOut")
# At most one position write this often while publishing (see `OutboxPump`).
POSITION_EVERY_S = 0.02


def stop_jobs(event: ev.WorkflowStopped | ev.WorkflowDeleted | ev.JobTimedOut,
              state: WorkflowState | None = None) -> list[StopJob]:
    """The jobs that were running, which workers are told to stop. A timed-out job is
    stopped too: a worker still at it would hold a prefetch slot to the end. `state` (the
    workflow's) says each job's wire id and the instance last heard working on it."""
    jobs = (event.job_id,) if isinstance(event, ev.JobTimedOut) else event.jobs
    stops = []
    for job_id in jobs:
        job = state.jobs.get(job_id) if state is not None else None
        stops.append(StopJob(workflow_id=event.originator_id, job_id=job_id,
                             wire_id=job.wire_id if job is not None else None,
                             instance_id=job.worker if job is not None else None))
    return stops


class OutboxReader:
    """The synchronous half (runs in the outbox's thread): read the next events, track progress."""

    def __init__(self, engine: WorkflowEngine, batch_size: int = 500) -> None:
        self.engine = engine
        self.log = LogFollower(engine, OUTBOX, TOPICS, batch_size=batch_size)
        self.more = False  # the last read stopped at its batch size, short of the log's end

    @property
    def position(self) -> int:
        return self.log.position

    def next_batch(self, after: int | None = None) -> tuple[int, list[ev.JobSubmitted], list[StopJob]]:
        """(handled up to, orders, jobs to stop) after `after` (default: the tracked position).

        "Handled up to" is the last notification id this read accounts for, orders or not: the
        log's end when the read got all there was (so the next commit of this process follows
        on from it, and goes out from memory), `after` itself when there is nothing new."""
        after = self.position if after is None else after
        end = self.engine.max_notification_id()
        self.more = False
        if end <= after:
            return after, [], []
        items = self.log.read(after, stop=end)
        orders: list[ev.JobSubmitted] = []
        stops: list[StopJob] = []
        for _, event in items:
            if isinstance(event, ev.JobSubmitted):
                orders.append(event)
            elif isinstance(event, (ev.WorkflowStopped, ev.WorkflowDeleted, ev.JobTimedOut)):
                # rare, so the workflow is read from the store, here in the outbox's thread
                stops.extend(stop_jobs(event, self.engine.workflow_state(event.originator_id)))
        self.more = len(items) >= self.log.batch_size
        return (items[-1][0] if self.more else end), orders, stops

    def advance(self, position: int) -> None:
        self.log.record(position)


class JustStored(CommitsSeen[list[ev.JobSubmitted]]):
    """The orders of each commit this process made, for the pump to publish from memory; no
    orders (None) for a commit that holds an event that stops jobs: the pump then reads the
    log, which looks up their workers. A standby backend's commits are never taken: the bound
    keeps them from piling up."""

    def __init__(self, bound: int = 1024) -> None:
        super().__init__(_orders_of, bound)


def _orders_of(events: list[ev.Event]) -> list[ev.JobSubmitted] | None:
    if any(isinstance(event, _STOPPING) for event in events):
        return None
    return [event for event in events if isinstance(event, ev.JobSubmitted)]


_STOPPING = (ev.WorkflowStopped, ev.WorkflowDeleted, ev.JobTimedOut)


Publish = Callable[[list[ev.JobSubmitted], list[StopJob]], Coroutine[Any, Any, None]]


class Dispatch:
    """Where one batch read by the outbox goes, by each event's fields: jobs to the broker,
    notification steps to the notifier, a clock for each order with a timeout. `publish`
    returns once the broker confirmed every message."""

    def __init__(self, broker: BackendBroker, notifier: Notifier, deadlines: Deadlines) -> None:
        self.broker = broker
        self.notifier = notifier
        self.deadlines = deadlines
        self.published = 0  # orders handed on (jobs and notification calls)

    async def publish(self, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        if orders:
            jobs = [o for o in orders if o.mode != NOTIFICATION]
            if jobs:
                if FAULT == "during_publish" and len(jobs) >= 2:
                    await self.broker.publish_orders(jobs[: len(jobs) // 2])
                    crash()
                await self.broker.publish_orders(jobs)
            for order in orders:
                if order.mode == NOTIFICATION:
                    self.notifier.submit(order)
            now = datetime.now(UTC)
            for order in orders:
                self.deadlines.arm(order, now)
        if stops:
            await self.broker.publish_stops(stops)
        self.published += len(orders)


class OutboxPump:
    """The asynchronous half: publishes batch after batch, with their confirms in flight.

    `in_thread` runs the reader's synchronous calls off the event loop; `publish(orders,
    stops)` returns once the broker confirmed all of them (it decides where each goes).
    `stored` (optional) gives the commits of this process as they happen: those that follow
    on from what was handled go out from memory, the rest is read from the log. Confirmed
    batches are settled by the next `pump`, or after a round of `run`, at most once every
    `position_every_s`: each write is a commit (a sync) that competes with the inbound
    batches' commits for the store, and a position that lags by that much costs nothing
    after a crash but a few orders published again (the next holder's `Window` leaves out
    those whose jobs a worker reached).
    """

    def __init__(self, reader: OutboxReader, publish: Publish, in_thread: Callable[..., Awaitable[Any]],
                 max_in_flight: int = 16, stored: JustStored | None = None,
                 write_in_thread: Callable[..., Awaitable[Any]] | None = None,
                 position_every_s: float = POSITION_EVERY_S, alone: Alone | None = None) -> None:
        self.reader = reader
        self.publish = publish
        self.in_thread = in_thread
        # the position writes, in a thread of their own if given: a read of the log (woken by
        # another process's commit) then never queues behind a write's commit
        self.write_in_thread = write_in_thread or in_thread
        self.max_in_flight = max_in_flight
        self.stored = stored
        self._read_to = reader.position  # every event up to this id is published, or on its way
        self._read_due = True  # the log may hold what memory does not: read it at the next pump
        # (handled up to, orders, publish task or None when it had no order), oldest first
        self._in_flight: deque[tuple[int, int, asyncio.Task[None] | None]] = deque()
        self._publishing = 0  # entries of `_in_flight` with a task
        self._lock = asyncio.Lock()  # one publisher at a time, or a batch goes out twice
        self._settling = asyncio.Lock()  # one position write at a time, beside the publishing
        self._settle_due = asyncio.Event()  # a round of publishing ended: write what is confirmed
        self.position_every_s = position_every_s
        self._written_at = -math.inf  # time.monotonic() of the last position write
        self.position_writes = 0  # (for the curious, and the benchmark)
        self.from_memory = 0  # batches published without reading the log (for the curious)
        # all of the outbox's work is shared: none of it runs while a redelivered message is
        # applied alone (`stepflow.adapters.alone`)
        self.alone = alone if alone is not None else Alone()

    @property
    def position(self) -> int:
        return self.reader.position

    def read_later(self) -> None:
        """Another process may have stored events: the next `pump` reads the log."""
        self._read_due = True

    async def run(self, wakeup: asyncio.Event, poll_s: float) -> None:
        """Pump whenever `wakeup` is set (events were stored here), or every `poll_s` (for
        events another process stored: then the log is read). The position is written by a
        task of its own after each round (what is confirmed by then; rounds that end while a
        write runs share the next write): a write never holds up the next publish. Confirmed
        batches wait for the next round (the next stored event, or the poll): a confirm alone
        is no reason to write."""
        settler = asyncio.create_task(self._settle_loop(), name="stepflow-outbox-settle")
        try:
            while True:
                if not await woken(wakeup, poll_s):
                    self._read_due = True
                wakeup.clear()
                async with self.alone.shared():
                    await self._publish_new()
                self._settle_due.set()  # not on every confirm: one write per round at most, as before
                if settler.done():
                    settler.result()  # a publish failed: stop, with its batch unconfirmed
        finally:
            await cancelled([settler])

    async def _settle_loop(self) -> None:
        while True:
            await self._settle_due.wait()
            rest = self._written_at + self.position_every_s - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)  # a rate limit: the rounds meanwhile share this write
            self._settle_due.clear()
            async with self.alone.shared():
                await self._settle(wait=False)

    async def settle_confirmed(self) -> int:
        """Write the position over what is confirmed now (a clean stop: the next start then
        publishes nothing again)."""
        async with self.alone.shared():
            return await self._settle(wait=False)

    async def pump(self) -> int:
        """Publish what is stored and not yet published, and advance over what is confirmed;
        return how many orders were confirmed by this call."""
        async with self.alone.shared():
            settled = await self._publish_new()
            return settled + await self._settle(wait=False)

    async def _publish_new(self) -> int:
        """Publish what is stored and not yet published; return how many orders were
        confirmed on the way (when too many batches were in flight)."""
        settled = 0
        async with self._lock:
            while True:
                if self._publishing >= self.max_in_flight:
                    settled += await self._settle(wait=True)
                batch = self.stored.take(self._read_to) if self.stored is not None else None
                if batch is not None:
                    last, orders, stops = batch[0], batch[1], []
                    self.from_memory += 1
                elif self.stored is None or self._read_due or self.stored.waiting():
                    self._read_due = False
                    last, orders, stops = await self.in_thread(self.reader.next_batch, self._read_to)
                    if last == self._read_to:
                        break
                    self._read_due = self.reader.more
                else:
                    break
                if orders and FAULT == "after_store_before_publish":
                    crash()
                self._handled(last, orders, stops)
        return settled

    def _handled(self, last: int, orders: list[ev.JobSubmitted], stops: list[StopJob]) -> None:
        self._read_to = last
        if orders or stops:
            self.alone.entered()  # a share of its own, from the one held here, until it ends
            task = asyncio.create_task(self.publish(orders, stops), name="stepflow-outbox-publish")
            task.add_done_callback(self._left)
            self._in_flight.append((last, len(orders), task))
            self._publishing += 1
        elif self._in_flight and self._in_flight[-1][2] is None:
            self._in_flight[-1] = (last, 0, None)  # nothing to confirm: one entry for a run of them
        else:
            self._in_flight.append((last, 0, None))

    def _left(self, _: asyncio.Task[None]) -> None:
        self.alone.leave()

    async def drain(self) -> int:
        """`pump`, then wait until everything published is confirmed and the position advanced."""
        settled = await self.pump()
        async with self.alone.shared(), self._lock:
            while self._in_flight:
                settled += await self._settle(wait=True)
        return settled

    async def _settle(self, wait: bool) -> int:
        """Advance the position over the confirmed batches at the head (waiting for the first
        one when `wait`), with one write; raise a publish's error. Unless it must wait, it
        leaves the work to a write under way: the next pump settles what that one missed."""
        if not wait and self._settling.locked():
            return 0
        async with self._settling:
            last, orders = None, 0
            while self._in_flight and (wait or self._in_flight[0][2] is None or self._in_flight[0][2].done()):
                head_last, head_orders, task = self._in_flight[0]
                if task is not None:
                    if not task.done():
                        async with self.alone.aside():  # the task holds a share while it publishes
                            await asyncio.wait([task])
                    await task  # its error stops the outbox, with the batch still unconfirmed
                    self._publishing -= 1
                self._in_flight.popleft()
                last, orders, wait = head_last, orders + head_orders, False
            if last is None:
                return 0
            if orders and FAULT == "after_publish_before_advance":
                crash()
            await self.write_in_thread(self.reader.advance, last)
            self._written_at = time.monotonic()
            self.position_writes += 1
            return orders

    def cancel(self) -> None:
        for _, _, task in self._in_flight:
            if task is not None:
                task.cancel()
        self._in_flight.clear()
        self._publishing = 0
