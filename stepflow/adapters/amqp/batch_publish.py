"""Many messages in one socket write, each one confirmed by the broker.

A committed batch's job orders go out together, and so do the answers of a worker's jobs that
end in the same turn of the event loop. aiormq's `basic_publish` sends one message. It takes
the channel's lock, marshals the message's frames, queues them for the connection's writer, and
holds the lock until the writer has written them. So N messages sent at once take N turns of
the event loop and N socket writes. Measured with 200 messages at once: 167 us of CPU a
message, confirm included.

`publish_many` does for each message what `basic_publish` does: the delivery tag, the
confirmation that the channel's reader settles, and the message id by which a returned message
is matched. But it takes the lock once, marshals once and writes once for all of them: 55 us a
message. Those are aiormq's channel internals. aiormq is pinned in constraints.txt, and
`tests/integration/test_amqp_batch_publish.py` fails when its `basic_publish` changes. A
channel without them (another aiormq) gets one `basic_publish` a message instead.

The raw loop in `benchmarks/` publishes as aio-pika's API does, one `basic_publish` a message:
it stands for a plain aio-pika service, and this module reaches below that API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from aio_pika.abc import AbstractExchange
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

from stepflow.adapters.amqp.connection import (
    RETRY_MAX_S,
    TRANSIENT,
    publish,
    robust_channel,
    underlay_channel,
)
from stepflow.adapters.amqp.topology import Outbound

log = structlog.get_logger("stepflow.amqp")

# exchange, routing key, message
Item = tuple[AbstractExchange, str, Outbound]

# What `publish_many` uses of an aiormq channel, besides its public `basic_publish`.
_INTERNALS = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue", "number",
              "publisher_confirms", "create_future", "_split_body")
MAX_ROUTING_KEY = 255


def _supported(channel: Any) -> bool:
    return all(hasattr(channel, name) for name in _INTERNALS)


async def publish_many(items: Sequence[Item], *, mandatory: bool = True) -> list[Any]:
    """Each item's outcome, in order: the broker's confirm, the returned message when nothing
    took it, or the exception that publishing it met. Items on one channel go out in one
    write. Raises only if the call itself is cancelled."""
    outcomes: list[Any] = [None] * len(items)
    groups: dict[int, list[int]] = {}
    for index, (exchange, _, _) in enumerate(items):
        groups.setdefault(id(robust_channel(exchange)), []).append(index)
    for indexes in groups.values():
        group = [items[i] for i in indexes]
        for i, outcome in zip(indexes, await _publish_group(group, mandatory), strict=True):
            outcomes[i] = outcome
    return outcomes


async def _publish_group(items: list[Item], mandatory: bool) -> list[Any]:
    try:
        channel = await underlay_channel(items[0][0])
    except Exception as error:  # noqa: BLE001 - the outcome of every item
        return [error] * len(items)
    if _supported(channel):
        try:
            confirmations = await _write(channel, items, mandatory)
        except Exception as error:  # noqa: BLE001
            if not isinstance(error, TRANSIENT):
                # Not the channel: one message the write refused (a routing key too long, a
                # header pamqp cannot encode). One at a time, so only that one fails.
                return await _one_by_one(items, mandatory)
            return [error] * len(items)
        return list(await asyncio.gather(*confirmations, return_exceptions=True))
    return await _one_by_one(items, mandatory)


async def _one_by_one(items: list[Item], mandatory: bool) -> list[Any]:
    return list(await asyncio.gather(*(publish(exchange, message, key, mandatory=mandatory)
                                       for exchange, key, message in items), return_exceptions=True))


async def _write(channel: Any, items: list[Item], mandatory: bool) -> list[asyncio.Future[Any]]:
    """`basic_publish`'s steps for every item, under one hold of the lock: the confirmations."""
    confirmations: list[asyncio.Future[Any]] = []
    registered: list[tuple[int, str]] = []
    async with channel.lock:
        first_tag = channel.delivery_tag
        sent = False
        try:
            frames: list[Any] = []
            for exchange, routing_key, message in items:
                if len(routing_key) > MAX_ROUTING_KEY:
                    raise ValueError(f"Routing key too long (max {MAX_ROUTING_KEY} bytes)")
                properties = message.properties
                if not properties.message_id:  # as basic_publish: a returned message is told by its id
                    properties.message_id = uuid.uuid4().hex
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                if channel.publisher_confirms:
                    confirmation = channel.create_future()
                    channel.confirmations[tag] = confirmation
                    channel.message_id_delivery_tag[properties.message_id] = tag
                    registered.append((tag, properties.message_id))
                    confirmations.append(confirmation)
                frames.append(spec.Basic.Publish(exchange=exchange.name, routing_key=routing_key,
                                                 mandatory=mandatory))
                frames.append(ContentHeader(properties=properties, body_size=len(message.body)))
                frames.extend(channel._split_body(message.body))
            drain: asyncio.Future[Any] = channel.create_future()
            await channel.write_queue.put(ChannelFrame.marshall(frames=frames, channel_number=channel.number,
                                                                drain_future=drain))
            sent = True
            for confirmation, (tag, message_id) in zip(confirmations, registered, strict=True):
                confirmation.add_done_callback(_forget(channel, message_id, tag))
            await drain
        except BaseException:
            if not sent:
                # The broker saw none of them: their sequence numbers are reused, as
                # basic_publish does, while the lock is still held.
                channel.delivery_tag = first_tag
                for (tag, message_id), confirmation in zip(registered, confirmations, strict=True):
                    channel.confirmations.pop(tag, None)
                    if channel.message_id_delivery_tag.get(message_id) == tag:
                        channel.message_id_delivery_tag.pop(message_id)
                    confirmation.cancel()
            raise
    return confirmations


def _forget(channel: Any, message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)

    return forget


def _transient(item: Item, outcome: BaseException) -> bool:
    """Worth another try: the connection or channel was lost (aiormq fails a closed channel's
    confirmations with its close reason, or a bare `Exception` when it has none)."""
    if isinstance(outcome, (*TRANSIENT, asyncio.CancelledError)):
        return True
    return bool(robust_channel(item[0]).is_closed)


async def publish_confirmed_many(items: Sequence[Item], *, what: str) -> list[BaseException | None]:
    """Publish every item and return once each is confirmed, retrying (with backoff) those the
    broker's absence failed; `publish_confirmed` for many at once. Each item's outcome: None,
    or the error that is not the broker's absence (the caller decides)."""
    outcomes: list[BaseException | None] = [None] * len(items)
    pending = list(range(len(items)))
    delay = 0.1
    while pending:
        results = await publish_many([items[i] for i in pending])
        retry = []
        for i, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if _transient(items[i], result):
                    retry.append(i)
                else:
                    outcomes[i] = result
        if retry:
            log.warning("amqp_publish_retry", what=what, messages=len(retry), error=repr(results[0]),
                        retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        pending = retry
    return outcomes


class Coalescing:
    """Messages published in the same turn of the event loop go out in one write: a worker's
    jobs that end together answer together. Each `publish` returns once its message is confirmed."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def publish(self, exchange: AbstractExchange, routing_key: str, message: Outbound) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((exchange, routing_key, message), done))
        if len(self._pending) == 1:
            task = asyncio.create_task(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's messages join
        batch, self._pending = self._pending, []
        try:
            outcomes = await publish_confirmed_many([item for item, _ in batch], what=self.what)
        except BaseException as error:
            answer([done for _, done in batch], error)
            raise
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            answer([done], outcome)


def answer(waiting: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    """Answer whoever still waits (a cancelled caller does not): done, failed with `error`, or
    cancelled if `error` is a cancellation."""
    for done in waiting:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        elif isinstance(error, Exception):
            done.set_exception(error)
        else:
            done.cancel()
