"""The in-process broker of embedded mode: RabbitMQ's behaviour, in one asyncio loop.

Not a mock: it keeps the semantics the backend and the SDK rely on, so embedded mode runs
the same code paths as a deployment. Job orders are routed by job type to the queue of
that type, and diverted to `job_queue_not_found` when no worker declared it; queues honour
message priority; a message is held unacked until settled, and a rejected message or one
held by a closed consumer is redelivered with `redelivered=True`; delayed orders wait
`delay_s` before routing (RabbitMQ's delay queue). Nothing survives the process, which is
fine: embedded runs keep their truth in the event store, and the outbox republishes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stepflow.adapters import protocol as p
from stepflow.adapters.orders import order_message, stop_message
from stepflow.engine import events as ev
from stepflow.engine.ports import Outgoing, StopJob

_sequence = itertools.count()


@dataclass(frozen=True)
class MemoryDelivery:
    queue: str
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = p.CONTENT_TYPE
    redelivered: bool = False
    priority: int = 0
    routing_key: str = ""
    tag: int = field(default_factory=lambda: next(_sequence))


class _Queue:
    def __init__(self, name: str, changed: asyncio.Condition) -> None:
        self.name = name
        self._heap: list[tuple[int, int, MemoryDelivery]] = []
        self._changed = changed

    def put(self, delivery: MemoryDelivery) -> None:
        heapq.heappush(self._heap, (-delivery.priority, delivery.tag, delivery))

    def pop(self) -> MemoryDelivery | None:
        return heapq.heappop(self._heap)[2] if self._heap else None

    def head(self) -> tuple[int, int]:
        """The (-priority, tag) of the next message; call only when not empty."""
        return self._heap[0][:2]  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._heap)


class MemoryBroker:
    """The 'server': exchanges, queues and bindings. Hand out its two sides to clients."""

    def __init__(self) -> None:
        self._changed: asyncio.Condition | None = None
        self.queues: dict[str, _Queue] = {}
        self.bindings: dict[str, str] = {}  # job type -> queue
        self.direct: dict[str, tuple[str, tuple[str, ...]]] = {}  # queue -> (instance, job types)
        self.quarantined: list[tuple[MemoryDelivery, str]] = []
        self._unacked: dict[int, tuple[MemoryDelivery, object]] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def queue(self, name: str) -> _Queue:
        if name not in self.queues:
            self.queues[name] = _Queue(name, self.changed)
        return self.queues[name]

    def backend(self) -> MemoryBackendBroker:
        return MemoryBackendBroker(self)

    def worker(self) -> MemoryWorkerBroker:
        return MemoryWorkerBroker(self)

    # --- the broker's own work ---------------------------------------------------------

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def route_order(self, message: Outgoing) -> None:
        if message.delay_s > 0:
            loop = asyncio.get_running_loop()
            undelayed = _undelay(message)
            handle: asyncio.TimerHandle

            def fire() -> None:
                self._timers.discard(handle)
                loop.create_task(self.route_order(undelayed))

            handle = loop.call_later(message.delay_s, fire)
            self._timers.add(handle)
            return
        delivery = MemoryDelivery(
            queue="", body=message.body, message_id=message.message_id, headers=dict(message.headers),
            priority=message.priority, routing_key=message.routing_key,
        )
        target = self.bindings.get(message.routing_key, p.JOB_QUEUE_NOT_FOUND)
        self.queue(target).put(replace(delivery, queue=target))
        await self._notify()

    async def publish(self, queue: str, message: Outgoing) -> None:
        self.queue(queue).put(MemoryDelivery(
            queue=queue, body=message.body, message_id=message.message_id,
            headers=dict(message.headers), routing_key=message.routing_key,
        ))
        await self._notify()

    async def take(self, queues: Sequence[str], owner: object, limit: int = 1) -> list[MemoryDelivery]:
        """Wait until one of `queues` has a message; take up to `limit`, held unacked by `owner`."""
        async with self.changed:
            while True:
                taken = self.take_now(queues, owner, limit)
                if taken:
                    return taken
                await self.changed.wait()

    def take_now(self, queues: Sequence[str], owner: object, limit: int) -> list[MemoryDelivery]:
        """Up to `limit` ready messages of `queues`, held unacked by `owner`: over all the
        queues, in the order they were published (priority first). One publisher's messages
        thus arrive in its order, as from one RabbitMQ channel: a progression sent before a
        completion is taken before it, though they sit on different queues."""
        taken: list[MemoryDelivery] = []
        heads = [q for q in (self.queue(name) for name in queues) if len(q)]
        while len(taken) < limit and heads:
            first = min(heads, key=_Queue.head)
            delivery = first.pop()
            assert delivery is not None
            taken.append(delivery)
            self._unacked[delivery.tag] = (delivery, owner)
            if not len(first):
                heads.remove(first)
        return taken

    def settle(self, delivery: MemoryDelivery, requeue: bool = False, *, rejected: bool = False) -> None:
        held = self._unacked.pop(delivery.tag, None)
        if held is None:
            return
        if requeue:
            self.queue(delivery.queue).put(replace(delivery, redelivered=True, tag=next(_sequence)))
        elif rejected and delivery.queue in self.bindings.values():
            # A worker's broker copies an order it rejects to the quarantine, as on RabbitMQ
            # (where job queues dead-letter to job_delayed, which would loop it).
            self.quarantined.append((delivery, "rejected by the worker"))

    async def release(self, owner: object) -> None:
        """A consumer went away: what it held goes back to its queue, marked redelivered."""
        for tag, (delivery, holder) in list(self._unacked.items()):
            if holder is owner:
                self.settle(delivery, requeue=True)
        await self._notify()

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()


def _undelay(message: Outgoing) -> p.Message:
    return p.Message(routing_key=message.routing_key, body=message.body, message_id=message.message_id,
                     headers=dict(message.headers), priority=message.priority)


BACKEND_QUEUES = (*p.RESPONSE_KEYS, p.JOB_QUEUE_NOT_FOUND, *p.WORKER_KEYS)


class MemoryBackendBroker:
    """The backend's side (implements `stepflow.engine.ports.BackendBroker`)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def connect(self) -> None:
        for name in BACKEND_QUEUES:
            self.broker.queue(name)

    async def close(self) -> None:
        await self.broker.release(self)

    @property
    def connected(self) -> bool:
        """In this process: there is no connection to lose."""
        return True

    async def publish_orders(self, orders: Sequence[ev.JobSubmitted]) -> None:
        for order in orders:
            await self.broker.route_order(order_message(order))

    async def publish_stops(self, stops: Sequence[StopJob]) -> None:
        for stop in stops:
            await self.publish_direct(stop_message(stop))

    async def publish_direct(self, message: Outgoing) -> None:
        headers = message.headers
        for queue, (instance_id, job_types) in list(self.broker.direct.items()):
            if (
                headers.get("broadcast") == "true"
                or headers.get("stepflow_broadcast") == "true"
                or headers.get("instance_id") == instance_id
                or headers.get("job_type") in job_types
            ):
                await self.broker.publish(queue, message)

    async def next_batch(self, max_size: int, max_wait_s: float,
                         in_hand: Callable[[], None] | None = None) -> list[MemoryDelivery]:
        batch = await self.broker.take(BACKEND_QUEUES, self, max_size)
        if in_hand is not None:
            in_hand()
        if len(batch) < max_size and max_wait_s > 0:
            await asyncio.sleep(max_wait_s)
            batch.extend(self.broker.take_now(BACKEND_QUEUES, self, max_size - len(batch)))
        return batch

    async def ack(self, deliveries: Sequence[Any]) -> None:
        for delivery in deliveries:
            self.broker.settle(delivery)

    async def quarantine(self, rejects: Sequence[tuple[Any, str]]) -> None:
        for delivery, reason in rejects:
            self.broker.quarantined.append((delivery, reason))
            self.broker.settle(delivery)


class MemoryWorkerBroker:
    """A worker's side (implements `stepflow.engine.ports.WorkerBroker`)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._order_queues: tuple[str, ...] = ()
        self._direct_queue: str | None = None
        self._prefetch = 1
        self._held = 0
        self._paused = False

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        if self._direct_queue:
            self.broker.direct.pop(self._direct_queue, None)
        await self.broker.release(self)

    @property
    def connected(self) -> bool:
        """In this process: there is no connection to lose."""
        return True

    async def consume_orders(self, job_types: Sequence[str], prefetch: int) -> None:
        for job_type in job_types:
            self.broker.bindings[job_type] = job_type
            self.broker.queue(job_type)
        self._order_queues = tuple(job_types)
        self._prefetch = max(1, prefetch)

    async def next_order(self) -> MemoryDelivery:
        """Wait for a free prefetch slot, no pause and an order, and take it in the same step.
        Deciding and taking at once is what keeps a pause that comes while this waits from
        letting one more order through, as a cancelled RabbitMQ consumer does."""
        async with self.broker.changed:
            await self.broker.changed.wait_for(self._may_take)
            (delivery,) = self.broker.take_now(self._order_queues, self, 1)
        self._held += 1
        return delivery

    def _may_take(self) -> bool:
        return (self._held < self._prefetch and not self._paused
                and any(len(self.broker.queue(name)) for name in self._order_queues))

    async def consume_direct(self, instance_id: str, job_types: Sequence[str]) -> None:
        self._direct_queue = f"{p.DIRECT_MESSAGING}_{instance_id}"
        self.broker.direct[self._direct_queue] = (instance_id, tuple(job_types))
        self.broker.queue(self._direct_queue)

    async def next_direct(self) -> MemoryDelivery:
        assert self._direct_queue is not None, "consume_direct first"
        (delivery,) = await self.broker.take((self._direct_queue,), self, 1)
        return delivery

    async def publish_response(self, message: Outgoing) -> None:
        await self.broker.publish(message.routing_key, message)

    async def ack(self, delivery: Any) -> None:
        self._settle(delivery, requeue=False, rejected=False)
        await self.broker._notify()

    async def reject(self, delivery: Any, requeue: bool) -> None:
        self._settle(delivery, requeue=requeue, rejected=True)
        await self.broker._notify()

    def _settle(self, delivery: MemoryDelivery, requeue: bool, rejected: bool) -> None:
        if delivery.queue in self._order_queues:
            self._held -= 1
        self.broker.settle(delivery, requeue=requeue, rejected=rejected)

    async def pause_orders(self) -> None:
        self._paused = True

    async def resume_orders(self) -> None:
        self._paused = False
        await self.broker._notify()
