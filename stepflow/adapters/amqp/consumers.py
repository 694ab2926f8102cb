"""Consumers that take aiormq's deliveries as they come, for the backend's and the workers' queues.

aio-pika hands a consumer each delivery as an `IncomingMessage`, which copies every property
through a checked `__setattr__`, and runs the callback in a task of its own on top of
aiormq's. That was about a fifth of the CPU a consumed message cost (230-250 against 175-205
us a message, draining 20,000 answers on a 2-core VM), and both the backend and the workers pay
it on every step. So the queue is consumed through aio-pika as before, which keeps its robust
channel's bookkeeping (the consumer is restored after a reconnection, and after the broker
cancels it), and then the channel's aiormq callback for that consumer is replaced by one that
reads the delivery directly (`AmqpDelivery.delivered`).

A restored consumer first gets aio-pika's own wrapper again, which feeds the same handler
through `AmqpDelivery.of`: nothing is lost, only the saving until the channel's reopen
callback puts the direct path back (a restore after a cancel by the broker keeps the wrapper
until the next reopen). These are aiormq's channel internals: aiormq is pinned in constraints.txt,
`tests/integration/test_amqp_direct_consumers.py` fails when the direct path is not taken, and
a channel without them keeps aio-pika's wrapper.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.abc import DeliveredMessage

from stepflow.adapters.amqp.connection import AmqpDelivery

log = structlog.get_logger("stepflow.amqp")

Handler = Callable[[AmqpDelivery], Awaitable[None]]
# Told the body and the error when a delivery cannot even be read into an `AmqpDelivery`;
# returns True once the message is kept somewhere (it is then acked), False to reject it.
Unreadable = Callable[[bytes, BaseException], Awaitable[bool]]


class DirectConsumers:
    """The consumers of one robust channel, on the direct path."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._direct: dict[str, Callable[[DeliveredMessage], Coroutine[Any, Any, None]]] = {}  # consumer tag ->
        channel.reopen_callbacks.add(self._reinstall)  # type: ignore[attr-defined]

    async def consume(self, queue: AbstractQueue, logical: str, handler: Handler,
                      unreadable: Unreadable | None = None) -> str:
        """Consume `queue` (its protocol name is `logical`); return the consumer tag."""
        real = queue.name
        wrapped = _consumer(AmqpDelivery.of, logical, real, handler, unreadable)
        direct = _consumer(AmqpDelivery.delivered, logical, real, handler, unreadable)
        tag = await queue.consume(wrapped)
        self._direct[tag] = direct
        await self._install()
        return tag

    def forget(self, tag: str) -> None:
        """The consumer was cancelled (`queue.cancel(tag)`)."""
        self._direct.pop(tag, None)

    async def _install(self) -> None:
        underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        consumers = getattr(underlay, "consumers", None)  # aiormq's callbacks by consumer tag
        if not isinstance(consumers, dict):  # another aiormq: aio-pika's wrapper serves, only slower
            log.warning("direct_consumers_unsupported", channel=type(underlay).__name__)
            return
        for tag, direct in self._direct.items():
            if tag in consumers:
                consumers[tag] = direct

    async def _reinstall(self, *_: Any) -> None:
        try:
            await self._install()
        except Exception as error:  # noqa: BLE001  the channel went again: aio-pika's wrapper still serves
            log.info("direct_consumers_not_reinstalled", error=repr(error))


def _consumer(read: Callable[[Any, str, str], AmqpDelivery], logical: str, real: str, handler: Handler,
              unreadable: Unreadable | None) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """A consumer callback: `read` is aio-pika's path (`AmqpDelivery.of`) or the direct one."""

    async def consume(message: Any) -> None:
        try:
            delivery = read(message, logical, real)
        except Exception as error:
            if unreadable is None:
                raise
            await _settle_unreadable(unreadable, message.body, error, message.channel,
                                     message.delivery_tag or 0, logical)
            return
        await handler(delivery)

    return consume


async def _settle_unreadable(unreadable: Unreadable, body: bytes, error: BaseException, channel: Any,
                             delivery_tag: int, queue: str) -> None:
    """Never leave a message held for want of reading it: keep it (then ack) or reject it."""
    log.error("delivery_unreadable", queue=queue, error=repr(error)[:500])
    try:
        kept = await unreadable(body, error)
    except Exception:  # noqa: BLE001  the last resort is the reject below
        kept = False
    try:
        if kept:
            await channel.basic_ack(delivery_tag)
        else:
            await channel.basic_reject(delivery_tag, requeue=False)
    except Exception as settle_error:  # noqa: BLE001  the channel is gone: the broker requeued it
        log.info("amqp_settle_lost", queue=queue, error=repr(settle_error))
