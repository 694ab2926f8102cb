"""A worker's side of RabbitMQ (implements `stepflow.engine.ports.WorkerBroker`).

One robust connection, three channels: responses and announcements are published on a
confirming channel; job orders arrive on a channel whose prefetch bounds how many jobs run
at once; direct orders (stop, status, ...) on their own channel, so a busy worker still
hears a stop order. The worker declares the common topology too (idempotent), so it may
start before the backend without losing a response, and it declares its job-type queues.

After a reconnection the direct queue gets every binding back: aio-pika's robust queue
remembers one binding per (exchange, routing key) and replays only those, and the direct
queue's bindings (instance id, broadcast, one per job type) differ only in their header
arguments, so aio-pika alone would bring back only the last one made (`job_type=<last>`)
and stop and status orders sent by instance id or broadcast would be lost. The broker
notes every binding the topology makes and makes them all again when the channel reopens.
A message that cannot even be turned into a delivery is quarantined, not held.

Getting rid of an order is never a reject without requeue: job queues dead-letter to the
SDK's `job_delayed`, which puts the order back after 5 s, so a poison order would loop for
ever. `reject(requeue=False)` and an unreadable message copy it to `stepflow_quarantine`
(confirmed), then ack it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from stepflow.adapters.amqp.batch_ack import AckCoalescing
from stepflow.adapters.amqp.batch_publish import Coalescing
from stepflow.adapters.amqp.connection import (
    TRANSIENT,
    AmqpDelivery,
    amqp_url,
    connect,
    publish_confirmed,
    settle,
)
from stepflow.adapters.amqp.consumers import DirectConsumers, Handler, Unreadable
from stepflow.adapters.amqp.topology import Topology, kept_copy, persistent
from stepflow.engine.ports import Outgoing

log = structlog.get_logger("stepflow.amqp.worker")
REJECTED_HEADER = "x-stepflow-worker-rejected"  # on a worker's copy in the quarantine: why


class AmqpWorkerBroker:
    def __init__(self, url: str | None = None, *, prefix: str = "", connection_name: str | None = None,
                 quorum: bool | None = None) -> None:
        self.url = amqp_url(url)
        if quorum is None:  # the environment's, as for the URL (stepflow.settings imports this package)
            from stepflow.settings import quorum_queues

            quorum = quorum_queues()
        self.topology = Topology(prefix, quorum=quorum)
        self.connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._publish: AbstractChannel | None = None
        self._answers = Coalescing("answer")  # the answers of jobs that end together: one write
        self._acks = AckCoalescing()  # and their acks
        self._exchanges: dict[str, AbstractExchange] = {}
        self._order_queues: dict[str, AbstractQueue] = {}
        self._consumers: dict[str, str] = {}  # job type -> consumer tag
        self._order_consumers: DirectConsumers | None = None  # on the orders' channel
        self._orders: asyncio.Queue[AmqpDelivery] = asyncio.Queue()
        self._direct: asyncio.Queue[AmqpDelivery] = asyncio.Queue()
        self._paused = False
        self._direct_queue: AbstractQueue | None = None
        self._direct_bindings: list[tuple[Any, str | None, Any]] = []
        self.ready = asyncio.Event()  # set once the order and direct queues are consumed

    async def connect(self) -> None:
        name = self.connection_name or f"stepflow-worker[{self.topology.prefix}]"
        self._connection = await connect(self.url, name)
        self._publish = await self._connection.channel(publisher_confirms=True)
        self._exchanges = (await self.topology.declare(self._publish)).exchanges

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None

    @property
    def connected(self) -> bool:
        """Connected and not lost (a robust connection is closed while it reconnects)."""
        return self._connection is not None and not self._connection.is_closed

    def _conn(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("connect first")
        return self._connection

    # --- job orders --------------------------------------------------------------------

    async def consume_orders(self, job_types: Sequence[str], prefetch: int) -> None:
        channel = await self._conn().channel(publisher_confirms=False)
        # global: the prefetch bounds the orders held over all this worker's job types (as the
        # in-process broker does), not per type. Quorum queues refuse global QoS (NOT_IMPLEMENTED
        # closes the connection), so in cluster mode it bounds each job type's orders.
        await channel.set_qos(prefetch_count=max(1, prefetch), global_=not self.topology.quorum)
        self._order_consumers = DirectConsumers(channel)
        for job_type in job_types:
            self._order_queues[job_type] = await self.topology.declare_job_queue(channel, job_type)
        await self._start_orders()

    async def _start_orders(self) -> None:
        assert self._order_consumers is not None, "consume_orders first"
        for job_type, queue in self._order_queues.items():
            if job_type not in self._consumers:
                self._consumers[job_type] = await self._order_consumers.consume(
                    queue, job_type, self._into(self._orders), self._unreadable(job_type))

    @staticmethod
    def _into(queue: asyncio.Queue[AmqpDelivery]) -> Handler:
        async def put(delivery: AmqpDelivery) -> None:
            queue.put_nowait(delivery)

        return put

    def _unreadable(self, logical: str) -> Unreadable:
        async def keep(body: bytes, error: BaseException) -> bool:
            await self._to_quarantine(body, None, {}, logical, f"unreadable: {error!r}")
            return True

        return keep

    async def next_order(self) -> AmqpDelivery:
        return await self._next(self._orders)

    @staticmethod
    async def _next(source: asyncio.Queue[AmqpDelivery]) -> AmqpDelivery:
        while True:
            delivery = await source.get()
            if not delivery.stale:  # else the broker requeued it when its channel closed
                return delivery

    async def pause_orders(self) -> None:
        """`stop_consuming_jobs`: cancel the consumers, hand back what was prefetched."""
        self._paused = True
        for job_type, tag in list(self._consumers.items()):
            with contextlib.suppress(Exception):
                await self._order_queues[job_type].cancel(tag)
            del self._consumers[job_type]
            if self._order_consumers is not None:
                self._order_consumers.forget(tag)
        while not self._orders.empty():
            await settle(self._orders.get_nowait(), ack=False, requeue=True)
        log.info("orders_paused")

    async def resume_orders(self) -> None:
        if self._paused:
            self._paused = False
            await self._start_orders()
            log.info("orders_resumed")

    # --- direct orders -----------------------------------------------------------------

    async def consume_direct(self, instance_id: str, job_types: Sequence[str]) -> None:
        channel = await self._conn().channel(publisher_confirms=False)
        noted = _BindingsNoted(channel)
        await self.topology.declare_direct_queue(noted, instance_id, tuple(job_types))  # type: ignore[arg-type]
        queue = noted.queue
        self._direct_queue, self._direct_bindings = queue, noted.bindings
        channel.reopen_callbacks.add(self._rebind_direct)  # type: ignore[attr-defined]
        logical = self.topology.logical(queue.name)
        await DirectConsumers(channel).consume(queue, logical, self._into(self._direct), self._unreadable(logical))
        self.ready.set()

    async def _rebind_direct(self, channel: Any, *_: Any) -> None:
        """The channel reopened (aio-pika re-declared the queue, with one binding): bind the rest."""
        queue = self._direct_queue
        if queue is None:
            return
        try:
            for exchange, routing_key, arguments in self._direct_bindings:
                await queue.bind(exchange, routing_key, arguments=arguments, robust=False)  # type: ignore[call-arg]
        except Exception as error:  # noqa: BLE001  the connection went again: the next reopen binds again
            log.warning("direct_rebind_failed", queue=queue.name, error=repr(error))
            return
        log.info("direct_rebound", queue=queue.name, bindings=len(self._direct_bindings))

    async def next_direct(self) -> AmqpDelivery:
        return await self._next(self._direct)

    # --- out and settling --------------------------------------------------------------

    async def publish_response(self, message: Outgoing) -> None:
        exchange = self._exchanges[self.topology.response_exchange(message.routing_key)]
        amqp = persistent(message.body, message_id=message.message_id, headers=dict(message.headers))
        await self._answers.publish(exchange, message.routing_key, amqp)

    async def ack(self, delivery: Any) -> None:
        """With the other acks of this turn of the event loop, in one write (`batch_ack`)."""
        if delivery.stale:
            return  # the broker requeued it when its channel closed
        try:
            await self._acks.ack(delivery.channel, delivery.delivery_tag)
        except TRANSIENT as error:
            log.info("amqp_settle_lost", queue=delivery.queue, message_id=delivery.message_id, error=repr(error))

    async def reject(self, delivery: Any, requeue: bool) -> None:
        """Requeue, or (requeue=False) copy to the quarantine and ack: see the module's docstring."""
        if requeue or delivery.stale:
            await settle(delivery, ack=False, requeue=True)
            return
        await self._to_quarantine(delivery.body, delivery.message_id, delivery.headers, delivery.queue,
                                  "rejected by the worker", content_type=delivery.content_type)
        await settle(delivery, ack=True)

    async def _to_quarantine(self, body: bytes, message_id: str | None, headers: Any, queue: str, reason: str,
                             *, content_type: str | None = None) -> None:
        if self._publish is None:
            raise RuntimeError("connect first")
        # Not the backend's `x-quarantine-reason`: a worker's rejects are told apart by this header
        # (as they once were by the broker's x-death).
        kept = {**dict(headers), REJECTED_HEADER: reason[:1000], "x-original-queue": queue}
        message = kept_copy(body, message_id=message_id, content_type=content_type, headers=kept)
        await publish_confirmed(self._publish.default_exchange, message, self.topology.quarantine,
                                what="quarantine")


class _BindingsNoted:
    """Stands for a channel while the topology declares a queue, noting every binding made
    on it (exchange, routing key, arguments), so they can all be made again (see above)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self.bindings: list[tuple[Any, str | None, Any]] = []
        self.queue: AbstractQueue = None  # type: ignore[assignment]

    async def declare_queue(self, *args: Any, **kwargs: Any) -> _BindingsNoted:
        self.queue = await self._channel.declare_queue(*args, **kwargs)
        return self

    async def bind(self, exchange: Any, routing_key: str | None = None, *, arguments: Any = None) -> None:
        await self.queue.bind(exchange, routing_key, arguments=arguments)
        self.bindings.append((exchange, routing_key, arguments))

    @property
    def name(self) -> str:
        return self.queue.name
