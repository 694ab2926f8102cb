"""The outbox: job orders are published from stored events, never straight from a command.

It follows the notification log from a tracked position (`Tracking("outbox", id)`, a
`LogFollower`): read the next stored `JobSubmitted` (and stop-causing) events, hand them on
with publisher confirms, then advance the position. A crash between store and publish, or
between publish and advancing, republishes on restart: at least once, never lost. Duplicates
are harmless because an order's message id is its job id, which workers remember.

What goes where is read from the events (`Dispatch`): a job to the broker, a notification
step's call to the `Notifier`, and a clock for each order with a timeout (`Deadlines`). The
broker builds the wire message at its edge; nothing here encodes.

Confirms are pipelined (`OutboxPump`): a confirm for a persistent message comes only once the
broker has written it to disk or a worker has acked it, which for a job order means the job
is done; waiting for one batch's confirms before reading the next would put that whole wait
in front of every other workflow's next step. So batches are read and published while earlier
ones await their confirms, and the position advances only over a prefix of batches that are
all confirmed, in the order they were read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from stepflow.adapters.deadlines import Deadlines
from stepflow.adapters.faults import FAULT, crash
from stepflow.adapters.notify.notifications import NOTIFICATION, Notifier
from stepflow.adapters.wakeup import woken
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine
from stepflow.engine.follower import LogFollower
from stepflow.engine.ports import BackendBroker, StopJob
from stepflow.engine.state import WorkflowState

OUTBOX = "outbox"
TOPICS = ("JobSubmitted", "WorkflowStopped", "WorkflowDeleted", "JobTimedOut")


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

    @property
    def position(self) -> int:
        return self.log.position

    def next_batch(self, after: int | None = None) -> tuple[int, list[ev.JobSubmitted], list[StopJob]]:
        """(last notification id, orders, jobs to stop) after `after` (default: the tracked
        position); the last id is `after` itself when there is nothing new."""
        after = self.position if after is None else after
        items = self.log.read(after)
        orders: list[ev.JobSubmitted] = []
        stops: list[StopJob] = []
        for _, event in items:
            if isinstance(event, ev.JobSubmitted):
                orders.append(event)
            elif isinstance(event, (ev.WorkflowStopped, ev.WorkflowDeleted, ev.JobTimedOut)):
                # rare, so the workflow is read from the store, here in the outbox's thread
                stops.extend(stop_jobs(event, self.engine.workflow_state(event.originator_id)))
        last = items[-1][0] if items else after
        return last, orders, stops

    def advance(self, position: int) -> None:
        self.log.record(position)


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
    Confirmed batches are settled by the next `pump` (the next stored event, or the caller's
    poll): a confirm alone is no reason to read the log again.
    """

    def __init__(self, reader: OutboxReader, publish: Publish, in_thread: Callable[..., Awaitable[Any]],
                 max_in_flight: int = 16) -> None:
        self.reader = reader
        self.publish = publish
        self.in_thread = in_thread
        self.max_in_flight = max_in_flight
        self._read_to = reader.position
        self._in_flight: deque[tuple[int, int, asyncio.Task[None]]] = deque()  # (last id, orders, task)
        self._lock = asyncio.Lock()  # one reader at a time, or a batch goes out twice

    @property
    def position(self) -> int:
        return self.reader.position

    async def run(self, wakeup: asyncio.Event, poll_s: float) -> None:
        """Pump whenever `wakeup` is set (events were stored here), or every `poll_s` (for
        events another process stored)."""
        while True:
            await woken(wakeup, poll_s)
            wakeup.clear()
            await self.pump()

    async def pump(self) -> int:
        """Publish what is stored and not yet published, and advance over what is confirmed;
        return how many orders were confirmed by this call."""
        async with self._lock:
            settled = 0
            while True:
                last, orders, stops = await self.in_thread(self.reader.next_batch, self._read_to)
                if last == self._read_to:
                    return settled + await self._settle(wait=False)
                if orders and FAULT == "after_store_before_publish":
                    crash()
                task = asyncio.create_task(self.publish(orders, stops), name="stepflow-outbox-publish")
                self._in_flight.append((last, len(orders), task))
                self._read_to = last
                settled += await self._settle(wait=len(self._in_flight) >= self.max_in_flight)

    async def drain(self) -> int:
        """`pump`, then wait until everything published is confirmed and the position advanced."""
        settled = await self.pump()
        async with self._lock:
            while self._in_flight:
                settled += await self._settle(wait=True)
        return settled

    async def _settle(self, wait: bool) -> int:
        """Advance the position over the confirmed batches at the head (waiting for the first
        one when `wait`), with one write; raise a publish's error."""
        last, orders = None, 0
        while self._in_flight and (self._in_flight[0][2].done() or wait):
            head_last, head_orders, task = self._in_flight[0]
            await task  # its error stops the outbox, with the batch still unconfirmed
            self._in_flight.popleft()
            last, orders, wait = head_last, orders + head_orders, False
        if last is None:
            return 0
        if orders and FAULT == "after_publish_before_advance":
            crash()
        await self.in_thread(self.reader.advance, last)
        return orders

    def cancel(self) -> None:
        for _, _, task in self._in_flight:
            task.cancel()
        self._in_flight.clear()
