"""The outbox: job orders are published from stored events, never straight from a command.

It follows the notification log from a tracked position (`Tracking("outbox", id)` in the
store's tracking table): read the next stored `JobSubmitted` (and stop) events, publish them
with publisher confirms, then advance the position. A crash between store and publish, or
between publish and advancing, republishes on restart: at least once, never lost. Duplicates
are harmless because an order's message id is its job id, which workers remember.

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
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder

from stepflow.adapters import protocol as p
from stepflow.adapters.faults import FAULT, crash
from stepflow.engine import events as ev
from stepflow.engine.application import WorkflowEngine

OUTBOX = "outbox"
TOPICS = ("JobSubmitted", "WorkflowStopped", "WorkflowDeleted", "JobTimedOut")


def order_message(event: ev.JobSubmitted) -> p.Message:
    order = p.JobOrder(
        job_id=event.job_id,
        parameters=p.to_parameters(event.parameters),
        workflow_id=str(event.originator_id),
        attempt=event.attempt,
        timeout_s=event.timeout_s,
    )
    headers: dict[str, object] = {"workflow_id": str(event.originator_id), "job_type": event.job_type,
                                  "step_id": event.step_id, "attempt": event.attempt}
    if event.timeout_s is not None:
        headers["timeout_s"] = event.timeout_s
    if event.mode != "job":
        headers["mode"] = event.mode  # "notification": the backend's notifier runs it, not the broker
    return p.Message(
        routing_key=event.job_type,
        body=p.encoder.encode(order),
        message_id=event.job_id,
        headers=headers,
        priority=event.priority,
        delay_s=event.delay_s,
    )


def stop_messages(event: ev.WorkflowStopped | ev.WorkflowDeleted | ev.JobTimedOut) -> list[p.Message]:
    """`stop_process` for each job that was running, broadcast: the backend does not track
    which instance holds a job, and a worker not holding it ignores the order. A timed-out
    job is stopped too: a worker still at it would hold a prefetch slot to the end."""
    jobs = (event.job_id,) if isinstance(event, ev.JobTimedOut) else event.jobs
    return [
        p.Message(
            routing_key="",
            body=p.encoder.encode(p.DirectOrder(type="stop_process", job_id=job_id)),
            message_id=f"stop:{job_id}",
            headers={"broadcast": True, "workflow_id": str(event.originator_id)},
        )
        for job_id in jobs
    ]


class OutboxReader:
    """The synchronous half (runs in the outbox's thread): read the next events, track progress."""

    def __init__(self, engine: WorkflowEngine, batch_size: int = 500) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.tracking: TrackingRecorder = engine.factory.tracking_recorder()
        self.position = self.tracking.max_tracking_id(OUTBOX) or 0

    def next_batch(self, after: int | None = None) -> tuple[int, list[p.Message], list[p.Message]]:
        """(last notification id, orders, direct messages) after `after` (default: the tracked
        position); the last id is `after` itself when there is nothing new."""
        after = self.position if after is None else after
        items = self.engine.notifications(after, self.batch_size, topics=TOPICS)
        orders: list[p.Message] = []
        directs: list[p.Message] = []
        for _, event in items:
            if isinstance(event, ev.JobSubmitted):
                orders.append(order_message(event))
            elif isinstance(event, (ev.WorkflowStopped, ev.WorkflowDeleted, ev.JobTimedOut)):
                directs.extend(stop_messages(event))
        last = items[-1][0] if items else after
        return last, orders, directs

    def advance(self, position: int) -> None:
        if position <= self.position:
            return
        try:
            self.tracking.insert_tracking(Tracking(OUTBOX, position))
        except IntegrityError:
            pass  # another backend's outbox got further: keep going from ours
        self.position = position


Publish = Callable[[list[p.Message], list[p.Message]], Coroutine[Any, Any, None]]


class OutboxPump:
    """The asynchronous half: publishes batch after batch, with their confirms in flight.

    `in_thread` runs the reader's synchronous calls off the event loop; `publish(orders,
    directs)` returns once the broker confirmed all of them (it decides where each goes).
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

    async def pump(self) -> int:
        """Publish what is stored and not yet published, and advance over what is confirmed;
        return how many orders were confirmed by this call."""
        async with self._lock:
            settled = 0
            while True:
                last, orders, directs = await self.in_thread(self.reader.next_batch, self._read_to)
                if last == self._read_to:
                    return settled + await self._settle(wait=False)
                if orders and FAULT == "after_store_before_publish":
                    crash()
                task = asyncio.create_task(self.publish(orders, directs), name="stepflow-outbox-publish")
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
