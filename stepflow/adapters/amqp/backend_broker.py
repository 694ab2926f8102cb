"""The backend's side of RabbitMQ (implements `stepflow.engine.ports.BackendBroker`).

One robust connection, two channels: one publishes (publisher confirms, awaited), one
consumes every backend queue (responses, unroutable orders, worker announcements) with a
prefetch, into a single asyncio queue that `next_batch` drains (each delivery read straight off
aiormq: `stepflow.adapters.amqp.consumers`). `ack` settles a batch with
as few frames as it can: one `basic.ack(multiple=True)` up to the highest tag below which
every delivery outstanding on the channel is in the batch, single acks for the rest.
Orders and stops arrive as stored events; they become wire messages here
(`stepflow.adapters.orders`), at the last moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
)

from stepflow.adapters.amqp.batch_publish import Item, publish_confirmed_many
from stepflow.adapters.amqp.connection import (
    AmqpDelivery,
    amqp_url,
    connect,
    publish_confirmed,
    settle,
)
from stepflow.adapters.amqp.consumers import DirectConsumers
from stepflow.adapters.amqp.topology import Topology, kept_copy, persistent
from stepflow.adapters.orders import order_message, stop_message
from stepflow.engine import events as ev
from stepflow.engine.ports import Delivery, Outgoing, StopJob

log = structlog.get_logger("stepflow.amqp.backend")


class AmqpBackendBroker:
    def __init__(self, url: str | None = None, *, prefix: str = "", prefetch: int = 512,
                 connection_name: str | None = None, quorum: bool | None = None) -> None:
        self.url = amqp_url(url)
        if quorum is None:  # the environment's, as for the URL (stepflow.settings imports this package)
            from stepflow.settings import quorum_queues

            quorum = quorum_queues()
        self.topology = Topology(prefix, quorum=quorum)
        self.prefetch = prefetch
        self.connection_name = connection_name or f"stepflow-backend[{prefix}]"
        self._connection: AbstractRobustConnection | None = None
        self._publish: AbstractChannel | None = None
        self._consume: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._inbox: asyncio.Queue[AmqpDelivery] = asyncio.Queue()
        # per channel: delivery tags received and not yet settled (for ack multiple)
        self._outstanding: dict[aiormq.abc.AbstractChannel, set[int]] = {}
        # A standby backend (`stepflow.adapters.lease`) connects to publish, not to consume.
        self.consume_at_connect = True
        self._queues: dict[str, Any] = {}

    async def connect(self) -> None:
        self._connection = await connect(self.url, self.connection_name)
        # The consuming channel declares the topology, so that after a reconnection it
        # re-declares queues and bindings before it re-registers its consumers.
        self._consume = await self._connection.channel(publisher_confirms=False)
        await self._consume.set_qos(prefetch_count=self.prefetch)
        declared = await self.topology.declare(self._consume)
        self._publish = await self._connection.channel(publisher_confirms=True)
        self._exchanges = {name: await self._publish.get_exchange(name, ensure=False)
                           for name in declared.exchanges}
        self._queues = dict(declared.queues)
        if self.consume_at_connect:
            await self.start_consuming()
        log.info("backend_broker_ready", prefix=self.topology.prefix, queues=len(self.topology.backend_queues))

    async def start_consuming(self) -> None:
        """Consume every backend queue (once connected): what a backend does once active."""
        assert self._consume is not None, "connect first"
        consumers = DirectConsumers(self._consume)
        for name in self.topology.backend_queues:
            await consumers.consume(self._queues[name], self.topology.logical(name), self._received)

    async def _received(self, delivery: AmqpDelivery) -> None:
        self._outstanding.setdefault(delivery.channel, set()).add(delivery.delivery_tag)
        self._inbox.put_nowait(delivery)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None

    @property
    def connected(self) -> bool:
        """Connected and not lost (a robust connection is closed while it reconnects)."""
        return self._connection is not None and not self._connection.is_closed

    # --- out ---------------------------------------------------------------------------

    async def publish_orders(self, orders: Sequence[ev.JobSubmitted]) -> None:
        """All in one write (`batch_publish`), returning when every one is confirmed."""
        items = [self._order_item(order_message(order)) for order in orders]
        for error in await publish_confirmed_many(items, what="job_order"):
            if error is not None:
                raise error

    async def publish_stops(self, stops: Sequence[StopJob]) -> None:
        """One after the other, each confirmed."""
        for stop in stops:
            await self.publish_direct(stop_message(stop))

    def _order_item(self, order: Outgoing) -> Item:
        headers = dict(order.headers)
        if order.delay_s > 0:
            message = persistent(order.body, message_id=order.message_id, headers=headers,
                                 priority=order.priority, expiration_s=order.delay_s)
            return self._exchanges[self.topology.job_submit_delayed], order.routing_key, message
        message = persistent(order.body, message_id=order.message_id, headers=headers, priority=order.priority)
        return self._exchanges[self.topology.job_submit], order.routing_key, message

    async def publish_direct(self, message: Outgoing) -> None:
        amqp = persistent(message.body, message_id=message.message_id, headers=dict(message.headers))
        await publish_confirmed(self._exchanges[self.topology.direct_messaging], amqp, message.routing_key,
                                what="direct_order")

    async def redeliver_later(self, delivery: AmqpDelivery) -> None:
        """Put a message back on its queue after `job_response_delayed`'s 5 s, then ack it."""
        amqp = persistent(delivery.body, message_id=delivery.message_id or "", headers=dict(delivery.headers))
        await publish_confirmed(self._exchanges[self.topology.job_response_delayed], amqp, delivery.real_queue,
                                what="delayed_redelivery")
        await self._settle_one(delivery)

    # --- in ----------------------------------------------------------------------------

    async def next_batch(self, max_size: int, max_wait_s: float,
                         in_hand: Callable[[], None] | None = None) -> list[Delivery]:
        batch: list[Delivery] = []
        while not batch:
            batch.extend(self._fresh([await self._inbox.get()]))
        if in_hand is not None:
            in_hand()
        if len(batch) < max_size and max_wait_s > 0:
            await asyncio.sleep(max_wait_s)
        while len(batch) < max_size and not self._inbox.empty():
            batch.extend(self._fresh([self._inbox.get_nowait()]))
        return batch

    def _fresh(self, deliveries: list[AmqpDelivery]) -> list[AmqpDelivery]:
        """Drop deliveries of a closed channel: the broker requeued them already."""
        fresh = [d for d in deliveries if not d.stale]
        for d in deliveries:
            if d.stale:
                self._outstanding.pop(d.channel, None)
        return fresh

    async def ack(self, deliveries: Sequence[Any]) -> None:
        by_channel: dict[aiormq.abc.AbstractChannel, list[AmqpDelivery]] = {}
        for delivery in deliveries:
            by_channel.setdefault(delivery.channel, []).append(delivery)
        for channel, batch in by_channel.items():
            outstanding = self._outstanding.get(channel, set())
            cut, singles = ack_plan(outstanding, [d.delivery_tag for d in batch])
            by_tag = {d.delivery_tag: d for d in batch}
            if cut and await settle(by_tag[cut], ack=True, multiple=True):
                outstanding.difference_update([t for t in outstanding if t <= cut])
            for tag in singles:
                await self._settle_one(by_tag[tag])
            if channel.is_closed:
                self._outstanding.pop(channel, None)

    async def _settle_one(self, delivery: AmqpDelivery) -> None:
        await settle(delivery, ack=True)
        outstanding = self._outstanding.get(delivery.channel)
        if outstanding is not None:
            outstanding.discard(delivery.delivery_tag)

    async def quarantine(self, rejects: Sequence[tuple[Any, str]]) -> None:
        """All copies at once (confirms pipeline), then one ack for the lot."""
        await asyncio.gather(*(self._keep(delivery, reason) for delivery, reason in rejects))
        await self.ack([delivery for delivery, _ in rejects])

    async def _keep(self, delivery: AmqpDelivery, reason: str) -> None:
        headers = {**delivery.headers, "x-quarantine-reason": reason[:1000], "x-original-queue": delivery.queue}
        message = kept_copy(delivery.body, message_id=delivery.message_id, content_type=delivery.content_type,
                            headers=headers)
        assert self._publish is not None, "connect first"
        await publish_confirmed(self._publish.default_exchange, message, self.topology.quarantine,
                                what="quarantine")


def ack_plan(outstanding: set[int], tags: Sequence[int]) -> tuple[int, list[int]]:
    """(tag to ack with multiple=True or 0, tags to ack one by one) for one channel.

    A multiple ack settles every outstanding tag up to it, so it may only reach as far as
    the lowest outstanding tag that is not in this batch. It is worth it for two or more.
    """
    wanted = set(tags)
    cut = 0
    covered = 0
    for tag in sorted(outstanding):
        if tag not in wanted:
            break
        cut = tag
        covered += 1
    if covered < 2:
        cut = 0
    singles = sorted(t for t in wanted if t > cut)
    return cut, singles
